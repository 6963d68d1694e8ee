"""The maths layer's constants that configs and the CLI read: plain values, no torch, so that importing them
(``train/config.py``, ``dualpt --help``) loads none of the model code."""

from __future__ import annotations

NAME_TEMPLATE = "{name}."  # a class's text after the context (method card, "Prompts")
DESCRIPTION_TEMPLATE = "{name}, which has {phrase}."  # a phrase as a prompt text (Menon & Vondrick 2022)
RESIDUAL_LAMBDA = 10.0  # the residual head's penalty on sum_k ||r_k||^2 (measured: benchmarks/bench_learning.py)
MENON_VONDRICK = "menon-vondrick"  # as a template: their rules, "which is / which / which has" by the phrase's start
CLAP_REPS = 20  # CLAP (Silva-Rodriguez et al., CVPR 2024): augmented views per image
