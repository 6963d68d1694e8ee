"""``dualpt describe`` end to end: the real CLI, the real openai/ollama clients, a scripted local server."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.core.project import resolve_project
from dualpt_cli.data.descriptions import load_descriptions, phrases_by_folder
from dualpt_cli.describe.ask import DescribeConfig, RetryPolicy, plan_describe, query_for, run_describe
from dualpt_cli.describe.phrases import parse_phrases
from dualpt_cli.errors import ProjectError
from llm_server import FakeLLM, Reply

KEY = "sk-test-SECRET-never-stored-123"
FAST = RetryPolicy(attempts=4, base=0.01, cap=0.05, retry_after_cap=3)
QUERY_TIGER = (
    "Q: What are the useful features for distinguishing a tiger in a photo? "
    "Please just give me a list of short phrases. Answer: -"
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, use_retry):
    """No real keys, servers or proxies; fast retries."""
    for var in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OLLAMA_HOST",
        "OLLAMA_API_KEY",
        "DUALPT_PROJECT",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(var, raising=False)
    use_retry(FAST)


@pytest.fixture
def classes(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# animals\ntiger\nhouse_cat: house cat\n\nzebra\n", encoding="utf-8")
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, ["describe", *map(str, args)])


def openai_args(fake: FakeLLM, monkeypatch) -> list[str]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return ["--provider", "openai", "--base-url", f"{fake.url}/v1"]


def ollama_args(fake: FakeLLM) -> list[str]:
    return ["--provider", "ollama", "--host", fake.url]


def stored(tmp_path) -> dict[str, dict]:
    return {e["folder"]: e for e in load_descriptions(resolve_project(tmp_path / "dualpt-project"))}


# ---------------------------------------------------------------------------------------------------------
# answers -> phrases


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("- orange fur\n- black stripes\n* white belly.", ["orange fur", "black stripes", "white belly"]),
        ("1. Orange fur\n2) black stripes\n3. orange FUR", ["Orange fur", "black stripes"]),
        ("orange fur\n- black stripes", ["orange fur", "black stripes"]),  # the query ends with "-"
        ('{"phrases": ["orange fur", "- black stripes"]}', ["orange fur", "black stripes"]),
        ('```json\n["orange fur", "black stripes"]\n```', ["orange fur", "black stripes"]),
        ("Here are some features:\n- **orange fur**\n- black stripes", ["orange fur", "black stripes"]),
        (
            "A tiger has orange fur with black stripes, a white belly, and large paws. "
            "They have amber eyes and a long tail that helps them balance while running fast.",
            [
                "orange fur with black stripes",
                "a white belly",
                "large paws",
                "amber eyes",
                "a long tail that helps them balance while running fast",
            ],
        ),
        ("- tiger\n- a tiger\n- photo of a tiger\n- Tigers\n- stripes", ["stripes"]),
        ("I'm sorry, but I can't help with that.", []),
        ("No.\nN/A\nnone", []),
        ("", []),
        ("- " + "very " * 20 + "long line", []),
    ],
    ids=[
        "bullets",
        "numbers",
        "first-line-bare",
        "json",
        "fenced-json",
        "preamble",
        "prose",
        "restate",
        "refusal",
        "non-answers",
        "empty",
        "overlong",
    ],
)
def test_parse_phrases(answer, expected):
    assert parse_phrases(answer, "tiger") == expected


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("green colour, four equal sides; right angles", ["green colour", "four equal sides", "right angles"]),
        (
            "Here are some useful features for distinguishing a tiger in a photo:\n\n"
            "1. **Coat**: orange fur, black vertical stripes\n2. **Face**: white markings around the eyes; "
            "rounded ears\n3. Large, muscular build\n4. A long, striped tail\n\n"
            "These features should help you identify a tiger.",
            [
                "Coat: orange fur",
                "black vertical stripes",
                "Face: white markings around the eyes",
                "rounded ears",
                "Large, muscular build",
                "A long, striped tail",
            ],
        ),
        (
            "Orange fur, black stripes, white belly, amber eyes.",
            ["Orange fur", "black stripes", "white belly", "amber eyes"],
        ),
        ("- stripes, whiskers, tail\n- 1,000 tiny spots", ["stripes", "whiskers", "tail", "1,000 tiny spots"]),
        (
            "* small, pointed ears; long tail\n* red, white and blue stripes\nI hope this helps!",
            ["small, pointed ears", "long tail", "red, white and blue stripes"],
        ),
    ],
    ids=[
        "commas-and-semicolons",
        "llm-numbered-with-labels",
        "one-line-list",
        "single-words-and-numbers",
        "adjectives-and-closing",
    ],
)
def test_phrases_split_at_commas_and_semicolons(answer, expected):
    """docs/describe.md: split at commas and semicolons, except after a lone adjective."""
    assert parse_phrases(answer, "tiger") == expected


def test_query_is_the_papers_verbatim():
    assert query_for("tiger") == QUERY_TIGER


# ---------------------------------------------------------------------------------------------------------
# openai


def test_openai_normal_run(fake, classes, tmp_path, monkeypatch):
    result = invoke(classes, *openai_args(fake, monkeypatch))
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "dualpt-project" / "descriptions.json").read_text(encoding="utf-8"))
    assert data["format"] == "dualpt-descriptions/1"
    assert [e["folder"] for e in data["classes"]] == ["tiger", "house_cat", "zebra"]  # classes.txt order
    tiger = data["classes"][0]
    assert tiger["status"] == "ok" and tiger["error"] is None
    assert tiger["phrases"] == ["distinctive tiger shape", "typical tiger colour", "fine texture"]
    prov = tiger["provenance"]
    assert prov["provider"] == "openai" and prov["model"] == "gpt-4o-mini"
    assert prov["temperature"] == 0.7 and prov["samples"] == 1 and prov["query"] == QUERY_TIGER
    assert prov["time"].endswith("Z")
    assert data["classes"][1]["name"] == "house cat"
    request = fake.asked("tiger")[0]
    assert request.body["messages"] == [{"role": "user", "content": QUERY_TIGER}]
    assert request.body["temperature"] == 0.7
    assert request.body["response_format"]["type"] == "json_schema"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in (tmp_path / "dualpt-project" / "descriptions.json").read_text()
    assert KEY not in result.output
    assert "house cat" in result.output and "3 described" in result.output


def test_json_structured_answer_and_samples_are_merged(fake, classes, monkeypatch, tmp_path):
    fake.script(
        "tiger",
        Reply(content='{"phrases": ["orange fur", "stripes"]}'),
        Reply(content="- Stripes\n- white belly"),
        Reply(content="1. long tail"),
    )
    result = invoke(classes, *openai_args(fake, monkeypatch), "--samples", "3", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    tiger = next(e for e in out["classes"] if e["folder"] == "tiger")
    assert tiger["phrases"] == ["orange fur", "stripes", "white belly", "long tail"]
    assert tiger["provenance"]["samples"] == 3
    assert len(fake.asked("tiger")) == 3


def test_server_without_json_schema_falls_back_to_plain_lists(fake, classes, monkeypatch, tmp_path):
    fake.script("tiger", Reply(400))
    result = invoke(classes, *openai_args(fake, monkeypatch), "--concurrency", "1")
    assert result.exit_code == 0, result.output
    first, second = fake.asked("tiger")
    assert "response_format" in first.body and "response_format" not in second.body
    assert stored(tmp_path)["tiger"]["status"] == "ok"


def test_empty_answer_is_asked_again(fake, classes, monkeypatch, tmp_path):
    fake.script("tiger", Reply(content=""), Reply(content="- orange fur"))
    assert invoke(classes, *openai_args(fake, monkeypatch)).exit_code == 0
    assert len(fake.asked("tiger")) == 2
    assert stored(tmp_path)["tiger"]["phrases"] == ["orange fur"]


def test_429_honours_retry_after(fake, classes, monkeypatch, tmp_path):
    fake.script("tiger", Reply(429, headers={"Retry-After": "1"}))
    start = time.monotonic()
    assert invoke(classes, *openai_args(fake, monkeypatch)).exit_code == 0
    assert time.monotonic() - start >= 0.9  # the backoff alone would be ~0.01 s
    assert len(fake.asked("tiger")) == 2 and stored(tmp_path)["tiger"]["status"] == "ok"


def test_500s_then_success(fake, classes, monkeypatch, tmp_path):
    fake.script("tiger", Reply(500), Reply(502), Reply(503))
    assert invoke(classes, *openai_args(fake, monkeypatch)).exit_code == 0
    assert len(fake.asked("tiger")) == 4  # max_retries=0: only our policy retries
    assert stored(tmp_path)["tiger"]["status"] == "ok"


def test_timeout_is_retried(fake, classes, monkeypatch, tmp_path):
    fake.script("tiger", Reply(content="- slow", delay=1.5))
    result = invoke(classes, *openai_args(fake, monkeypatch), "--timeout", "0.4")
    assert result.exit_code == 0, result.output
    assert len(fake.asked("tiger")) == 2
    assert stored(tmp_path)["tiger"]["phrases"][0] == "distinctive tiger shape"


def test_garbage_forever_fails_one_class_keeps_the_others_then_resumes(fake, classes, monkeypatch, tmp_path):
    fake.script("tiger", *[Reply(content="I'm sorry, I cannot help with that.")] * 3)
    args = openai_args(fake, monkeypatch)
    result = invoke(classes, *args)
    assert result.exit_code == 1
    assert "1 of 3 classes failed (tiger)" in result.output and "Traceback" not in result.output
    entries = stored(tmp_path)
    assert entries["tiger"]["status"] == "failed" and entries["tiger"]["phrases"] == []
    assert "no usable phrases" in entries["tiger"]["error"]
    assert entries["zebra"]["status"] == entries["house_cat"]["status"] == "ok"
    assert len(fake.asked("tiger")) == 3  # class_attempts rounds

    # resume: only the failed class is asked again
    before = len(fake.requests)
    result = invoke(classes, *args)
    assert result.exit_code == 0, result.output
    assert [r.cls for r in fake.requests[before:]] == ["tiger"]
    assert stored(tmp_path)["tiger"]["status"] == "ok"


def test_server_errors_forever_fail_the_class(fake, classes, monkeypatch, tmp_path):
    fake.script("zebra", *[Reply(503)] * 4)
    result = invoke(classes, *openai_args(fake, monkeypatch))
    assert result.exit_code == 1
    assert "gave up after 4 tries" in stored(tmp_path)["zebra"]["error"]


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("failure", ["unreachable", "bad key", "every class fails"])
def test_a_run_that_describes_no_class_leaves_no_file(fake, classes, monkeypatch, tmp_path, failure):
    """A new project keeps no descriptions.json that train would take for (empty) descriptions."""
    args = openai_args(fake, monkeypatch)
    if failure == "unreachable":
        args = ["--provider", "openai", "--base-url", f"http://127.0.0.1:{_closed_port()}/v1"]
    elif failure == "bad key":
        fake.default = lambda cls: Reply(401)
    else:
        fake.default = lambda cls: Reply(503)
    result = invoke(classes, *args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert not (tmp_path / "dualpt-project" / "descriptions.json").exists()
    if failure == "every class fails":
        assert "3 failed -> no file written (no class was described)" in " ".join(result.output.split())


def test_a_failed_rerun_keeps_the_file_it_had(fake, classes, monkeypatch, tmp_path):
    args = openai_args(fake, monkeypatch)
    assert invoke(classes, *args).exit_code == 0
    fake.default = lambda cls: Reply(503)
    assert invoke(classes, *args, "--force").exit_code == 1
    assert {e["status"] for e in stored(tmp_path).values()} == {"ok"}  # earlier phrases kept


def test_rerun_skips_described_force_redoes_and_new_classes_are_picked_up(fake, classes, monkeypatch):
    args = openai_args(fake, monkeypatch)
    assert invoke(classes, *args).exit_code == 0
    assert len(fake.requests) == 3
    assert invoke(classes, *args).exit_code == 0
    assert len(fake.requests) == 3  # nothing left to ask
    classes.write_text(classes.read_text() + "lion\n", encoding="utf-8")
    assert invoke(classes, *args).exit_code == 0
    assert [r.cls for r in fake.requests[3:]] == ["lion"]
    assert invoke(classes, *args, "--force").exit_code == 0
    assert len(fake.requests) == 8


def test_removed_class_is_dropped_with_a_warning(fake, classes, monkeypatch, tmp_path):
    args = openai_args(fake, monkeypatch)
    assert invoke(classes, *args).exit_code == 0
    classes.write_text("zebra\ntiger\n", encoding="utf-8")
    result = invoke(classes, *args)
    assert result.exit_code == 0 and "house_cat" in result.output
    assert list(stored(tmp_path)) == ["zebra", "tiger"]


def test_bad_api_key_stops_with_one_line(fake, classes, monkeypatch):
    fake.default = lambda cls: Reply(401)
    result = invoke(classes, *openai_args(fake, monkeypatch))
    assert result.exit_code == 2
    assert "rejected the API key" in result.output and KEY not in result.output


# ---------------------------------------------------------------------------------------------------------
# ollama


@pytest.mark.parametrize(
    "content, expected",
    [
        ("- stripes\n- whiskers", ["stripes", "whiskers"]),
        ("1. stripes\n2. whiskers", ["stripes", "whiskers"]),
        ('{"phrases": ["stripes", "whiskers"]}', ["stripes", "whiskers"]),
        (
            "It has stripes, whiskers, a long tail and sharp claws; it is often seen stalking prey in grass.",
            ["stripes", "whiskers"],
        ),
    ],
    ids=["bulleted", "numbered", "json", "prose"],
)
def test_ollama_answer_formats(fake, classes, tmp_path, content, expected):
    fake.script("tiger", Reply(content=content))
    result = invoke(classes, *ollama_args(fake))
    assert result.exit_code == 0, result.output
    tiger = stored(tmp_path)["tiger"]
    assert tiger["phrases"][:2] == expected
    assert tiger["provenance"]["provider"] == "ollama" and tiger["provenance"]["model"] == "llama3.2"
    body = fake.asked("tiger")[0].body
    assert body["options"]["temperature"] == 0.7 and body["format"]["type"] == "object"


def test_ollama_missing_model_names_ollama_pull(fake, classes):
    result = invoke(classes, *ollama_args(fake), "--model", "llama9")
    assert result.exit_code == 2
    assert "ollama pull llama9" in result.output and "Traceback" not in result.output


def test_unicode_class_names(fake, tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("café_crème: café crème\n猫\nÄpfel\n", encoding="utf-8")
    result = invoke(path, *ollama_args(fake))
    assert result.exit_code == 0, result.output
    text = (tmp_path / "dualpt-project" / "descriptions.json").read_text(encoding="utf-8")
    assert "café crème" in text and "猫" in text  # stored as text, not \\u escapes
    assert {r.cls for r in fake.requests} == {"café crème", "猫", "Äpfel"}
    assert stored(tmp_path)["猫"]["phrases"][0] == "distinctive 猫 shape"


# ---------------------------------------------------------------------------------------------------------
# none, auto


def test_none_provider_writes_classes_without_phrases(fake, classes, tmp_path):
    result = invoke(classes, "--provider", "none")
    assert result.exit_code == 0, result.output
    assert "without LLM context" in result.output and "beta = 0" in result.output
    entries = stored(tmp_path)
    assert [e["status"] for e in entries.values()] == ["none"] * 3
    assert all(e["phrases"] == [] for e in entries.values())
    assert entries["tiger"]["provenance"]["provider"] == "none"
    assert fake.requests == []


def test_example_class_list_works_offline(tmp_path):
    from pathlib import Path

    example = Path(__file__).parents[2] / "examples" / "shapes" / "classes.txt"
    result = invoke(example, "--provider", "none", "--project", tmp_path / "p")
    assert result.exit_code == 0, result.output
    assert "red_circle" in phrases_by_folder(load_descriptions(resolve_project(tmp_path / "p")))


def test_auto_prefers_openai_when_a_key_is_set(fake, classes, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{fake.url}/v1")
    assert invoke(classes).exit_code == 0
    assert {r.api for r in fake.requests} == {"openai"}


def test_auto_uses_a_running_ollama(fake, classes, monkeypatch, tmp_path):
    monkeypatch.setenv("OLLAMA_HOST", fake.url)
    assert invoke(classes).exit_code == 0
    assert {r.api for r in fake.requests} == {"ollama"}
    assert stored(tmp_path)["tiger"]["provenance"]["provider"] == "ollama"


def test_auto_with_nothing_available_lists_the_choices(classes, monkeypatch):
    closed = FakeLLM()  # bound, never started, then closed: nothing answers on its port
    url = closed.url
    closed.server.server_close()
    monkeypatch.setenv("OLLAMA_HOST", url)
    result = invoke(classes)
    assert result.exit_code == 2
    for choice in ("--provider openai", "--provider ollama", "--provider none"):
        assert choice in result.output


def test_openai_without_key_or_base_url(classes):
    result = invoke(classes, "--provider", "openai")
    assert result.exit_code == 2 and "OPENAI_API_KEY is not set" in result.output


# ---------------------------------------------------------------------------------------------------------
# input errors, --show, storage


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.txt", "--provider", "none"], "missing.txt does not exist"),
        ([], "missing classes.txt"),
        (["CLASSES", "--provider", "gpt"], "'gpt' is not one of"),
        (["CLASSES", "--samples", "0"], "--samples must be at least 1, got 0"),
    ],
)
def test_bad_input_is_one_clean_line(classes, args, message):
    result = invoke(*[str(classes) if a == "CLASSES" else a for a in args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_show(fake, classes, monkeypatch, tmp_path):
    assert invoke("--show").exit_code == 2  # nothing stored yet
    assert invoke(classes, *openai_args(fake, monkeypatch)).exit_code == 0
    result = invoke("--show")
    assert result.exit_code == 0 and "house cat" in result.output and "- fine texture" in result.output
    result = invoke("--show", "House Cat", "--json")
    assert result.exit_code == 0
    assert [e["folder"] for e in json.loads(result.stdout)] == ["house_cat"]
    result = invoke("--show", "lion")
    assert result.exit_code == 2 and "'lion'" in result.output


def test_load_descriptions(tmp_path):
    project = resolve_project(tmp_path / "p")
    assert load_descriptions(project) is None
    project.ensure()
    project.descriptions.write_text('{"format": "other", "classes": []}')
    with pytest.raises(ProjectError, match="damaged"):
        load_descriptions(project)
    project.descriptions.write_text("{not json")
    with pytest.raises(ProjectError, match="not valid JSON"):
        load_descriptions(project)


def test_ctrl_c_keeps_finished_classes(fake, classes, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cfg = DescribeConfig(
        classes,
        resolve_project(tmp_path / "p"),
        provider="openai",
        base_url=f"{fake.url}/v1",
        concurrency=1,
        retry=FAST,
    )

    def interrupt(entry):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_describe(plan_describe(cfg), on_done=interrupt)
    kept = load_descriptions(cfg.project)
    assert [e["folder"] for e in kept] == ["tiger"] and kept[0]["status"] == "ok"
