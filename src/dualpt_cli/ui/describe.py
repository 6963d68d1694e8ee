"""The terminal side of ``dualpt describe``: a progress bar while classes are described, then a summary table
(or JSON), and ``--show``. The library (:mod:`describe`, :mod:`descriptions`, :mod:`phrasefile`) never prints.
"""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ..core.project import Project, project_lock
from ..data.classes import parse_class_list
from ..data.descriptions import FORMAT, find_descriptions
from ..describe.ask import DescribeConfig, DescribeReport, plan_describe, run_describe
from ..describe.phrasefile import PhrasesReport
from ..errors import PartialFailure
from . import console as ui


def describe(cfg: DescribeConfig, json_out: bool = False) -> None:
    """Run with a progress bar, then print a table (or JSON); PartialFailure if any class failed."""
    parse_class_list(cfg.class_file)  # a bad class list fails before the project folder is touched
    with project_lock(cfg.project, "describe"):  # one writer at a time, from reading what is stored to the end
        plan = plan_describe(cfg)  # bad input fails here, before the progress bar
        with ui.progress() as bar:
            task = bar.add_task("describing", total=len(plan.todo), status="")

            def on_done(entry: dict) -> None:
                mark = "[red]failed[/] " if entry["status"] == "failed" else ""
                bar.update(task, advance=1, status=f"{mark}{escape(entry['name'][:40])}")

            report = run_describe(plan, on_done)
    print_report(report, json_out)
    if report.failed:
        names = ", ".join(e["name"] for e in report.failed[:5]) + (", ..." if len(report.failed) > 5 else "")
        raise PartialFailure(
            f"{len(report.failed)} of {len(report.entries)} classes failed ({names}); "
            "re-run the same command to retry them"
        )


def print_report(report: DescribeReport | PhrasesReport, json_out: bool) -> None:
    """What a describe (or ``--phrases``) run stored: a table per class and a count, or the file as JSON."""
    if json_out:
        ui.print_json({"format": FORMAT, "file": str(report.path), "classes": report.entries})
        return
    for folder in report.dropped:
        ui.warn(f"class {folder!r} is no longer in the class list; its stored description was dropped")
    if report.provider == "none":
        ui.console.print(
            f"provider none: no LLM was asked. {len(report.asked)} classes written with no phrases to "
            f'{escape(str(report.path))}; training will run without LLM context (the paper\'s "None" '
            "context, beta = 0)."
        )
    source = f" ({report.provider}{' ' + report.model if report.model else ''})" if report.asked else ""
    table = Table(title=f"descriptions{source}")
    kept_after = {e["folder"]: e["error"] for e in report.failed_kept}
    for column in ("class", "folder", "phrases", "status"):
        table.add_column(column, justify="right" if column == "phrases" else "left")
    for entry in report.entries:
        fresh = entry["folder"] in report.asked or entry["folder"] in report.unnamed
        status = entry["status"] if fresh else f"{entry['status']} (kept)"
        if entry["status"] == "failed":
            status = f"[red]failed[/]: {escape(entry['error'] or '')}"
        if entry["folder"] in kept_after:
            status = f"[red]failed[/]: {escape(kept_after[entry['folder']] or '')} (earlier phrases kept)"
        table.add_row(escape(entry["name"]), escape(entry["folder"]), str(len(entry["phrases"])), status)
    ui.console.print(ui.uncut(table))
    if not report.asked and report.provider != "file":
        ui.console.print(
            f"all {len(report.entries)} classes are already described; nothing was asked (--force asks again)"
        )
    kept = len(report.entries) - len(report.asked) - len(report.unnamed)
    verb = "written without phrases" if report.provider == "none" else "described"
    dest = escape(str(report.path)) if report.path.exists() else "no file written (no class was described)"
    none = f", {len(report.unnamed)} without phrases" if report.unnamed else ""
    counts = f"{len(report.asked)} {verb}, {kept} kept from earlier runs{none}, {len(report.failed)} failed"
    ui.console.print(f"{counts} -> {dest}")


def show(project: Project, name: str | None = None, json_out: bool = False) -> None:
    """Print the stored descriptions, all or one class (matched by folder or name, ignoring case)."""
    entries = find_descriptions(project, name)
    if json_out:
        ui.print_json(entries)
        return
    for entry in entries:
        prov = entry.get("provenance") or {}
        source = " ".join(str(v) for v in (prov.get("provider"), prov.get("model")) if v)
        head = f"[bold]{escape(entry['name'])}[/] ({escape(entry['folder'])}) - {entry['status']}"
        ui.console.print(f"{head}, {len(entry['phrases'])} phrases [dim]{escape(source)}[/]")
        if entry.get("error"):
            ui.console.print(f"  [red]error:[/] {escape(entry['error'])}")
        for phrase in entry["phrases"]:
            ui.console.print(f"  - {escape(phrase)}")
