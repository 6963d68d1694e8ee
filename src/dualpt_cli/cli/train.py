"""``dualpt train`` and ``dualpt runs``: from images (and descriptions) to trained prompts.

The commands are registered on the one app in :mod:`app` (which also turns domain errors into messages).
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..train.config import TrainConfig
from ..ui.console import err_console
from .options import (
    TRAIN,
    TRAIN_FIELDS,
    Align,
    Context,
    DatasetOpt,
    DeviceOpt,
    Head,
    JsonOpt,
    LlmLoss,
    Method,
    ModelOpt,
    PrecisionOpt,
    PretrainedOpt,
    ProbeConstraint,
    ProjectOpt,
    PromptText,
    QuietOpt,
    Recipe,
    hint_next,
    project_arg,
    quiet_mode,
)

# ---------------------------------------------------------------------------------------------------------
# train


def _parse_shots(value: str) -> int | None:
    if value.strip().lower() == "all":
        return None
    try:
        shots = int(value)
    except ValueError:
        raise typer.BadParameter(f"expected a number of images per class or 'all', got {value!r}") from None
    return shots  # TrainConfig checks the range


def train(
    ctx: typer.Context,
    images: Annotated[
        str | None,
        typer.Argument(
            metavar="IMAGES", help="ImageFolder: one sub-folder of images per class (with --config: the saved one)."
        ),
    ] = None,
    shots: Annotated[str, typer.Option(help="Training images per class, or 'all'.")] = str(TRAIN["shots"] or "all"),
    dataset: DatasetOpt = TRAIN["dataset"],
    project: ProjectOpt = None,
    model: ModelOpt = TRAIN["model"],
    pretrained: PretrainedOpt = TRAIN["pretrained"],
    seed: Annotated[int, typer.Option(help="Seed of the few-shot sample, init and batch order.")] = TRAIN["seed"],
    method: Annotated[
        Method,
        typer.Option(
            help="dualpt (the paper), codualpt, coop, cocoop, plot, linear-probe, tip-adapter-f; "
            "tip-adapter, zero-shot, descriptions train nothing."
        ),
    ] = TRAIN["method"],
    probe_constraint: Annotated[
        ProbeConstraint | None,
        typer.Option(
            "--probe-constraint",
            help="linear-probe's pull to zero-shot: clap (CLAP, per class), balanced, none (LP-CLIP).",
            show_default="clap; paper none",
        ),
    ] = TRAIN["probe_constraint"],
    prompts: Annotated[int, typer.Option("--prompts", help="M: learnable prompts per class.")] = TRAIN["n_prompts"],
    recipe: Annotated[
        Recipe,
        typer.Option(help="default (measured) or paper (the paper's setup); options given win over it."),
    ] = TRAIN["recipe"],
    ctx_len: Annotated[
        int | None, typer.Option("--ctx-len", help="Context vectors per prompt.", show_default="4; paper 16")
    ] = TRAIN["n_ctx"],
    ctx_init: Annotated[
        str | None,
        typer.Option(
            "--ctx-init",
            help="Context's first words ('': random).",
            show_default="'a photo of a'; paper ''",
        ),
    ] = TRAIN["ctx_init"],
    prompt_text: Annotated[
        PromptText | None,
        typer.Option(
            "--prompt-text",
            help="After the context: name or descriptions (a phrase each).",
            show_default="descriptions; paper name",
        ),
    ] = TRAIN["prompt_text"],
    crop_scale: Annotated[
        float | None,
        typer.Option(
            "--crop-scale",
            help="Smallest random-crop area (share of the image) of the training views.",
            show_default="0.9; paper 0.08",
        ),
    ] = TRAIN["crop_scale"],
    prior_weight: Annotated[
        float | None,
        typer.Option(
            "--prior-weight",
            help="Weight of the zero-shot prior added to the logits.",
            show_default="1; paper 0",
        ),
    ] = TRAIN["prior_weight"],
    head: Annotated[
        Head | None,
        typer.Option(
            "--head",
            help="residual: a probe fitted on top of the blend; none.",
            show_default="residual; paper none",
        ),
    ] = TRAIN["head"],
    head_lambda: Annotated[
        float | None,
        typer.Option(
            "--head-lambda",
            help="Residual head's penalty (larger: nearer the prior).",
            min=0.0,
            show_default="3, 10 or 30, cross-validated",
        ),
    ] = TRAIN["head_lambda"],
    guard: Annotated[
        bool | None,
        typer.Option(
            "--guard/--no-guard",
            help="Keep zero-shot CLIP if training did not beat it.",
            show_default="off",
        ),
    ] = TRAIN["guard"],
    class_specific: Annotated[bool, typer.Option("--class-specific", help="Per-class context (CoOp CSC).")] = TRAIN[
        "class_specific"
    ],
    alpha: Annotated[float, typer.Option(help="Edge (Gromov-Wasserstein) weight.")] = TRAIN["alpha"],
    beta: Annotated[float, typer.Option(help="Weight of the LLM alignment loss.")] = TRAIN["beta"],
    lam: Annotated[float, typer.Option("--lambda", help="Entropy weight of the matching plan.")] = TRAIN["lam"],
    align: Annotated[
        Align,
        typer.Option(help="graph (the paper); ablations: node, edge, attn, uniform."),
    ] = TRAIN["align"],
    llm_loss: Annotated[LlmLoss, typer.Option("--llm-loss", help="cosine (paper); wd, ce: ablations.")] = TRAIN[
        "llm_loss"
    ],
    context: Annotated[
        Context,
        typer.Option(help="auto: descriptions.json if any; llm: required; none."),
    ] = TRAIN["context"],
    epochs: Annotated[
        int | None,
        typer.Option(help="Default by shots 50/100/200; --base-classes, codualpt, cocoop 10; tip-adapter-f 20."),
    ] = TRAIN["epochs"],
    base_classes: Annotated[
        str | None,
        typer.Option(
            "--base-classes",
            metavar="half|FILE",
            help="Train on half the classes (sorted) or FILE's; eval adds new and H.",
        ),
    ] = TRAIN["base_classes"],
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", help="Images per optimisation step.", show_default="32; codualpt, cocoop 1"),
    ] = TRAIN["batch_size"],
    lr: Annotated[float, typer.Option(help="SGD learning rate.")] = TRAIN["lr"],
    aug_views: Annotated[
        int, typer.Option("--aug-views", help="Augmented views per image, encoded once and cached.")
    ] = TRAIN["aug_views"],
    fresh_views: Annotated[
        bool, typer.Option("--fresh-views", help="Encode and cache a new view of every image for every epoch.")
    ] = TRAIN["fresh_views"],
    fresh_crops: Annotated[
        bool | None,
        typer.Option(
            "--fresh-crops/--cached-views",
            help="A new crop per image and epoch (Dassl), or cached views.",
            show_default="paper: fresh; else cached",
        ),
    ] = TRAIN["fresh_crops"],
    drop_last: Annotated[
        bool | None,
        typer.Option(
            "--drop-last/--keep-last",
            help="Drop an epoch's last partial batch (Dassl).",
            show_default="paper: drop; else keep",
        ),
    ] = TRAIN["drop_last"],
    val_shots: Annotated[
        int | None,
        typer.Option(
            "--val-shots",
            help="Held-out images per class, to keep the best epoch.",
            show_default="1 per 4 shots; paper 0",
        ),
    ] = TRAIN["val_shots"],
    device: DeviceOpt = TRAIN["device"],
    precision: PrecisionOpt = TRAIN["precision"],
    text_chunk: Annotated[
        int,
        typer.Option(
            "--text-chunk",
            help="Classes per text-encoder pass (0: all), to bound memory.",
        ),
    ] = TRAIN["text_chunk"],
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = TRAIN["resume"],
    profile: Annotated[bool, typer.Option("--profile", help="Print where a step's time goes.")] = TRAIN["profile"],
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    config: Annotated[
        str | None,
        typer.Option("--config", metavar="FILE", help="Rerun a run_config.json (options given win)."),
    ] = None,
    run_name: Annotated[
        str | None, typer.Option("--run-name", help="Name of this run under runs/.", show_default="time-shots-seed")
    ] = None,
) -> None:
    """Learn M prompts per class with DUAL-PT on a few labelled images; save prompts.safetensors.

    Example: dualpt train ./images --shots 8

    Uses the project's descriptions.json (from dualpt describe) when present.

    Every option in detail: docs/method.md; --dataset and --base-classes: docs/compare.md.
    """
    from ..core.distributed import distributed, launch_rank
    from ..core.project import resolve_project
    from ..train.loop import TrainConfig, run_training
    from ..train.runs import check_run_name, record_run
    from ..ui.train import draw_curves, rank_callbacks, report, summary

    quiet_mode(quiet)
    if images is None and config is None and dataset is None:
        raise typer.BadParameter(
            "pass the ImageFolder to train on (or --dataset coop:ROOT/NAME, or --config FILE)", param_hint="'IMAGES'"
        )
    cfg = TrainConfig(
        images=images or "", project=project, shots=_parse_shots(shots), val_shots=val_shots, model=model,
        pretrained=pretrained, seed=seed, method=method, probe_constraint=probe_constraint, recipe=recipe,
        n_prompts=prompts, n_ctx=ctx_len, ctx_init=ctx_init, prompt_text=prompt_text, crop_scale=crop_scale,
        prior_weight=prior_weight, guard=guard, head=head, head_lambda=head_lambda,
        class_specific=class_specific, alpha=alpha, beta=beta, lam=lam, llm_loss=llm_loss, context=context,
        epochs=epochs, batch_size=batch_size, lr=lr, aug_views=aug_views, fresh_views=fresh_views, device=device,
        fresh_crops=fresh_crops, drop_last=drop_last,
        precision=precision, text_chunk=text_chunk, resume=resume, profile=profile, dataset=dataset,
        align=align, base_classes=base_classes,
    )  # fmt: skip
    if config is not None:
        cfg = _with_saved_config(ctx, cfg, config)
    check_run_name(resolve_project(project), run_name)  # before training overwrites the project's files
    try:
        with distributed(cfg.device) as dist, rank_callbacks(dist, quiet=json_out or quiet) as callbacks:
            result = run_training(cfg, callbacks, dist)
            if not dist.is_main or result is None:  # rank 0 reports and records the run (and has the result)
                return
    except KeyboardInterrupt:
        if launch_rank() == 0:
            err_console.print(
                "[yellow]interrupted[/]: the last finished epoch is kept; run the same command "
                "with --resume to continue",
                soft_wrap=True,
            )
        raise typer.Exit(130) from None
    curves = draw_curves(result.prompt_file.parent)  # before record_run, so that the run keeps a copy
    run = record_run(resolve_project(project), summary(result), run_name).name
    report(result, json_out=json_out, run=run, curves=curves)
    hint_next(
        json_out,
        f"dualpt eval TEST_IMAGES --zero-shot{project_arg(project)}  (accuracy on held-out "
        f"images), or dualpt predict IMAGES{project_arg(project)}",
    )


def _with_saved_config(ctx: typer.Context, cfg: TrainConfig, path: str) -> TrainConfig:
    """``cfg`` (from the command line) on top of a saved run config: options given explicitly win."""
    from dataclasses import replace

    from ..train.runs import config_from_file

    given = {
        TRAIN_FIELDS.get(name, name)
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"
    }
    saved = config_from_file(path)
    return replace(cfg, **{k: v for k, v in saved.items() if k not in given})


# ---------------------------------------------------------------------------------------------------------
# runs


def runs_(project: ProjectOpt = None, json_out: JsonOpt = False) -> None:
    """List the project's training runs: method, shots, seed, accuracy in training, validation and eval.

    Example: dualpt runs -p my-project
    """
    from ..core.project import resolve_project
    from ..train.runs import list_runs
    from ..ui.console import print_json
    from ..ui.runs import print_runs

    rows = list_runs(resolve_project(project))
    if json_out:
        print_json(rows)
        return
    print_runs(rows)
