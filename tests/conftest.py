from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: tests never reach a hub

import pytest  # noqa: E402

from tiny_models import build_tiny_model  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test runs in its own folder, offline, with no real keys or project from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("DUALPT_PROJECT", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OLLAMA_HOST"):
        monkeypatch.delenv(var, raising=False)


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
