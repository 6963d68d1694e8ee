"""The progress bar predict and eval draw over their images (the :class:`data.StreamProgress` hooks)."""

from __future__ import annotations

from rich.progress import Progress, TaskID

from ..data.stream import StreamProgress
from . import console as ui


class RichProgress(StreamProgress):
    """A transient progress bar on stderr for :class:`data.StreamProgress` hooks."""

    def __init__(self) -> None:
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def start(self, what: str, total: int, visible: bool) -> None:
        self.bar = ui.progress(transient=True)
        self.bar.start()
        self.task = self.bar.add_task(what, total=total, status="", visible=visible)

    def advance(self, n: int) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task, n)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
