"""``dualpt describe``: ask an LLM (or read a phrases file) what distinguishes each class.

The command is registered on the one app in :mod:`app` (which also turns domain errors into messages)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..describe.ask import DescribeConfig
from .options import (
    DESCRIBE,
    JsonOpt,
    ProjectOpt,
    Provider,
    QuietOpt,
    hint_next,
    project_arg,
    quiet_mode,
)


def describe(
    classes: Annotated[
        str | None,
        typer.Argument(
            metavar="CLASSES_TXT",
            help="One class a line, or 'folder_name: readable name'. With --show: the class to show.",
        ),
    ] = None,
    provider: Annotated[Provider, typer.Option(help="LLM provider; none: no LLM.")] = DESCRIBE["provider"],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="LLM model.", show_default="gpt-4o-mini / llama3.2")
    ] = DESCRIBE["model"],
    samples: Annotated[int, typer.Option(help="Answers asked per class, merged (>= 1).")] = DESCRIBE["samples"],
    temperature: Annotated[float, typer.Option(help="LLM sampling temperature (0 to 2).")] = DESCRIBE["temperature"],
    project: ProjectOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Describe again classes already described.")] = DESCRIBE[
        "force"
    ],
    concurrency: Annotated[int, typer.Option(help="Requests in flight (>= 1).")] = DESCRIBE["concurrency"],
    timeout: Annotated[float, typer.Option(help="Seconds per request (> 0).")] = DESCRIBE["timeout"],
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible server URL.", show_default="$OPENAI_BASE_URL")
    ] = DESCRIBE["base_url"],
    host: Annotated[str | None, typer.Option(help="Ollama server URL.", show_default="$OLLAMA_HOST")] = DESCRIBE[
        "host"
    ],
    show: Annotated[bool, typer.Option("--show", help="Print what is stored (one class if given).")] = False,
    phrases: Annotated[
        str | None,
        typer.Option(
            "--phrases",
            metavar="FILE",
            help="Add phrases from a JSON or YAML file mapping each class "
            "to its phrases (no LLM is asked); --force replaces the stored ones.",
        ),
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Ask an LLM for the visual features of each class; store them in the project's descriptions.json.

    Example: dualpt describe examples/shapes/classes.txt --provider none

    Re-running skips classes already described (unless --force). The key comes from $OPENAI_API_KEY.
    Phrases you already have: dualpt describe classes.txt --phrases phrases.json
    """
    from ..core.project import resolve_project
    from ..ui import describe as describe_ui

    quiet_mode(quiet)
    proj = resolve_project(project)
    if show:
        describe_ui.show(proj, classes, json_out=json_out)
        return
    if phrases is not None:
        from ..describe.phrasefile import add_phrases

        if provider != "auto":
            raise typer.BadParameter("--phrases asks no LLM; leave out --provider", param_hint="'--provider'")
        describe_ui.print_report(add_phrases(proj, classes, phrases, replace=force), json_out)
    else:
        cfg = DescribeConfig(
            classes=classes, project=proj, provider=provider, model=model, samples=samples,
            temperature=temperature, force=force, concurrency=concurrency, timeout=timeout,
            base_url=base_url, host=host,
        )  # fmt: skip
        describe_ui.describe(cfg, json_out=json_out)
    hint_next(
        json_out, f"dualpt train IMAGES --shots 8{project_arg(project)}  (IMAGES: one sub-folder of images per class)"
    )
