"""The ``dualpt`` command line: thin commands that parse options and call one library function each.

Every :class:`~dualpt_cli.errors.DualptError` raised below a command becomes a one-line message on
stderr and a non-zero exit code here, in one place (:class:`_Group`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperGroup, TyperOption

from ..errors import DualptError
from ..ui.console import err_console
from . import compare as cli_compare
from . import describe as cli_describe
from . import predict as cli_predict
from . import train as cli_train
from .options import (
    DATA,
    HARDWARE,
    LLM,
    METHOD,
    MODEL,
    OPTIMISATION,
    OUTPUT,
    PANELS,
    SWITCHES,
    TRAIN,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    PrecisionOpt,
    PretrainedOpt,
)

if TYPE_CHECKING:  # typer (>= 0.26) vendors click: its commands are made of these classes, not click's
    from typer._click import Command, Context, Parameter

LONG_CHOICES = 9  # characters of "a|b|c" from which an option's choices move from the type column to its help


def _readable_help(params: list[Parameter]) -> None:
    """Help that reads at 80 columns: a flag shows no ``<bool>`` type, and a long list of choices is named by the
    option (``METHOD``, or ``CHOICE`` for a long name) in the narrow type column and listed in the help text."""
    for param in params:
        if not isinstance(param, (TyperOption, TyperArgument)):  # (every parameter of a typer command is)
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
            continue
        desc = getattr(param, "type_descriptor", None)
        if desc is not None and desc.is_ranged and param.metavar is None:  # the range in the help, not the type column
            param.metavar = f"<{desc.ranged_type_name}>"
            bounds = [f"{sign} {v}" for sign, v in ((">=", param.min), ("<=", param.max)) if v is not None]
            if bounds and not (param.help or "").endswith(")"):
                param.help = f"{param.help or ''} ({', '.join(bounds)})".strip()
            param.min = param.max = None  # shown only: the parameter's own type still checks the range
            continue
        choices = [str(c) for c in (desc.choices or ())] if desc is not None and desc.is_choice else []
        if param.metavar is not None or len("|".join(choices)) < LONG_CHOICES:
            continue
        long = next((o for o in param.opts if o.startswith("--")), param.name or "")
        name = long.lstrip("-").upper()
        param.metavar = name if len(name) <= len("PRECISION") else "CHOICE"
        if not all(re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", param.help or "") for c in choices):
            param.help = f"{param.help or ''} One of: {', '.join(choices)}.".strip()


class _Group(TyperGroup):
    """Turns domain errors and Ctrl-C into clean exits for every command; sorts options into help panels."""

    def get_params(self, ctx: Context) -> list[Parameter]:
        params = super().get_params(ctx)
        _readable_help(params)
        return params

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        command = super().get_command(ctx, cmd_name)
        if command:  # its -h/--help too, which click makes (once) apart from its params
            _readable_help([*command.params, *filter(None, [command.get_help_option(ctx)])])
        for param in command.params if command else []:
            panel = PANELS.get((cmd_name, param.name)) or PANELS.get(param.name)
            if panel and isinstance(param, TyperOption):
                param.rich_help_panel = panel
        if command:  # panels in a fixed order (help shows them in the order of their first option)
            order = [DATA, LLM, MODEL, METHOD, OPTIMISATION, SWITCHES, HARDWARE, OUTPUT]

            def rank(param: Parameter) -> int:
                panel = getattr(param, "rich_help_panel", None)
                return order.index(panel) if panel in order else -1

            command.params.sort(key=rank)
        return command

    def invoke(self, ctx: Context) -> Any:
        """Under torchrun rank 0 speaks for the job: other ranks print only an error of their own, marked with
        their rank, and nothing for a Ctrl-C, for stopping because another rank failed (``PeerFailed``), or for
        an error before the job's process group was joined (the same options fail the same way on every rank)."""
        from ..core.launch import JOINED, PeerFailed, launch_rank

        rank = launch_rank()
        try:
            return super().invoke(ctx)
        except typer.BadParameter as exc:  # typer checks Literal choices with pydantic, which prefixes its message
            exc.message = exc.message.removeprefix("Value error, ")
            raise
        except DualptError as exc:  # before joining, every rank fails alike (same options): rank 0 says it
            if rank == 0 or (rank in JOINED and not isinstance(exc, PeerFailed)):
                where = f" (rank {rank})" if rank else ""
                err_console.print(f"[red]error{where}:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if rank == 0:
                err_console.print("[yellow]interrupted[/]: finished work was kept")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Group,
    help="Adapt CLIP to your own image classes from a few examples (DUAL-PT prompt tuning).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"dualpt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Adapt CLIP to your own image classes from a few examples (DUAL-PT prompt tuning)."""
    from ..ui.console import set_quiet, setup_logging

    setup_logging()
    set_quiet(False)  # a command's --quiet sets it again


# ---------------------------------------------------------------------------------------------------------
# info


@app.command()
def info(
    model: ModelOpt = TRAIN["model"],
    pretrained: PretrainedOpt = TRAIN["pretrained"],
    device: DeviceOpt = TRAIN["device"],
    precision: PrecisionOpt = TRAIN["precision"],
    json_out: JsonOpt = False,
) -> None:
    """Show the resolved CLIP model, its embedding size, local features, device and precision.

    Example: dualpt info --model ViT-B-16 --pretrained openai
    """
    from ..clip.load import load_backbone
    from ..clip.spec import ModelSpec
    from ..ui.console import console, print_json

    bb = load_backbone(ModelSpec(model, pretrained), device=device, precision=precision)
    rows = bb.describe()
    if json_out:
        print_json(rows)
        return
    from rich.table import Table

    labels = {"embed_dim": "embedding size (d)", "local_features": "local features (N)"}
    rows["local_features"] = f"{rows['local_features']} ({'x'.join(map(str, rows.pop('local_grid')))})"
    table = Table(title="dualpt model", show_header=False)
    for key, value in rows.items():
        table.add_row(labels.get(key, key.replace("_", " ")), str(value))
    console.print(table)


# ---------------------------------------------------------------------------------------------------------
# the commands of cli_describe, cli_train and cli_predict, in the order --help lists them

app.command()(cli_describe.describe)
app.command()(cli_train.train)
app.command("runs")(cli_train.runs_)
app.command()(cli_predict.predict)
app.command("eval")(cli_predict.eval_)
app.command()(cli_predict.explain)
app.command("report")(cli_predict.report_)
app.command()(cli_compare.compare)

# ---------------------------------------------------------------------------------------------------------
# cache

cache_app = typer.Typer(
    help="The per-user feature cache shared by all projects ($DUALPT_CACHE overrides).", no_args_is_help=True
)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info(json_out: JsonOpt = False) -> None:
    """Where the feature cache is and how much it holds, per model.

    Example: dualpt cache info
    """
    from ..clip.cache import cache_info as info_

    data = info_()
    _print_data(
        data,
        json_out,
        [f"{data['path']} ({data['env']}): {data['entries']} images, {_mb(data['bytes'])}"]
        + [f"  {m['model_key']}: {m['entries']} images, {_mb(m['bytes'])}" for m in data["models"]],
    )


@cache_app.command("clear")
def cache_clear(json_out: JsonOpt = False) -> None:
    """Delete the cached features (they are encoded again when needed).

    Example: dualpt cache clear
    """
    from ..clip.cache import clear_cache

    data = clear_cache()
    _print_data(
        data,
        json_out,
        [f"removed {data['entries_removed']} cached images ({_mb(data['bytes_freed'])}) from {data['path']}"],
    )


def _print_data(data: dict, json_out: bool, lines: list[str]) -> None:
    """``data`` as JSON, or ``lines`` for people."""
    from ..ui.console import console, print_json

    if json_out:
        print_json(data)
        return
    for line in lines:
        console.print(escape(line), soft_wrap=True)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def main() -> None:
    app()
