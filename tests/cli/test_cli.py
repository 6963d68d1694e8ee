"""CLI habits: -h, choices checked at parse time, help panels, -p, --json, --quiet, --prompt-file, next hints."""

from __future__ import annotations

import json
import re
from typing import get_args

import pytest
import typer
from typer.testing import CliRunner

from dualpt_cli.cli import options as cli_options
from dualpt_cli.cli import train as cli_train
from dualpt_cli.cli.app import app
from dualpt_cli.core.checks import defaults
from dualpt_cli.describe import providers
from dualpt_cli.describe.ask import DescribeConfig
from dualpt_cli.model import alignment
from dualpt_cli.predict import output
from dualpt_cli.train import config as trainconfig
from dualpt_cli.train.config import TrainConfig
from imagegen import make_image_folder

runner = CliRunner()
COMMANDS = ["info", "describe", "train", "predict", "eval"]


def flat(text: str) -> str:
    """Output without rich's box drawing and line wrapping, for messages that may wrap in a panel."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def commands():
    group = typer.main.get_command(app)
    ctx = typer.Context(group)
    return {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["train", "no-such-folder", "--llm-loss", "l2"], 2, "'l2' is not one of 'cosine', 'wd', 'ce'"),
        (["train", "no-such-folder", "--context", "maybe"], 2, "'maybe' is not one of 'auto', 'llm', 'none'"),
        (
            ["train", "no-such-folder", "--align", "cross"],
            2,
            "'cross' is not one of 'graph', 'node', 'edge', 'attn', 'uniform'",
        ),
        (["train", "no-such-folder", "--method", "maple"], 2, "'maple' is not one of 'dualpt', 'codualpt'"),
        (["train", "no-such-folder", "--probe-constraint", "l2"], 2, "'l2' is not one of 'none', 'clap'"),
        (["train", "no-such-folder", "--precision", "fp8"], 2, "'fp8' is not one of 'auto', 'bf16', 'fp16', 'fp32'"),
        (["train", "no-such-folder", "--device", "gpu"], 2, "'gpu' is not one of 'auto', 'cpu', 'cuda', 'cuda:N'"),
        (["info", "--device", "cuda:x"], 2, "'cuda:x' is not one of"),
        (["describe", "no-such.txt", "--provider", "gpt"], 2, "'gpt' is not one of 'auto', 'openai', 'ollama', 'none'"),
        (["predict", "no-such.png", "--format", "xml"], 2, "'xml' is not one of 'table', 'json', 'jsonl', 'csv'"),
        (["eval", "no-such-folder", "--precision", "half"], 2, "'half' is not one of"),
        (["predict", "no-such.png", "--json", "--format", "csv"], 2, "--json means --format json, not csv"),
        (["predict", "x.png", "--prompt-file", "a", "--prompts", "b"], 2, "give the prompt file once"),
        (["train", "-h"], 0, "Optimisation"),
        (["info", "-h"], 0, "Usage:"),
        (["describe", "-h"], 0, "--phrases"),
        (["predict", "-h"], 0, "--prompt-file"),
        (["eval", "-h"], 0, "--prompt-file"),
        (["-h"], 0, "--install-completion"),
    ],
)
def test_options(args, code, message):
    """Bad choices fail before any work (the folders do not exist; that is not what is reported)."""
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in flat(result.output)
    assert "Traceback" not in result.output and "Value error" not in result.output  # no pydantic prefix


ALL_COMMANDS = ["info", "describe", "train", "runs", "predict", "eval", "explain", "report", "compare"]


@pytest.mark.parametrize("args", [[], *([name] for name in ALL_COMMANDS)])
def test_help_reads_at_80_columns(args):
    """No '<bool>' type after a flag; long choice lists are named in the type column and listed in the help."""
    result = runner.invoke(app, [*args, "-h"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and max(map(len, result.output.splitlines())) <= 80
    assert "codualpt|co" not in result.output and "auto|cpu|cuda" not in result.output
    if args == ["train"]:
        assert (
            "--method" in result.output and "METHOD" in result.output and len(result.output.splitlines()) <= 150
        )  # 145 (issue 22; 231 before the Switches panel and the shorter texts)
        rows = [m for m in re.finditer(r"^│ --[\w-]+ .*?  (\S.*?)\s*│$", result.output, re.M)]
        widths = [m.end() - m.start(1) - 2 for m in rows]  # from the description's start to the panel's border
        assert rows and min(widths) >= 35, min(widths)  # the description column (22 characters before)

    for command in commands().values():  # a choice named in the type column is listed in the help
        for param in command.params:
            desc = getattr(param, "type_descriptor", None)
            if desc is not None and desc.is_choice and param.metavar and "|" not in param.metavar:
                assert all(str(c) in param.help for c in desc.choices), (param.name, param.help)


def test_eval_without_a_prompt_file_says_what_to_do(tmp_path):
    images = make_image_folder(tmp_path / "images", classes=["red", "blue"], per_class=1)
    result = runner.invoke(app, ["eval", str(images), "-p", str(tmp_path / "new")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "does not exist: train first (dualpt train IMAGES)" in flat(result.output)
    assert "--zero-shot --model" in flat(result.output)


def test_eval_json_rounds_like_predict(prompts, test_images):
    result = runner.invoke(app, ["eval", str(test_images), "--prompt-file", prompts, "--zero-shot", "--json", "-q"])
    assert result.exit_code == 0, result.output
    numbers = re.findall(r"-?\d+\.\d+(?:e-?\d+)?", result.stdout)
    assert numbers and all(len(n.split(".")[1]) <= 6 for n in numbers if "e" not in n), numbers


def test_choices_are_the_librarys():
    assert get_args(cli_options.Provider) == providers.PROVIDER_CHOICES
    assert set(get_args(cli_options.Provider)) == {"auto", *providers.PROVIDERS}
    assert get_args(cli_options.LlmLoss) == trainconfig.LLM_LOSSES
    assert get_args(cli_options.Align) == alignment.ALIGNS
    assert get_args(cli_options.Recipe) == tuple(trainconfig.RECIPES)
    assert get_args(cli_options.PromptText) == trainconfig.PROMPT_TEXTS
    assert get_args(cli_options.Method) == trainconfig.METHODS
    from dualpt_cli.model.linear_probe import CONSTRAINTS

    assert get_args(cli_options.ProbeConstraint) == CONSTRAINTS
    assert get_args(cli_options.Format) == output.FORMATS
    from dualpt_cli.clip.backbone import _DTYPES

    assert set(get_args(cli_options.Precision)) == {"auto", *_DTYPES}


def test_every_option_sits_in_a_panel():
    """Every command, including ones added later: a new option needs its place in cli_options.PANELS."""
    missing = {
        name: [
            p.name
            for p in command.params
            if p.param_type_name == "option" and not p.hidden and not getattr(p, "rich_help_panel", None)
        ]
        for name, command in commands().items()
    }
    assert set(COMMANDS) <= set(missing)
    assert not {k: v for k, v in missing.items() if v}, "add these options to cli_options.PANELS"


@pytest.mark.parametrize("name", ["describe", "train", "predict", "eval"])
def test_project_has_short_p(name):
    options = {opt for p in commands()[name].params for opt in p.opts}
    assert {"-p", "--project", "-q", "--quiet"} <= options


def test_info_json_keys_are_snake_case(tiny_vit):
    result = runner.invoke(app, ["info", "--model", tiny_vit, "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    keys = json.loads(result.stdout)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", k) for k in keys), keys
    assert keys["local_features"] == 16 and keys["local_grid"] == [4, 4]


def test_predict_json_and_prompt_file(prompts, test_images):
    as_json = runner.invoke(app, ["predict", str(test_images), "--prompt-file", prompts, "--json", "-q"])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)
    as_format = runner.invoke(app, ["predict", str(test_images), "--prompt-file", prompts, "--format", "json"])
    assert [r["class"] for r in rows] == [r["class"] for r in json.loads(as_format.stdout)]
    old = runner.invoke(app, ["predict", str(test_images), "--prompts", prompts, "--json"])
    assert old.exit_code == 0 and json.loads(old.stdout) == rows
    assert "--prompts FILE is deprecated" in flat(old.stderr) and "--prompt-file" in old.stderr


def test_eval_prompt_file(prompts, test_images):
    result = runner.invoke(app, ["eval", str(test_images), "--prompt-file", prompts, "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["prompt_file"] == prompts


def test_describe_hint_quiet_and_json(tmp_path):
    (tmp_path / "classes.txt").write_text("red\nblue\n")
    result = runner.invoke(app, ["describe", "classes.txt", "--provider", "none", "-p", "my proj"])
    assert result.exit_code == 0, result.output
    assert "next: dualpt train IMAGES --shots 8 -p 'my proj'" in result.stderr
    quiet = runner.invoke(app, ["describe", "classes.txt", "--provider", "none", "-q"])
    assert quiet.exit_code == 0 and "next:" not in quiet.output and "describing" not in quiet.stderr
    as_json = runner.invoke(app, ["describe", "classes.txt", "--provider", "none", "--json"])
    assert "next:" not in as_json.output and json.loads(as_json.stdout)["classes"]


def test_train_hint_and_quiet(tiny_rn, tmp_path):
    make_image_folder(tmp_path / "images", per_class=2)
    args = [
        "train",
        "images",
        "--shots",
        "1",
        "--model",
        tiny_rn,
        "--pretrained",
        "",
        "--epochs",
        "2",
        "--aug-views",
        "1",
        "--precision",
        "fp32",
        "--device",
        "cpu",
    ]
    loud = runner.invoke(app, args)
    assert loud.exit_code == 0, loud.output
    assert "next: dualpt eval TEST_IMAGES --zero-shot" in loud.stderr and "epoch    2" in loud.stderr
    quiet = runner.invoke(app, [*args, "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert "next:" not in quiet.stderr and "epoch" not in quiet.stderr
    assert "prompt file" in quiet.stdout  # the result is still shown


@pytest.mark.parametrize(
    ("name", "config", "renamed"),
    [
        ("train", TrainConfig, cli_options.TRAIN_FIELDS),
        ("info", TrainConfig, {}),
        ("describe", DescribeConfig, {}),
    ],
)
def test_defaults_are_the_configs(name, config, renamed):
    """An option's default is its config field's default (written once, in the dataclass)."""
    wanted = defaults(config)
    params = {renamed.get(p.name, p.name): p for p in commands()[name].params}
    shared = [field for field in params if field in wanted and field != "project"]
    assert len(shared) >= {"train": 29, "info": 4, "describe": 9}[name]
    for field in shared:
        default = params[field].default
        if name == "train" and field == "shots":
            default = cli_train._parse_shots(default)
        assert default == wanted[field], f"--{field}: {default!r} != {config.__name__}.{field} = {wanted[field]!r}"
