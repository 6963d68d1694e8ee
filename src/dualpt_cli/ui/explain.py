"""Terminal side of ``dualpt explain``: a line per image (or the plans as JSON), errors on stderr."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from ..errors import PartialFailure
from ..pictures.figures import write_explanations
from ..predict.explain import ExplainConfig, ImageExplanation
from .console import console, err_console, print_json


def run(cfg: ExplainConfig, folder: str | None, json_out: bool) -> None:
    """Explain the images, write the pictures to ``folder`` (if any), report; exit code 1 if an image failed."""

    def shown(expl: ImageExplanation, png: Path | None) -> None:
        if expl.error:
            err_console.print(f"[red]error:[/] {escape(str(expl.image))}: {escape(expl.error)}", soft_wrap=True)
        elif not json_out:
            where = f" -> {escape(str(png))}" if png else ""
            console.print(
                f"{escape(str(expl.image))}: {escape(expl.prediction or '')} ({expl.prob:.1%}){where}", soft_wrap=True
            )

    items = write_explanations(cfg, folder, on_image=shown)
    if json_out:
        print_json([e.to_json() for e in items])
    failed = sum(e.error is not None for e in items)
    if failed:
        raise PartialFailure(f"{failed} of {len(items)} image(s) could not be read")
