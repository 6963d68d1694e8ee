"""The ``dualpt`` command line: thin commands that parse options and call one library function each.

Every :class:`~dualpt_cli.errors.DualptError` raised below a command becomes a one-line message on
stderr and a non-zero exit code here, in one place (:class:`_Group`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import click
import typer
from rich.markup import escape
from typer.core import TyperGroup

from . import __version__
from .errors import DualptError
from .ui import err_console


class _Group(TyperGroup):
    """Turns domain errors and Ctrl-C into clean exits for every command; sorts options into help panels."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        for param in command.params if command else []:
            panel = PANELS.get((cmd_name, param.name)) or PANELS.get(param.name)
            if panel and param.param_type_name == "option":
                param.rich_help_panel = panel
        if command:  # panels in a fixed order (help shows them in the order of their first option)
            order = [DATA, LLM, MODEL, METHOD, OPTIMISATION, HARDWARE, OUTPUT]
            command.params.sort(key=lambda p: order.index(p.rich_help_panel) if getattr(p, "rich_help_panel", None)
                                in order else -1)
        return command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DualptError as exc:
            err_console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
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
        typer.echo(f"dualpt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Adapt CLIP to your own image classes from a few examples (DUAL-PT prompt tuning)."""
    from .ui import set_quiet, setup_logging

    setup_logging()
    set_quiet(False)  # a command's --quiet sets it again


# ---------------------------------------------------------------------------------------------------------
# help panels: every option of every command sits in one (tests/test_cli.py checks)

DATA, MODEL, METHOD, OPTIMISATION, HARDWARE, OUTPUT, LLM = (
    "Data", "Model", "Method", "Optimisation", "Hardware", "Output", "LLM")
PANELS: dict[str | tuple[str, str], str] = {
    **dict.fromkeys(["shots", "val_shots", "seed", "aug_views", "fresh_views", "crop_scale", "classes", "force",
                     "phrases"], DATA),
    **dict.fromkeys(["model", "pretrained", "prompt_file", "prompts_deprecated", "run", "config"], MODEL),
    **dict.fromkeys(["recipe", "prompts", "ctx_len", "ctx_init", "prompt_text", "class_specific", "alpha", "beta",
                     "lam", "llm_loss", "context", "prior_weight", "guard", "zero_shot"], METHOD),
    **dict.fromkeys(["epochs", "batch_size", "lr", "resume"], OPTIMISATION),
    **dict.fromkeys(["device", "precision", "text_chunk", "workers"], HARDWARE),
    **dict.fromkeys(["project", "json_out", "quiet", "profile", "top_k", "fmt", "output", "show", "run_name"],
                    OUTPUT),
    **dict.fromkeys([("describe", n) for n in ("provider", "model", "samples", "temperature", "concurrency",
                                               "timeout", "base_url", "host")], LLM),
    **dict.fromkeys(["plot", "examples"], OUTPUT),
    **dict.fromkeys(["eval_dir", "explain_paths"], DATA),
    ("explain", "classes"): OUTPUT,
    ("predict", "batch_size"): HARDWARE,
    ("eval", "batch_size"): HARDWARE,
}

# ---------------------------------------------------------------------------------------------------------
# closed sets: parse-time choices (tests/test_cli.py checks they equal the library's)

Provider = Literal["auto", "openai", "ollama", "none"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
LlmLoss = Literal["cosine", "wd", "ce"]
Context = Literal["auto", "llm", "none"]
Recipe = Literal["default", "paper"]
PromptText = Literal["name", "descriptions"]
Format = Literal["table", "json", "jsonl", "csv"]
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value.strip()):
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, DEVICES))}")
    return value.strip()


def _complete_device(incomplete: str) -> list[str]:
    return [d for d in ("auto", "cpu", "cuda", "mps") if d.startswith(incomplete)]


# ---------------------------------------------------------------------------------------------------------
# shared options

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="open_clip model: a name (RN50, ViT-B-16), hf-hub:org/name, local-dir:/path, or a weights file.",
    ),
]
PretrainedOpt = Annotated[
    str, typer.Option("--pretrained", help="Pretrained tag for a built-in model name (e.g. openai).")
]
DeviceOpt = Annotated[
    str, typer.Option("--device", parser=_device, metavar="|".join(DEVICES), autocompletion=_complete_device,
                      help="Where to run (auto: cuda, then mps, then cpu).")
]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="auto: bf16 where it is fast, else fp32.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
ProjectOpt = Annotated[
    str | None,
    typer.Option("--project", "-p", help="Project folder.", show_default="$DUALPT_PROJECT or ./dualpt-project"),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, epoch lines or hints; "
                                        "warnings, errors and the result only.")]


def _quiet(quiet: bool) -> None:
    if quiet:
        from .ui import set_quiet

        set_quiet()


# ---------------------------------------------------------------------------------------------------------
# info


@app.command()
def info(
    model: ModelOpt = "RN50",
    pretrained: PretrainedOpt = "openai",
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Show the resolved CLIP model, its embedding size, local features, device and precision.

    Example: dualpt info --model ViT-B-16 --pretrained openai
    """
    from .models import ModelSpec, load_backbone
    from .ui import console, print_json

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
# describe


@app.command()
def describe(
    classes: Annotated[
        str | None,
        typer.Argument(
            metavar="CLASSES_TXT",
            help="One class a line, or 'folder_name: readable name'. With --show: the class to show.",
        ),
    ] = None,
    provider: Annotated[Provider, typer.Option(help="LLM provider; none: no LLM.")] = "auto",
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="LLM model.", show_default="gpt-4o-mini / llama3.2")
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="Answers asked per class, merged.")] = 1,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0, help="LLM sampling temperature.")] = 0.7,
    project: ProjectOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Describe again classes already described.")] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 4,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds per request.")] = 60.0,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible server URL.", show_default="$OPENAI_BASE_URL")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Ollama server URL.", show_default="$OLLAMA_HOST")] = None,
    show: Annotated[bool, typer.Option("--show", help="Print what is stored (one class if given).")] = False,
    phrases: Annotated[
        str | None,
        typer.Option("--phrases", metavar="FILE", help="Add phrases from a JSON or YAML file mapping each class "
                     "to its phrases (no LLM is asked); --force replaces the stored ones."),
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Ask an LLM for the visual features of each class; store them in the project's descriptions.json.

    Example: dualpt describe examples/shapes/classes.txt --provider none

    Re-running skips classes already described (unless --force). The key comes from $OPENAI_API_KEY.
    Phrases you already have: dualpt describe classes.txt --phrases phrases.json
    """
    from . import describe as lib
    from .project import resolve_project

    _quiet(quiet)
    proj = resolve_project(project)
    if show:
        lib.show(proj, classes, json_out=json_out)
        return
    if phrases is not None:
        from .phrasefile import add_phrases

        if provider != "auto":
            raise typer.BadParameter("--phrases asks no LLM; leave out --provider", param_hint="'--provider'")
        lib.print_report(add_phrases(proj, classes, phrases, replace=force), json_out)
    else:
        cfg = lib.DescribeConfig(
            classes=classes, project=proj, provider=provider, model=model, samples=samples,
            temperature=temperature, force=force, concurrency=concurrency, timeout=timeout,
            base_url=base_url, host=host,
        )  # fmt: skip
        lib.describe(cfg, json_out=json_out)
    _hint(json_out, f"dualpt train IMAGES --shots 8{_project_arg(project)}  (IMAGES: one sub-folder of "
                    "images per class)")



# ---------------------------------------------------------------------------------------------------------
# train


def _parse_shots(value: str) -> int | None:
    if value.strip().lower() == "all":
        return None
    try:
        shots = int(value)
    except ValueError:
        raise typer.BadParameter(f"expected a number of images per class or 'all', got {value!r}") from None
    if shots < 1:
        raise typer.BadParameter(f"must be at least 1, got {shots}")
    return shots


@app.command()
def train(
    ctx: typer.Context,
    images: Annotated[str | None, typer.Argument(metavar="IMAGES", help="ImageFolder: one sub-folder of images "
                                                 "per class (with --config: the saved one).")] = None,
    shots: Annotated[str, typer.Option(help="Training images per class, or 'all'.")] = "8",
    project: ProjectOpt = None,
    model: ModelOpt = "RN50",
    pretrained: PretrainedOpt = "openai",
    seed: Annotated[int, typer.Option(help="Seed of the few-shot sample, init and batch order.")] = 1,
    prompts: Annotated[int, typer.Option("--prompts", help="M: learnable prompts per class.")] = 4,
    recipe: Annotated[Recipe, typer.Option(help="default: the measured recipe (starts at zero-shot, keeps the "
                                        "better of trained and zero-shot); paper: the paper's exact setup. "
                                        "Options given explicitly win over the recipe.")] = "default",
    ctx_len: Annotated[int | None, typer.Option("--ctx-len", help="Context vectors per prompt.",
                                                show_default="4; paper 16")] = None,
    ctx_init: Annotated[str | None, typer.Option("--ctx-init", help="Initialise the context from words "
                                                 "('' = random N(0, 0.02)).",
                                                 show_default="'a photo of a'; paper ''")] = None,
    prompt_text: Annotated[PromptText | None, typer.Option("--prompt-text", help="What follows the context: name "
                                                    "('{name}.') or descriptions (one phrase per prompt).",
                                                    show_default="descriptions; paper name")] = None,
    crop_scale: Annotated[float | None, typer.Option("--crop-scale", help="Smallest random-crop area (share "
                                                     "of the image) of the training views.",
                                                     show_default="0.9; paper 0.08")] = None,
    prior_weight: Annotated[float | None, typer.Option("--prior-weight", help="Weight of the zero-shot prior "
                                                       "(description ensemble) added to the DUAL-PT logits when "
                                                       "not chosen on held-out images.",
                                                       show_default="2; paper 0")] = None,
    guard: Annotated[bool | None, typer.Option("--guard/--no-guard", help="Choose the blend on held-out "
                                               "images and keep zero-shot CLIP if training did not beat it.",
                                               show_default="on; paper off")] = None,
    class_specific: Annotated[bool, typer.Option("--class-specific", help="Per-class context (CoOp CSC).")] = False,
    alpha: Annotated[float, typer.Option(help="Edge (Gromov-Wasserstein) weight in graph matching.")] = 0.2,
    beta: Annotated[float, typer.Option(help="Weight of the LLM alignment loss.")] = 0.2,
    lam: Annotated[float, typer.Option("--lambda", help="Entropic regularisation of the matching plan.")] = 0.1,
    llm_loss: Annotated[LlmLoss, typer.Option("--llm-loss", help="cosine (paper Eq. 5); wd, ce: "
                                              "ablations.")] = "cosine",
    context: Annotated[Context, typer.Option(help="auto: use descriptions.json if present; llm: require it; "
                                             "none: train without LLM context.")] = "auto",
    epochs: Annotated[int | None, typer.Option(help="Epochs (default by shots: 50/100/200).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per optimisation step.")] = 32,
    lr: Annotated[float, typer.Option(help="SGD learning rate.")] = 0.002,
    aug_views: Annotated[int, typer.Option("--aug-views", help="Augmented views per image, encoded once "
                                           "and cached.")] = 8,
    fresh_views: Annotated[bool, typer.Option("--fresh-views", help="Encode a new augmented view of every "
                                              "image for every epoch instead of reusing --aug-views cached "
                                              "ones (the research-code behaviour; slower).")] = False,
    val_shots: Annotated[int | None, typer.Option("--val-shots", help="Held-out images per class: the best "
                                                  "epoch on them is kept, and the guard compares with zero-shot.",
                                                  show_default="1 per 4 shots; paper 0")] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    text_chunk: Annotated[int, typer.Option("--text-chunk", help="Classes per text-encoder chunk, to bound "
                                            "memory for thousands of classes (0 = all at once).")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
    profile: Annotated[bool, typer.Option("--profile", help="Print where a step's time goes.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    config: Annotated[str | None, typer.Option("--config", metavar="FILE", help="Rerun a saved run_config.json "
                                               "(options given here override it).")] = None,
    run_name: Annotated[str | None, typer.Option("--run-name", help="Name of this run under runs/.",
                                                 show_default="time-shots-seed")] = None,
) -> None:
    """Learn M prompts per class with DUAL-PT on a few labelled images; save prompts.safetensors.

    Example: dualpt train ./images --shots 8

    Uses the project's descriptions.json (from dualpt describe) when present.
    """
    from .project import resolve_project
    from .runs import record_run
    from .train import TrainConfig, run_training
    from .train_ui import RichCallbacks, draw_curves, report, summary

    _quiet(quiet)
    if images is None and config is None:
        raise typer.BadParameter("pass the ImageFolder to train on (or --config FILE)", param_hint="'IMAGES'")
    cfg = TrainConfig(
        images=images, project=project, shots=_parse_shots(shots), val_shots=val_shots, model=model,
        pretrained=pretrained, seed=seed, recipe=recipe, n_prompts=prompts, n_ctx=ctx_len, ctx_init=ctx_init,
        prompt_text=prompt_text, crop_scale=crop_scale, prior_weight=prior_weight, guard=guard,
        class_specific=class_specific, alpha=alpha, beta=beta, lam=lam, llm_loss=llm_loss, context=context,
        epochs=epochs, batch_size=batch_size, lr=lr, aug_views=aug_views, fresh_views=fresh_views, device=device,
        precision=precision, text_chunk=text_chunk, resume=resume, profile=profile,
    )  # fmt: skip
    if config is not None:
        cfg = _with_saved_config(ctx, cfg, config)
    try:
        with RichCallbacks(quiet=json_out or quiet) as callbacks:
            result = run_training(cfg, callbacks)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: the last finished epoch is kept; run the same command with "
                          "--resume to continue", soft_wrap=True)
        raise typer.Exit(130) from None
    curves = draw_curves(result.prompt_file.parent)  # before record_run, so that the run keeps a copy
    run = record_run(resolve_project(project), summary(result), run_name).name
    report(result, json_out=json_out, run=run, curves=curves)
    _hint(json_out, f"dualpt eval TEST_IMAGES --zero-shot{_project_arg(project)}  (accuracy on held-out "
                    f"images), or dualpt predict IMAGES{_project_arg(project)}")


def _with_saved_config(ctx: typer.Context, cfg, path: str):
    """``cfg`` (from the command line) on top of a saved run config: options given explicitly win."""
    from dataclasses import replace

    from .runs import config_from_file

    fields = {"prompts": "n_prompts", "ctx_len": "n_ctx"}  # option name -> TrainConfig field, where they differ
    given = {fields.get(name, name) for name in ctx.params
             if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}
    saved = config_from_file(path)
    return replace(cfg, **{k: v for k, v in saved.items() if k not in given})


# ---------------------------------------------------------------------------------------------------------
# runs


@app.command("runs")
def runs_(project: ProjectOpt = None, json_out: JsonOpt = False) -> None:
    """List the project's training runs: method, shots, seed, accuracy in training, validation and eval.

    Example: dualpt runs -p my-project
    """
    from rich.table import Table

    from .project import resolve_project
    from .runs import list_runs
    from .ui import console, print_json

    rows = list_runs(resolve_project(project))
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no runs yet: dualpt train IMAGES makes one")
        return
    table = Table(title="dualpt runs (* current)")
    for column in ("", "run", "method", "shots", "seed", "epochs", "train", "val", "eval"):
        table.add_column(column, justify="left" if column in ("", "run", "method") else "right",
                         no_wrap=column in ("run", "method"))
    pct = lambda x: "-" if x is None else f"{x:.1%}"  # noqa: E731
    for r in rows:
        table.add_row("*" if r["current"] else "", escape(r["name"]), r["method"],
                      "all" if r["shots"] is None else str(r["shots"]), str(r["seed"]), str(r["epochs"]),
                      pct(r["train_accuracy"]), pct(r["val_accuracy"]), pct(r["eval_top1"]))
    console.print(table)


# ---------------------------------------------------------------------------------------------------------
# predict and eval

PromptFileOpt = Annotated[
    str | None,
    typer.Option("--prompt-file", help="Prompt file to use (instead of the project's prompts.safetensors)."),
]
OldPromptsOpt = Annotated[str | None, typer.Option("--prompts", hidden=True, help="Deprecated: --prompt-file.")]
RunOpt = Annotated[str | None, typer.Option("--run", help="Use the prompts of this run (dualpt runs lists them).",
                                            show_default="the current one")]


def _prompt_file(new: str | None, old: str | None, run: str | None = None, project: str | None = None) -> str | None:
    """--prompt-file, --run NAME, or the deprecated --prompts spelling of --prompt-file (with a warning)."""
    if run is not None:
        if new is not None or old is not None:
            raise typer.BadParameter("use --run or --prompt-file, not both", param_hint="'--run'")
        from .project import resolve_project
        from .runs import run_folder

        return str(run_folder(resolve_project(project), run) / "prompts.safetensors")
    if old is None:
        return new
    if new is not None:
        raise typer.BadParameter("give the prompt file once, as --prompt-file", param_hint="'--prompts'")
    from .ui import warn

    warn("--prompts FILE is deprecated for predict, eval and explain (train's --prompts is the number of prompts); "
         "use --prompt-file FILE")
    return old
ClassesOpt = Annotated[
    str | None,
    typer.Option("--classes", help="Class list (one a line, or 'folder: name'); classes not trained are encoded "
                 "from the learned context (base-to-new), no LLM needed."),
]
OverrideModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Load the CLIP from here instead of the one named in the prompt file "
                 "(must be the same model).", show_default="the prompt file's"),
]
OverridePretrainedOpt = Annotated[
    str | None, typer.Option("--pretrained", help="Pretrained tag or weights file.", show_default="the prompt file's")
]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", min=0, help="Image decoding processes.",
                                show_default="4 beside a GPU, CPUs // 8 on a CPU")
]


@app.command()
def predict(
    images: Annotated[list[str], typer.Argument(metavar="IMAGES...", help="Image files, folders or globs.")],
    project: ProjectOpt = None,
    prompt_file: PromptFileOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes listed per image.")] = 5,
    fmt: Annotated[Format | None, typer.Option("--format", "-f", help="Output format.",
                                               show_default="from --output's extension, else table")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write to this file (atomically).",
                                               show_default="stdout")] = None,
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
    """
    from .predict import PredictConfig, run_predict

    _quiet(quiet)
    if json_out and fmt not in (None, "json"):
        raise typer.BadParameter(f"--json means --format json, not {fmt}", param_hint="'--json'")
    prompts = _prompt_file(prompt_file, prompts_deprecated, run, project)
    run_predict(PredictConfig(
        inputs=images, project=project, prompts=prompts, top_k=top_k, fmt="json" if json_out else fmt,
        output=output,
        batch_size=batch_size, workers=workers, classes=classes, model=model, pretrained=pretrained,
        device=device, precision=precision,
    ))  # fmt: skip


@app.command("eval")
def eval_(
    images: Annotated[str, typer.Argument(metavar="IMAGES", help="ImageFolder: one sub-folder of images per class.")],
    project: ProjectOpt = None,
    prompt_file: PromptFileOpt = None,
    classes: ClassesOpt = None,
    zero_shot: Annotated[bool, typer.Option("--zero-shot", help="Also evaluate plain CLIP ('a photo of a "
                                            "{class}.'); with --model it needs no prompt file.")] = False,
    model: OverrideModelOpt = None,
    pretrained: OverridePretrainedOpt = None,
    batch_size: BatchOpt = 64,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    workers: WorkersOpt = None,
    plot: Annotated[str | None, typer.Option("--plot", metavar="DIR", help="Also write confusion-matrix and "
                                             "per-class accuracy PNGs (and eval.json, for dualpt report) here.")
                    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    run: RunOpt = None,
    prompts_deprecated: OldPromptsOpt = None,
) -> None:
    """Accuracy of the trained prompts on labelled images: top-1/top-5, per class, confused pairs.

    Example: dualpt eval ./test_images --zero-shot

    Folder names must be trained classes, or listed in --classes (then base, new and H are reported).
    """
    from .evaluate import EvalConfig, evaluate_folder, report

    _quiet(quiet)
    prompts = _prompt_file(prompt_file, prompts_deprecated, run, project)
    cfg = EvalConfig(
        images=images, project=project, prompts=prompts, classes=classes, zero_shot=zero_shot, model=model,
        pretrained=pretrained, batch_size=batch_size, workers=workers, device=device, precision=precision,
    )  # fmt: skip
    if plot is not None:
        from .report import writable_folder, write_eval_plots

        writable_folder(plot, "--plot")  # before the images are scored
    result = evaluate_folder(cfg)
    if result.prompt_file is not None:
        from pathlib import Path

        from .project import resolve_project
        from .runs import record_eval

        record_eval(resolve_project(project), Path(result.prompt_file), result.to_json())
    if plot is not None:
        written = write_eval_plots(result, plot)
        err_console.print(f"pictures: {escape(', '.join(str(p) for p in written))}", soft_wrap=True)
    report(result, json_out=json_out)


# ---------------------------------------------------------------------------------------------------------
# pictures


@app.command()
def explain(
    images: Annotated[list[str], typer.Argument(metavar="IMAGES...", help="Image files, folders or globs.")],
    output: Annotated[str | None, typer.Option("--output", "-o", metavar="DIR", help="Folder for the PNGs (one "
                                               "per image).", show_default="explain, or none with --json")] = None,
    classes: Annotated[list[str] | None, typer.Option("--classes", "-c", help="Classes to explain: top (the "
                                                      "prediction), topN (the N best), or a class name; repeat "
                                                      "or separate with commas.", show_default="top")] = None,
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
    from . import explain_ui
    from .explain import ExplainConfig

    _quiet(quiet)
    prompts = _prompt_file(prompt_file, prompts_deprecated, run, project)
    chosen = [c.strip() for value in classes or ["top"] for c in value.split(",") if c.strip()]
    cfg = ExplainConfig(inputs=images, classes=chosen, project=project, prompts=prompts, model=model,
                        pretrained=pretrained, device=device, precision=precision)
    explain_ui.run(cfg, output if output is not None else (None if json_out else "explain"), json_out)


@app.command("report")
def report_(
    output: Annotated[str | None, typer.Option("--output", "-o", help="HTML file to write.",
                                               show_default="<project>/report.html")] = None,
    project: ProjectOpt = None,
    eval_dir: Annotated[str | None, typer.Option("--eval", metavar="DIR", help="Folder written by dualpt eval "
                                                 "--plot.", show_default="<project>/eval")] = None,
    examples: Annotated[int, typer.Option("--examples", min=0, help="Images to explain: one from each of the "
                                          "worst classes of the evaluation (else training images).")] = 4,
    explain_paths: Annotated[list[str] | None, typer.Option("--explain", metavar="IMAGE", help="Explain these "
                                                             "images instead (repeatable).")] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """One self-contained HTML page for a project: config, descriptions, curves, eval, explained images.

    Example: dualpt eval test_images --zero-shot --plot dualpt-project/eval && dualpt report

    Also redraws the project's curves.png from train_log.jsonl. Images are embedded; it opens offline.
    """
    from .report import ReportConfig, build_report
    from .ui import console, warn

    _quiet(quiet)
    result = build_report(ReportConfig(project=project, output=output, eval_dir=eval_dir, examples=examples,
                                       explain=explain_paths or [], device=device, precision=precision))
    for note in result.notes:
        warn(note)
    console.print(f"report: {escape(str(result.path))}", soft_wrap=True)


# ---------------------------------------------------------------------------------------------------------
# cache

cache_app = typer.Typer(help="The per-user feature cache shared by all projects ($DUALPT_CACHE overrides).",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info(json_out: JsonOpt = False) -> None:
    """Where the feature cache is and how much it holds, per model.

    Example: dualpt cache info
    """
    from .cache import cache_info as info_

    data = info_()
    _print_data(data, json_out, [f"{data['path']} ({data['env']}): {data['entries']} images, {_mb(data['bytes'])}"]
                + [f"  {m['model_key']}: {m['entries']} images, {_mb(m['bytes'])}" for m in data["models"]])


@cache_app.command("clear")
def cache_clear(json_out: JsonOpt = False) -> None:
    """Delete the cached features (they are encoded again when needed).

    Example: dualpt cache clear
    """
    from .cache import clear_cache

    data = clear_cache()
    _print_data(data, json_out, [f"removed {data['entries_removed']} cached images ({_mb(data['bytes_freed'])}) "
                                 f"from {data['path']}"])


def _print_data(data: dict, json_out: bool, lines: list[str]) -> None:
    """``data`` as JSON, or ``lines`` for people."""
    from .ui import console, print_json

    if json_out:
        print_json(data)
        return
    for line in lines:
        console.print(escape(line), soft_wrap=True)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _project_arg(project: str | None) -> str:
    import shlex

    return f" -p {shlex.quote(project)}" if project else ""


def _hint(json_out: bool, command: str) -> None:
    """The usual next command, for people (not with --json or --quiet)."""
    if not json_out:
        from .ui import hint

        hint(f"next: {command}")


def main() -> None:
    app()
