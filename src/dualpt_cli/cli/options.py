"""What the ``dualpt`` commands share: help panels, option defaults (from the config dataclasses), the
closed sets checked at parse time, and the options several commands take.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer

from ..core.checks import defaults
from ..core.vocab import (  # noqa: F401  (the CLI's choice types)
    Align,
    Context,
    Head,
    LlmLoss,
    Method,
    OutputFormat,
    Precision,
    ProbeConstraint,
    PromptText,
    Provider,
    Recipe,
)
from ..describe.ask import DescribeConfig
from ..train.config import TrainConfig

# ---------------------------------------------------------------------------------------------------------
# help panels: every option of every command sits in one (tests/cli/test_cli.py checks)

DATA, MODEL, METHOD, OPTIMISATION, HARDWARE, OUTPUT, LLM, SWITCHES = (
    "Data",
    "Model",
    "Method",
    "Optimisation",
    "Hardware",
    "Output",
    "LLM",
    "Switches (on/off; unset: the recipe decides)",
)
PANELS: dict[str | tuple[str, str], str] = {
    **dict.fromkeys(
        [
            "shots",
            "val_shots",
            "seed",
            "aug_views",
            "fresh_views",
            "crop_scale",
            "classes",
            "force",
            "phrases",
            "base_classes",
        ],
        DATA,
    ),
    **dict.fromkeys(["model", "pretrained", "prompt_file", "prompts_deprecated", "run", "config"], MODEL),
    **dict.fromkeys(["method", "probe_constraint"], METHOD),
    **dict.fromkeys(
        [
            "recipe",
            "prompts",
            "ctx_len",
            "ctx_init",
            "prompt_text",
            "class_specific",
            "alpha",
            "beta",
            "lam",
            "align",
            "llm_loss",
            "context",
            "prior_weight",
            "head",
            "head_lambda",
            "zero_shot",
        ],
        METHOD,
    ),
    **dict.fromkeys(["epochs", "batch_size", "lr", "resume"], OPTIMISATION),
    **dict.fromkeys(["fresh_crops", "drop_last", "guard"], SWITCHES),  # two names each: a panel of their own
    **dict.fromkeys(["device", "precision", "text_chunk", "workers"], HARDWARE),
    **dict.fromkeys(["project", "json_out", "quiet", "profile", "top_k", "fmt", "output", "show", "run_name"], OUTPUT),
    **dict.fromkeys(
        [
            ("describe", n)
            for n in ("provider", "model", "samples", "temperature", "concurrency", "timeout", "base_url", "host")
        ],
        LLM,
    ),
    **dict.fromkeys(["plot", "examples", "name"], OUTPUT),
    **dict.fromkeys(["eval_dir", "explain_paths", "dataset", "test", "seeds"], DATA),
    **dict.fromkeys(["methods", "base_classes"], METHOD),
    ("explain", "classes"): OUTPUT,
    ("predict", "batch_size"): HARDWARE,
    ("eval", "batch_size"): HARDWARE,
}

# ---------------------------------------------------------------------------------------------------------
# defaults: the config dataclasses' own (tests/cli/test_cli.py checks every option against them)

TRAIN, DESCRIBE = defaults(TrainConfig), defaults(DescribeConfig)
TRAIN_FIELDS = {"prompts": "n_prompts", "ctx_len": "n_ctx"}  # train option -> TrainConfig field, where they differ

# ---------------------------------------------------------------------------------------------------------
# closed sets: parse-time choices (tests/cli/test_cli.py checks they equal the library's)

Format = OutputFormat
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value.strip()):
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, DEVICES))}")
    return value.strip()


def _complete_device(incomplete: str) -> list[str]:
    return [d for d in ("auto", "cpu", "cuda", "mps") if d.startswith(incomplete)]


# ---------------------------------------------------------------------------------------------------------
# shared options

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="open_clip model: a name (RN50, ViT-B-16), hf-hub:org/name, local-dir:/path, or a weights file.",
    ),
]
PretrainedOpt = Annotated[
    str, typer.Option("--pretrained", help="Pretrained tag for a built-in model name (e.g. openai).")
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        parser=_device,
        metavar="DEVICE",
        autocompletion=_complete_device,
        help="Where to run: auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.",
    ),
]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="auto: bf16 where it is fast, else fp32.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
ProjectOpt = Annotated[
    str | None,
    typer.Option("--project", "-p", help="Project folder.", show_default="$DUALPT_PROJECT or ./dualpt-project"),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        metavar="coop:DIR",
        help="coop:ROOT/NAME: one of the paper's 11 datasets laid out as CoOp's "
        "DATASETS.md describes (its split_zhou_*.json), instead of IMAGES (docs/compare.md).",
    ),
]
QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress bars, epoch lines or hints; warnings, errors and the result only."),
]


def quiet_mode(quiet: bool) -> None:
    if quiet:
        from ..ui.console import set_quiet

        set_quiet()


def project_arg(project: str | None) -> str:
    import shlex

    return f" -p {shlex.quote(project)}" if project else ""


def hint_next(json_out: bool, command: str) -> None:
    """The usual next command, for people (not with --json or --quiet)."""
    if not json_out:
        from ..ui.console import hint

        hint(f"next: {command}")
