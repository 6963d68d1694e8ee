"""The closed vocabularies of dualpt's options, each defined once as a ``Literal`` (for the CLI's parse-time
choices and the type checker) with its tuple of values derived from it (for the configs' checks)."""

from __future__ import annotations

from typing import Literal, get_args

Method = Literal[
    "dualpt", "codualpt", "coop", "cocoop", "plot", "linear-probe", "tip-adapter", "tip-adapter-f", "zero-shot",
    "descriptions",
]  # fmt: skip
Align = Literal["graph", "node", "edge", "attn", "uniform"]  # the plan: Algorithm 1 and its ablations
LlmLoss = Literal["cosine", "wd", "ce"]  # L_LLM's form
Context = Literal["auto", "llm", "none"]  # whether the LLM phrases enter training
Recipe = Literal["default", "paper"]
Head = Literal["residual", "none"]  # what the recipe fits on top of the blend (model/residual.py)
PromptText = Literal["name", "descriptions"]  # what follows a prompt's context
ProbeConstraint = Literal["none", "clap", "balanced"]  # the linear probe's pull towards zero-shot
Precision = Literal["auto", "bf16", "fp16", "fp32"]
Provider = Literal["auto", "openai", "ollama", "none"]  # who answers describe
OutputFormat = Literal["table", "json", "jsonl", "csv"]  # predict's rows
EvalMethod = Literal["dualpt", "zero_shot"]  # what eval scores: the prompt file, zero-shot CLIP

METHODS: tuple[Method, ...] = get_args(Method)
METHOD_TITLES: dict[str, str] = {  # in tables (dualpt runs); every method has one (tests/train/test_registry.py)
    "dualpt": "DUAL-PT", "codualpt": "CoDUAL-PT", "coop": "CoOp", "cocoop": "CoCoOp", "plot": "PLOT",
    "linear-probe": "linear probe", "tip-adapter": "Tip-Adapter", "tip-adapter-f": "Tip-Adapter-F",
    "zero-shot": "zero-shot CLIP", "descriptions": "descriptions",
}  # fmt: skip
ALIGNS: tuple[Align, ...] = get_args(Align)
LLM_LOSSES: tuple[LlmLoss, ...] = get_args(LlmLoss)
CONTEXTS: tuple[Context, ...] = get_args(Context)
RECIPE_NAMES: tuple[Recipe, ...] = get_args(Recipe)
HEADS: tuple[Head, ...] = get_args(Head)
PROMPT_TEXTS: tuple[PromptText, ...] = get_args(PromptText)
CONSTRAINTS: tuple[ProbeConstraint, ...] = get_args(ProbeConstraint)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
PROVIDERS: tuple[Provider, ...] = get_args(Provider)
FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)
EVAL_TITLES: dict[EvalMethod, str] = {"dualpt": "DUAL-PT", "zero_shot": "zero-shot CLIP"}  # in tables and plots
