"""The terminal side of ``dualpt eval``: the result as tables or JSON, and the images that failed."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ..core.vocab import EvalMethod
from ..errors import PartialFailure
from ..predict.evaluate import TITLES, EvalResult
from . import console as ui


def show(result: EvalResult, json_out: bool = False) -> None:
    """Print the result (tables, or JSON) and a warning per image that could not be read."""
    if json_out:
        ui.print_json(result.to_json())
    else:
        _print_tables(result)
    for image, error in result.failed:
        ui.warn(f"{image}: {error}")


def check_failed(result: EvalResult) -> None:
    """:class:`PartialFailure` if an image could not be read (the exit code says so; the report named them)."""
    if result.failed:
        raise PartialFailure(f"{len(result.failed)} image(s) could not be read and were left out of the accuracy")


def _pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.1%}"


def _print_tables(result: EvalResult) -> None:
    console = ui.console
    first = next(iter(result.results.values()))
    split = "H" in first
    console.print(
        f"{escape(result.images)}: {first['images']} images, {first['classes']} classes ({escape(result.model)})",
        soft_wrap=True,
    )
    summary = Table()
    summary.add_column("method")
    summary.add_column("top-1", justify="right")
    summary.add_column(f"top-{first['top5_k']}", justify="right")
    if split:
        for col in ("base", "new", "H"):
            summary.add_column(col, justify="right")
    summary.add_column("ECE", justify="right")  # expected calibration error of the probabilities, lower is better
    for name, m in result.results.items():
        cells = [TITLES[name], _pct(m["top1"]), _pct(m["top5"])]
        if split:
            cells += [_pct(m["base"]["accuracy"]), _pct(m["new"]["accuracy"]), _pct(m["H"])]
        summary.add_row(*cells, _pct(m["ece"]))
    console.print(ui.uncut(summary))
    if len(result.results) == 2:
        gain = result.results["dualpt"]["top1"] - result.results["zero_shot"]["top1"]
        console.print(f"gain from training: {gain * 100:+.1f} points top-1")

    per = Table(title="per class")
    per.add_column("class")
    per.add_column("images", justify="right")
    for name in result.results:
        per.add_column(TITLES[name], justify="right")
    rows = {name: {r["class"]: r for r in m["per_class"]} for name, m in result.results.items()}
    for r in first["per_class"]:
        per.add_row(escape(r["class"]), str(r["images"]), *[_pct(rows[n][r["class"]]["accuracy"]) for n in rows])
    console.print(ui.uncut(per))

    main: EvalMethod = "dualpt" if "dualpt" in result.results else "zero_shot"
    confused = result.results[main]["confused"]
    if confused:
        pairs = Table(title=f"most confused ({TITLES[main]})")
        for col in ("true class", "predicted as", "images", "share"):
            pairs.add_column(col, justify="right" if col in ("images", "share") else "left")
        for c in confused:
            pairs.add_row(escape(c["true"]), escape(c["predicted"]), str(c["count"]), _pct(c["share_of_true"]))
        console.print(ui.uncut(pairs))
