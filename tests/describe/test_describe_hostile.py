"""Issue 12's hostile session, the cases that attack describe: moved from tests/test_hostile.py.

Every case checks the exit code, a one-line error (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from clihelpers import KEY, closed_port, invoke, one_line_error
from dualpt_cli.describe import ask as describe_mod
from dualpt_cli.describe.ask import RetryPolicy
from llm_server import Reply

pytestmark = pytest.mark.usefixtures("fast_retries")


# ---------------------------------------------------------------------------------------------------------
# High 1: describe --force keeps earlier phrases until new ones replace them


def _described(fake, tmp_path, monkeypatch) -> tuple[Path, dict]:
    (tmp_path / "classes.txt").write_text("tiger\nzebra\n")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert invoke("describe", "classes.txt", "--provider", "openai", "--base-url", f"{fake.url}/v1").exit_code == 0
    path = tmp_path / "dualpt-project" / "descriptions.json"
    return path, json.loads(path.read_text())


def test_force_with_dead_server_keeps_phrases(fake, tmp_path, monkeypatch):
    path, before = _described(fake, tmp_path, monkeypatch)
    result = invoke(
        "describe",
        "classes.txt",
        "--force",
        "--provider",
        "openai",
        "--base-url",
        f"http://127.0.0.1:{closed_port()}/v1",
    )
    one_line_error(result, "cannot connect")
    assert json.loads(path.read_text()) == before  # nothing lost


def test_force_with_failing_server_keeps_phrases(fake, tmp_path, monkeypatch):
    path, before = _described(fake, tmp_path, monkeypatch)
    fake.default = lambda cls: Reply(500)
    result = invoke("describe", "classes.txt", "--force", "--provider", "openai", "--base-url", f"{fake.url}/v1")
    one_line_error(result, "2 of 2 classes failed", code=1)
    assert "earlier phrases kept" in result.stdout
    assert json.loads(path.read_text()) == before


def test_force_interrupted_keeps_phrases(fake, tmp_path, monkeypatch):
    path, before = _described(fake, tmp_path, monkeypatch)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(describe_mod, "describe_class", ctrl_c)
    result = invoke("describe", "classes.txt", "--force", "--provider", "openai", "--base-url", f"{fake.url}/v1")
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert json.loads(path.read_text()) == before


def test_force_replaces_class_by_class(fake, tmp_path, monkeypatch):
    path, _ = _described(fake, tmp_path, monkeypatch)
    fake.script("tiger", Reply(content="- orange fur\n- black stripes"))
    fake.default = lambda cls: Reply(500)
    result = invoke("describe", "classes.txt", "--force", "--provider", "openai", "--base-url", f"{fake.url}/v1")
    assert result.exit_code == 1
    entries = {e["folder"]: e for e in json.loads(path.read_text())["classes"]}
    assert entries["tiger"]["phrases"] == ["orange fur", "black stripes"]
    assert entries["zebra"]["status"] == "ok" and entries["zebra"]["phrases"]  # the old ones


# ---------------------------------------------------------------------------------------------------------
# Medium: LLM servers that answer garbage, refuse connections, or carry credentials in the URL


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_non_json_200_body_is_a_failed_answer(api, fake, tmp_path, monkeypatch):
    (tmp_path / "classes.txt").write_text("tiger\n")
    fake.default = lambda cls: Reply(raw=b"<html><body>gateway says hi</body></html>")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    where = ["--base-url", f"{fake.url}/v1"] if api == "openai" else ["--host", fake.url]
    result = invoke("describe", "classes.txt", "--provider", api, *where)
    one_line_error(result, "1 of 1 classes failed", code=1)
    assert "not a chat" in result.output  # the class's own reason is shown
    assert not (tmp_path / "dualpt-project" / "descriptions.json").exists()  # nothing described: no file


@pytest.mark.parametrize(
    "answer",
    ["<html>\x00\x01 {{{", "\x00\x01\x02\x03", "<div>orange fur</div>", "{{ template }}", "\ufffd\ufffd\ufffd"],
)
def test_garbage_answers_are_not_phrases(answer, fake, tmp_path):
    (tmp_path / "classes.txt").write_text("tiger\n")
    fake.default = lambda cls: Reply(content=answer)
    result = invoke("describe", "classes.txt", "--provider", "ollama", "--host", fake.url)
    one_line_error(result, "1 of 1 classes failed", code=1)
    assert not (tmp_path / "dualpt-project" / "descriptions.json").exists()  # no phrase came out of it


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_connection_refused_fails_fast(api, tmp_path, monkeypatch, use_retry):
    use_retry(RetryPolicy())  # the real backoff: retries would take minutes
    (tmp_path / "classes.txt").write_text("tiger\nzebra\nlion\n")
    url = f"http://127.0.0.1:{closed_port()}"
    where = ["--base-url", f"{url}/v1"] if api == "openai" else ["--host", url]
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    t0 = time.perf_counter()
    result = invoke("describe", "classes.txt", "--provider", api, *where)
    assert time.perf_counter() - t0 < 10
    one_line_error(result, "cannot connect", "refused")


@pytest.mark.parametrize("api", ["openai", "ollama"])
def test_unknown_host_fails_fast(api, tmp_path, monkeypatch):
    (tmp_path / "classes.txt").write_text("tiger\nzebra\n")
    url = "http://dualpt-test.invalid:8080"  # .invalid never resolves (RFC 2606)
    where = ["--base-url", f"{url}/v1"] if api == "openai" else ["--host", url]
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    result = invoke("describe", "classes.txt", "--provider", api, *where)
    one_line_error(result, "cannot connect", "unknown host")  # exit 2 for the run, not a failure per class


def test_credentials_in_urls_are_redacted(fake, tmp_path, monkeypatch):
    (tmp_path / "classes.txt").write_text("tiger\n")
    fake.default = lambda cls: Reply(418)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    url = fake.url.replace("http://", "http://alice:pa55word@") + "/v1"
    result = invoke("describe", "classes.txt", "--provider", "openai", "--base-url", url)
    assert result.exit_code == 1
    assert "HTTP 418" in result.output and "alice:***@" in result.output  # the class's error, redacted
    assert not (tmp_path / "dualpt-project" / "descriptions.json").exists()
    printed = invoke("describe", "classes.txt", "--provider", "openai", "--base-url", url + "?api-key=SECRETQ")
    one_line_error(printed, "api-key=***")  # the server has no such route: a run-stopping error, printed
    refused = f"http://bob:hunter22@127.0.0.1:{closed_port()}"
    failed = invoke("describe", "classes.txt", "--provider", "ollama", "--host", refused, "--force")
    one_line_error(failed, "bob:***@")
    stored = "".join(f.read_text(errors="replace") for f in tmp_path.rglob("*") if f.is_file())
    for secret in ("pa55word", "SECRETQ", "hunter22", KEY):
        assert secret not in stored + result.output + printed.output + failed.output
