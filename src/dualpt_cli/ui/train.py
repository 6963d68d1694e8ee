"""Terminal side of ``dualpt train``: progress bars while training, a summary table at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table

from ..core.distributed import Dist
from ..errors import DualptError
from ..model.residual import ResidualHead
from ..train.loop import Callbacks, TrainResult
from .console import console, err_console, print_json, progress, uncut, warn


class RichCallbacks(Callbacks):
    """Progress bars on stderr: one for feature encoding, one per epoch with loss, accuracy and lr."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar: Progress | None = None  # from __enter__ on
        self._task: TaskID | None = None  # the current epoch's bar

    def __enter__(self) -> RichCallbacks:
        self.bar = progress()
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    @property
    def _live(self) -> Progress:
        assert self.bar is not None, "RichCallbacks draws inside its with-block"
        return self.bar

    def warn(self, message: str) -> None:
        warn(message)

    def info(self, message: str) -> None:
        if not self.quiet:
            err_console.print(escape(message))

    def stage(self, name: str, total: int) -> Callable[[int], None]:
        task = self._live.add_task(name, total=total, status="")
        return lambda n: self._live.advance(task, n)

    def epoch(self, epoch: int, total: int, steps: int) -> Callable[[dict[str, float]], None]:
        if self._task is not None:
            self._live.remove_task(self._task)
        self._task = self._live.add_task(f"epoch {epoch + 1}/{total}", total=steps, status="")

        def tick(stats: dict[str, float]) -> None:
            status = f"loss {stats['loss']:.3f}  acc {stats['acc']:.1%}  lr {stats['lr']:.2e}"
            if self._task is not None:
                self._live.update(self._task, advance=1, status=status)

        return tick

    def epoch_done(self, record: dict[str, Any]) -> None:
        if self.quiet:
            return
        every = max(1, record["epochs"] // 20)
        if record["epoch"] % every == 0:
            val = f"  val {record['val_acc']:.1%}" if "val_acc" in record else ""
            self._live.console.print(
                f"epoch {record['epoch']:>4}  loss {record['loss']:.4f}  acc {record['acc']:.1%}{val}"
                f"  lr {record['lr']:.2e}  {record['seconds']:.1f}s"
            )


def rank_callbacks(dist: Dist, quiet: bool = False) -> contextlib.AbstractContextManager[Callbacks]:
    """Progress and messages on rank 0; the other ranks of a torchrun job stay quiet."""
    return RichCallbacks(quiet=quiet) if dist.is_main else contextlib.nullcontext(Callbacks())


def draw_curves(project_root: Path) -> Path | None:
    """curves.png in the project from its train_log.jsonl; a warning (not a failed run) if it cannot be drawn."""
    from ..core.project import Project
    from ..pictures.figures import write_curves

    try:
        return write_curves(Project(project_root))
    except (DualptError, OSError) as exc:
        warn(f"curves.png not drawn: {exc}")
        return None


def summary(result: TrainResult) -> dict[str, Any]:
    """The training result as JSON (``--json`` output, ``runs/NAME/result.json``)."""
    data = {
        "method": result.method,
        "prompt_file": str(result.prompt_file),
        "epochs": result.epochs,
        "train_accuracy": result.train_acc,
        "final_loss": result.loss,
        "seconds": round(result.seconds, 2),
        "best_epoch": result.best_epoch,
        "val_accuracy": result.val_acc,
        "skipped_images": [{"path": p, "reason": r} for p, r in result.skipped],
        "guard": result.guard.to_json() if result.guard else None,
        "head": result.head.to_json() if result.head else None,
        "plan_entropy": result.plan_entropy,
    }
    if result.profile is not None:
        data["profile_seconds"] = {k: round(v, 4) for k, v in result.profile.items()}
    return data


def report(result: TrainResult, json_out: bool = False, run: str | None = None, curves: Path | None = None) -> None:
    data = {**summary(result), "curves": str(curves) if curves else None, "run": run}
    if json_out:
        print_json(data)
        return
    table = Table(title="dualpt train", show_header=False)
    table.add_row("method", result.method)
    table.add_row("prompt file", escape(str(result.prompt_file)))
    if result.epochs:
        table.add_row("epochs", str(result.epochs))
    table.add_row("train accuracy" + (" (last epoch)" if result.epochs else ""), f"{result.train_acc:.1%}")
    table.add_row("final loss", f"{result.loss:.4f}")
    if result.plan_entropy is not None:
        table.add_row("plan entropy (1 = uniform)", f"{result.plan_entropy:.3f}")
    if result.val_acc is not None:
        table.add_row("best validation accuracy", f"{result.val_acc:.1%} (epoch {result.best_epoch})")
    g = result.guard
    if g is not None:
        blend = f"DUAL-PT + {g.prior_weight:g} x {g.prior} prior" if g.prior_weight else "DUAL-PT alone"
        if result.head is not None:
            blend += " + residual head"
        table.add_row("classifier kept", blend if g.classifier == "trained" else f"{g.classifier} (training lost)")
        if g.val_images and g.gain is not None:  # (a gain whenever there were held-out images)
            acc = g.val_acc
            parts = [f"kept {g.kept_acc:.1%}", f"zero-shot {acc['zero-shot']:.1%}"]
            if "descriptions" in acc:
                parts.append(f"descriptions {acc['descriptions']:.1%}")
            table.add_row(f"held-out accuracy ({g.val_images} images)", ", ".join(parts))
            table.add_row("gain over zero-shot (held-out)", f"{g.gain * 100:+.1f} points")
        if g.collapsed:
            table.add_row("collapse", "[red]yes[/]: loss near ln K, chance accuracy")
    if result.head is not None:
        head_rows(table, result.head)
    table.add_row("time", f"{result.seconds:.1f} s")
    if curves:
        table.add_row("curves", escape(str(curves)))
    if run is not None:
        table.add_row("run", escape(run))
    if result.skipped:
        table.add_row("skipped images", str(len(result.skipped)))
    console.print(uncut(table))
    if result.profile:
        total = sum(result.profile.values()) or 1.0
        prof = Table(title="where a step's time goes")
        prof.add_column("phase")
        prof.add_column("seconds", justify="right")
        prof.add_column("share", justify="right")
        for phase, seconds in sorted(result.profile.items(), key=lambda kv: -kv[1]):
            prof.add_row(phase, f"{seconds:.3f}", f"{seconds / total:.1%}")
        console.print(prof)


def head_rows(table: Table, head: ResidualHead) -> None:
    """What the residual head added, cross-validated over the shots (model/residual.py)."""
    cv = head.cv_acc
    if head.folds:
        parts = [f"zero-shot {cv['zero-shot']:.1%}"]
        if "descriptions" in cv:
            parts.append(f"descriptions {cv['descriptions']:.1%}")
        parts += [f"blend {cv['blend']:.1%}", f"residual alone {cv['residual']:.1%}", f"kept {cv['head']:.1%}"]
        table.add_row(f"cross-validated accuracy ({head.folds} folds)", ", ".join(parts))
        kept, zero_shot = cv["head"], cv["zero-shot"]
        assert kept is not None and zero_shot is not None  # measured out of fold
        table.add_row("gain over zero-shot (cross-validated)", f"{(kept - zero_shot) * 100:+.1f} points")
    else:
        table.add_row("cross-validated accuracy", "none at 1 shot per class (nothing to hold out)")
    penalty = f"head penalty {head.lam:g}"
    if head.lambda_cv:
        penalty += " chosen by cross-validation among " + ", ".join(head.lambda_cv)
    table.add_row("temperature", f"{head.temperature:.2f} ({penalty})")
    if head.mix:
        table.add_row("uniform share of the probabilities", f"{head.mix:.2f} (fitted with the temperature)")
