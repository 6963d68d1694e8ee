"""``dualpt compare``: methods x shot counts x seeds on the user's images (or one of the paper's datasets).

The command is registered on the one app in :mod:`cli` (which also turns domain errors into messages).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..core.project import Project
from ..ui.console import err_console
from .options import (
    TRAIN,
    DatasetOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    PrecisionOpt,
    PretrainedOpt,
    ProjectOpt,
    QuietOpt,
    Recipe,
    hint_next,
    quiet_mode,
)

DEFAULT_METHODS = "zero-shot,coop,plot,dualpt"


def compare(
    images: Annotated[
        str | None, typer.Argument(metavar="IMAGES", help="Training ImageFolder: one sub-folder of images per class.")
    ] = None,
    test: Annotated[
        str | None,
        typer.Option("--test", metavar="TEST", help="Labelled test ImageFolder (the same classes), never trained on."),
    ] = None,
    dataset: DatasetOpt = None,
    methods: Annotated[
        str, typer.Option("--methods", help="Comma-separated methods to compare (dualpt train --method).")
    ] = DEFAULT_METHODS,
    shots: Annotated[str, typer.Option("--shots", help="Comma-separated shot counts.")] = "1,2,4,8,16",
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds (few-shot sample and init).")] = "1,2,3",
    base_classes: Annotated[
        str | None,
        typer.Option(
            "--base-classes",
            help="Base-to-new: every method trains on "
            "these classes (dualpt train --base-classes) and the table "
            "shows H over the base and new test classes.",
            show_default="all classes",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Name of this comparison: its folder <project>/compare/NAME and its panel in the plot.",
            show_default="the dataset's or IMAGES folder's name",
        ),
    ] = None,
    project: ProjectOpt = None,
    model: ModelOpt = TRAIN["model"],
    pretrained: PretrainedOpt = TRAIN["pretrained"],
    recipe: Annotated[Recipe, typer.Option(help="Recipe of every trained method (dualpt train --recipe).")] = TRAIN[
        "recipe"
    ],
    epochs: Annotated[
        int | None, typer.Option(help="Epochs of every trained method.", show_default="each method's schedule by shots")
    ] = TRAIN["epochs"],
    device: DeviceOpt = TRAIN["device"],
    precision: PrecisionOpt = TRAIN["precision"],
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Which method, how many shots? Train and test every method x shots x seed; table, JSON and plot.

    Example: dualpt compare train_images --test test_images --methods zero-shot,coop,dualpt --shots 1,4,16

    Resumable: run the same command again after Ctrl-C (or a failed cell) and finished cells are kept.
    The paper's datasets: dualpt compare --dataset coop:~/data/caltech-101 (see docs/compare.md).
    """
    from ..clip.load import shared_backbones
    from ..compare.cells import CompareSpec, cell_runner, compare_name, write_pngs
    from ..compare.grid import parse_int_list, plan_grid, run_compare
    from ..core.project import project_lock, resolve_project
    from ..data.stream import StreamProgress
    from ..errors import DataError, PartialFailure
    from ..ui.compare import CellProgress, RichCallbacks, report
    from ..ui.progress import RichProgress

    quiet_mode(quiet)
    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    cells = plan_grid(method_list, parse_int_list(shots, "--shots"), parse_int_list(seeds, "--seeds"))
    proj = resolve_project(project)
    label = name or compare_name(images, dataset)
    if not label or label.startswith(".") or "/" in label or "\\" in label:
        raise DataError(f"--name {label!r} cannot be a folder name; give a plain name such as caltech101")
    spec = CompareSpec(
        folder=proj.root.resolve() / "compare" / label,
        project=proj,
        images=images,
        test=test,
        dataset=dataset,
        model=model,
        pretrained=pretrained,
        recipe=recipe,
        epochs=epochs,
        device=device,
        precision=precision,
        base_classes=base_classes,
    )
    spec.check(method_list)
    silent = quiet or json_out
    run_cell = cell_runner(spec, lambda: CellProgress(quiet=silent), StreamProgress if silent else RichProgress)
    callbacks = RichCallbacks(quiet=silent)
    with project_lock(_lock_project(spec.folder), "compare"), shared_backbones():  # one model load for all cells
        result = run_compare(spec.folder / "compare.json", cells, spec.settings(), run_cell, callbacks)
        png, grid = write_pngs(spec, result.rows, label, callbacks.warn)
    report(
        result,
        png=png,
        json_out=json_out,
        metric="H (base-to-new)" if base_classes else "accuracy",
        title=f"dualpt compare: {label}",
    )
    if grid is not None and not silent:
        err_console.print(f"all comparisons of the project: {escape(str(grid))}", soft_wrap=True)
    if result.failed:
        raise PartialFailure(
            f"{len(result.failed)} of {len(cells)} cell(s) failed (their errors are above and in "
            f"{result.path}); run the same command again to retry them"
        )
    hint_next(
        json_out or quiet,
        f"dualpt predict IMAGES --prompt-file {spec.folder}/cells/<cell>/prompts.safetensors"
        "  (the prompts of one cell)",
    )


def _lock_project(folder: Path) -> Project:
    return Project(folder)
