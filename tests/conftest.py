from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: tests never reach a hub
# never the real per-user feature cache; session fixtures run before the per-test folder below is set
os.environ["DUALPT_CACHE"] = os.path.join(tempfile.gettempdir(), f"dualpt-test-cache-{os.getpid()}")

import pytest  # noqa: E402

from imagegen import make_image_folder  # noqa: E402
from llm_server import FakeLLM  # noqa: E402
from tiny_models import build_tiny_model  # noqa: E402
from trained import TRAINED_CLASSES, trained_project  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "images(**kwargs): make_image_folder arguments for the `images` fixture")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test runs in its own folder, offline, with no real keys or project from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DUALPT_CACHE", str(tmp_path / "user-cache"))  # never the real per-user cache
    for var in ("DUALPT_PROJECT", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OLLAMA_HOST", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def fake():
    """The scripted LLM server of tests/llm_server.py on 127.0.0.1, stopped after the test."""
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_rn(tmp_path_factory) -> str:
    """``local-dir:`` spec of a tiny ModifiedResNet CLIP (96 px, 3x3 local features)."""
    return "local-dir:" + str(build_tiny_model("rn", tmp_path_factory.mktemp("tiny-rn")))


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> str:
    """``local-dir:`` spec of a tiny ViT CLIP (64 px, patch 16: 4x4 local features)."""
    return "local-dir:" + str(build_tiny_model("vit", tmp_path_factory.mktemp("tiny-vit")))


@pytest.fixture(params=["rn", "vit"])
def tiny_model(request, tiny_rn, tiny_vit) -> str:
    """Both tiny model families, one after the other."""
    return {"rn": tiny_rn, "vit": tiny_vit}[request.param]


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_rn):
    """(folder, TrainConfig) of tiny prompts trained once on the tiny ResNet, for predict and eval tests."""
    return trained_project(tmp_path_factory, tiny_rn)


@pytest.fixture
def project(trained, tmp_path) -> Path:
    """A copy of the trained tiny project (never the session's own: a failing test must not damage it)."""
    return Path(shutil.copytree(trained[0] / "proj", tmp_path / "proj"))


@pytest.fixture
def prompts(trained) -> str:
    return str(trained[0] / "proj" / "prompts.safetensors")


@pytest.fixture
def test_images(tmp_path):
    """A labelled test folder of the trained classes."""
    return make_image_folder(tmp_path / "test", classes=TRAINED_CLASSES, per_class=2, seed=7)


@pytest.fixture
def images(request, tmp_path) -> Path:
    """``./images``: three classes of four generated pictures, or what the test's ``images`` mark asks for
    (``pytest.mark.images(classes=..., per_class=..., seed=...)``: the arguments of ``make_image_folder``)."""
    mark = request.node.get_closest_marker("images")
    return make_image_folder(tmp_path / "images", **{"per_class": 4, **(mark.kwargs if mark else {})})


@pytest.fixture
def victim(tmp_path) -> Path:
    """One picture of a trained class, for outputs that must not overwrite it."""
    folder = make_image_folder(tmp_path / "imgs", classes=TRAINED_CLASSES[:1], per_class=2, seed=3)
    return sorted(folder.rglob("*.png"))[0]


@pytest.fixture
def use_retry(monkeypatch):
    """``use_retry(policy)``: the ``dualpt describe`` command runs with this retry policy (a DescribeConfig field)."""
    from dataclasses import replace

    from dualpt_cli.ui import describe as describe_ui

    run = describe_ui.describe

    def use(policy) -> None:
        monkeypatch.setattr(describe_ui, "describe", lambda cfg, **kw: run(replace(cfg, retry=policy), **kw))

    return use


@pytest.fixture
def fast_retries(monkeypatch, use_retry):
    """No proxy (the fake LLM server is on 127.0.0.1) and ``describe`` retries in hundredths of a second: the
    hostile sessions apply it with ``pytestmark = pytest.mark.usefixtures("fast_retries")``."""
    from dualpt_cli.describe.ask import RetryPolicy

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    use_retry(RetryPolicy(attempts=3, base=0.01, cap=0.02, retry_after_cap=1))
