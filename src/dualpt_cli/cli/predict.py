"""``dualpt predict``, ``eval``, ``explain`` and ``report``: using trained prompts.

The commands are registered on the one app in :mod:`cli` (which also turns domain errors into messages).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from ..ui.console import err_console
from .options import DatasetOpt, DeviceOpt, Format, JsonOpt, PrecisionOpt, ProjectOpt, QuietOpt, quiet_mode

PromptFileOpt = Annotated[
    str | None,
    typer.Option("--prompt-file", help="Prompt file to use (instead of the project's prompts.safetensors)."),
]
OldPromptsOpt = Annotated[str | None, typer.Option("--prompts", hidden=True, help="Deprecated: --prompt-file.")]
RunOpt = Annotated[
    str | None,
    typer.Option("--run", help="Use the prompts of this run (dualpt runs lists them).", show_default="the current one"),
]


def _prompt_file(new: str | None, old: str | None, run: str | None = None, project: str | None = None) -> str | None:
    """--prompt-file, --run NAME, or the deprecated --prompts spelling of --prompt-file (with a warning)."""
    if run is not None:
        if new is not None or old is not None:
            raise typer.BadParameter("use --run or --prompt-file, not both", param_hint="'--run'")
        from ..core.project import resolve_project
        from ..train.runs import run_folder

        return str(run_folder(resolve_project(project), run) / "prompts.safetensors")
    if old is None:
        return new
    if new is not None:
        raise typer.BadParameter("give the prompt file once, as --prompt-file", param_hint="'--prompts'")
    from ..ui.console import warn

    warn(
        "--prompts FILE is deprecated for predict, eval and explain (train's --prompts is the number of prompts); "
        "use --prompt-file FILE"
    )
    return old


ClassesOpt = Annotated[
    str | None,
    typer.Option(
        "--classes",
        help="Class list (one a line, or 'folder: name'); classes not trained are encoded "
        "from the learned context (base-to-new), no LLM needed.",
    ),
]
OverrideModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Load the CLIP from here instead of the one named in the prompt file (must be the same model).",
        show_default="the prompt file's",
    ),
]
OverridePretrainedOpt = Annotated[
    str | None, typer.Option("--pretrained", help="Pretrained tag or weights file.", show_default="the prompt file's")
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per batch.")]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", help="Image decoding processes.", show_default="4 beside a GPU, CPUs // 8 on a CPU"),
]


def predict(
    images: Annotated[list[str], typer.Argument(metavar="IMAGES...", help="Image files, folders or globs.")],
    project: ProjectOpt = None,
    prompt_file: PromptFileOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Classes listed per image.")] = 5,
    fmt: Annotated[
        Format | None,
        typer.Option("--format", "-f", help="Output format.", show_default="from --output's extension, else table"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to this file (atomically).", show_default="stdout")
    ] = None,
    batch_size: BatchOpt = 64,
    classes: ClassesOpt = None,
    model: OverrideModelOpt = None,
    pretrained: OverridePretrainedOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    workers: WorkersOpt = None,
    quiet: QuietOpt = False,
    run: RunOpt = None,
    prompts_deprecated: OldPromptsOpt = None,
) -> None:
    """Classify images with the trained prompts: top-k classes and probabilities per image.

    Example: dualpt predict photos/ --top-k 3 --format csv --output predictions.csv

    Needs only the prompt file and the CLIP it names. Unreadable images get an error row and exit code 1.
    Under torchrun the images are split over the ranks (docs/scaling.md).
    """
    from ..core.distributed import distributed
    from ..predict.rows import PredictCallbacks, PredictConfig, run_predict
    from ..ui.predict import RichPredictCallbacks

    quiet_mode(quiet)
    if json_out and fmt not in (None, "json"):
        raise typer.BadParameter(f"--json means --format json, not {fmt}", param_hint="'--json'")
    prompts = _prompt_file(prompt_file, prompts_deprecated, run, project)
    cfg = PredictConfig(
        inputs=images, project=project, prompts=prompts, top_k=top_k, fmt="json" if json_out else fmt,
        output=output,
        batch_size=batch_size, workers=workers, classes=classes, model=model, pretrained=pretrained,
        device=device, precision=precision,
    )  # fmt: skip
    with distributed(device) as dist:  # one process unless started by torchrun
        run_predict(cfg, RichPredictCallbacks() if dist.is_main else PredictCallbacks(), dist)


def eval_(
    images: Annotated[
        str | None, typer.Argument(metavar="IMAGES", help="ImageFolder: one sub-folder of images per class.")
    ] = None,
    dataset: DatasetOpt = None,
    project: ProjectOpt = None,
    prompt_file: PromptFileOpt = None,
    classes: ClassesOpt = None,
    zero_shot: Annotated[
        bool,
        typer.Option(
            "--zero-shot",
            help="Also evaluate plain CLIP ('a photo of a {class}.'); with --model it needs no prompt file.",
        ),
    ] = False,
    model: OverrideModelOpt = None,
    pretrained: OverridePretrainedOpt = None,
    batch_size: BatchOpt = 64,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    workers: WorkersOpt = None,
    plot: Annotated[
        str | None,
        typer.Option(
            "--plot",
            metavar="DIR",
            help="Also write confusion-matrix, per-class accuracy and reliability-diagram PNGs "
            "(and eval.json, for dualpt report) here.",
        ),
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    run: RunOpt = None,
    prompts_deprecated: OldPromptsOpt = None,
) -> None:
    """Accuracy of the trained prompts on labelled images: top-1/top-5, per class, confused pairs, calibration (ECE).

    Example: dualpt eval ./test_images --zero-shot

    Folder names must be trained classes, or listed in --classes (then base, new and H are reported).
    Under torchrun the images are split over the ranks and rank 0 reports (docs/scaling.md).
    """
    from ..core.distributed import distributed
    from ..predict.evaluate import EvalConfig, evaluate_folder
    from ..ui.evaluate import check_failed, show
    from ..ui.progress import RichProgress

    quiet_mode(quiet)
    prompts = _prompt_file(prompt_file, prompts_deprecated, run, project)
    if (images is None) == (dataset is None):
        raise typer.BadParameter(
            "pass the labelled test images or --dataset coop:ROOT/NAME" + (", not both" if images else ""),
            param_hint="'IMAGES'",
        )
    cfg = EvalConfig(
        images=images, dataset=dataset, project=project, prompts=prompts, classes=classes, zero_shot=zero_shot,
        model=model, pretrained=pretrained, batch_size=batch_size, workers=workers, device=device, precision=precision,
    )  # fmt: skip
    if plot is not None:
        from ..pictures.figures import writable_folder, write_eval_plots

        writable_folder(plot, "--plot")  # before the images are scored
    with distributed(device) as dist:  # one process unless started by torchrun
        result = evaluate_folder(cfg, RichProgress() if dist.is_main else None, dist)
        if dist.is_main:
            if result.prompt_file is not None:
                from pathlib import Path

                from ..core.project import resolve_project
                from ..errors import ProjectError
                from ..train.runs import record_eval
                from ..ui.console import warn

                try:
                    record_eval(resolve_project(project), Path(result.prompt_file), result.to_json())
                except ProjectError as exc:  # the results are shown all the same
                    warn(f"the evaluation is not kept with its run: {exc}")
            if plot is not None:
                written = write_eval_plots(result, plot)
                err_console.print(f"pictures: {escape(', '.join(str(p) for p in written))}", soft_wrap=True)
            show(result, json_out=json_out)
        dist.barrier("eval: waiting for rank 0 to write the report")  # no rank ends (exit 1) before it
        check_failed(result)


# ---------------------------------------------------------------------------------------------------------
# pictures


def explain(
    images: Annotated[list[str], typer.Argument(metavar="IMAGES...", help="Image files, folders or globs.")],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="DIR",
            help="Folder for the PNGs (one per image).",
            show_default="explain, or none with --json",
        ),
    ] = None,
    classes: Annotated[
        list[str] | None,
        typer.Option(
            "--classes",
            "-c",
            help="Classes to explain: top (the "
            "prediction), topN (the N best), or a class name; repeat "
            "or separate with commas.",
            show_default="top",
        ),
    ] = None,
    project: ProjectOpt = None,
    prompt_file: PromptFileOpt = None,
    model: OverrideModelOpt = None,
    pretrained: OverridePretrainedOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print the plans as numbers (JSON) on stdout.")] = False,
    quiet: QuietOpt = False,
    run: RunOpt = None,
    prompts_deprecated: OldPromptsOpt = None,
) -> None:
    """Show what each prompt looks at: per image, a heat map per prompt of the class over the image.

    Example: dualpt explain photos/cat.jpg -o pictures --classes top2

    Titles give the class, the prompt, its share of the class score and the nearest description phrase.
    """
    from ..predict.explain import ExplainConfig, check_selectors
    from ..ui import explain as explain_ui

    quiet_mode(quiet)
    prompts = _prompt_file(prompt_file, prompts_deprecated, run, project)
    chosen = [c.strip() for value in classes or ["top"] for c in value.split(",") if c.strip()]
    check_selectors(chosen)  # before the output folder is made or the model loads
    cfg = ExplainConfig(
        inputs=images,
        classes=chosen,
        project=project,
        prompts=prompts,
        model=model,
        pretrained=pretrained,
        device=device,
        precision=precision,
    )
    explain_ui.run(cfg, output if output is not None else (None if json_out else "explain"), json_out)


def report_(
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="HTML file to write.", show_default="<project>/report.html")
    ] = None,
    project: ProjectOpt = None,
    eval_dir: Annotated[
        str | None,
        typer.Option(
            "--eval", metavar="DIR", help="Folder written by dualpt eval --plot.", show_default="<project>/eval"
        ),
    ] = None,
    examples: Annotated[
        int,
        typer.Option(
            "--examples",
            min=0,
            help="Images to explain: one from each of the worst classes of the evaluation (else training images).",
        ),
    ] = 4,
    explain_paths: Annotated[
        list[str] | None, typer.Option("--explain", metavar="IMAGE", help="Explain these images instead (repeatable).")
    ] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """One self-contained HTML page for a project: config, descriptions, curves, eval, explained images.

    Example: dualpt eval test_images --zero-shot --plot dualpt-project/eval && dualpt report

    Redraws the project's curves.png when train_log.jsonl is newer. Images are embedded; it opens offline.
    """
    from ..pictures.report import ReportConfig, build_report
    from ..ui.console import console, warn

    quiet_mode(quiet)
    result = build_report(
        ReportConfig(
            project=project,
            output=output,
            eval_dir=eval_dir,
            examples=examples,
            explain=explain_paths or [],
            device=device,
            precision=precision,
        )
    )
    for note in result.notes:
        warn(note)
    console.print(f"report: {escape(str(result.path))}", soft_wrap=True)
