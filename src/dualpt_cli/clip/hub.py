"""Where pretrained weights come from, and failing fast when they cannot come.

open_clip downloads the weights of a pretrained tag (``RN50`` + ``openai``) or an ``hf-hub:`` model from the
Hugging Face hub on first use and caches them. Without a network, huggingface_hub retries for about a minute
before giving up; with ``HF_HUB_OFFLINE`` set it fails at once but with a message that does not say what to
do. :func:`ensure_reachable` runs before a load: weights in the cache load offline without asking the hub;
otherwise it fails in seconds with one message naming what to download and the local alternatives.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlparse

from ..errors import ModelLoadError

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0  # connect (and name lookup) to the hub: a reachable hub answers in well under a second
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's names on the hub
TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Download:
    """What open_clip would download for a model: a hub repository, or (older tags) a plain URL."""

    label: str  # the model as the user named it, e.g. "ViT-B-16 (openai)"
    retry: str  # the dualpt options that load it, e.g. "--model ViT-B-16 --pretrained openai"
    repo_id: str | None = None  # hub repository, e.g. "timm/vit_base_patch16_clip_224.openai"
    filenames: tuple[str, ...] = WEIGHT_FILES  # any one of these in the cache is enough
    url: str | None = None  # plain URL (cached under ~/.cache/clip by open_clip)
    file_option: str = "--model NAME --pretrained FILE"  # how to pass a weights file instead

    @property
    def source(self) -> str:
        return f"{endpoint()}/{self.repo_id}" if self.repo_id else str(self.url)


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT


def offline_by_env() -> bool:
    """True when the user asked for no hub access (``HF_HUB_OFFLINE``, or transformers' ``TRANSFORMERS_OFFLINE``)."""
    return any(os.environ.get(var, "").strip().lower() in TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds (name lookup included)."""
    parts = urlparse(url)
    host = parts.hostname
    if not host:
        return False
    port = parts.port or (80 if parts.scheme == "http" else 443)
    result: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)  # a stuck name lookup ignores socket timeouts
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def cached(download: Download) -> bool:
    """Whether the weights are already on this machine (Hugging Face cache, or open_clip's URL cache)."""
    if download.repo_id:
        from huggingface_hub import try_to_load_from_cache

        return any(isinstance(try_to_load_from_cache(download.repo_id, name), str) for name in download.filenames)
    if download.url:
        name = os.path.basename(urlparse(download.url).path)
        return os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), name))
    return True


def go_offline() -> None:
    """Make huggingface_hub use its cache without asking the hub (it reads HF_HUB_OFFLINE once, at import)."""
    import huggingface_hub.constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True


def ensure_reachable(download: Download) -> None:
    """Return when the weights can be loaded (cached, or the hub answers); raise one clear error otherwise."""
    if cached(download):
        if not offline_by_env() and not reachable(download.source):
            go_offline()  # the cached copy loads at once instead of after a minute of retries
        return
    if offline_by_env():
        why = "HF_HUB_OFFLINE is set"
    elif not reachable(download.source):
        why = f"{urlparse(download.source).netloc} cannot be reached (no network?)"
    else:
        return
    raise ModelLoadError(download_hint(download, why))


def download_hint(download: Download, why: str) -> str:
    """One line: what is missing, why it cannot be fetched, and the three ways to provide it."""
    if download.repo_id:
        where = f"Hugging Face hub repository {download.repo_id}"
        cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME") or "~/.cache/huggingface", "hub"
        )
    else:
        where, cache = download.source, "~/.cache/clip"
    return (
        f"the weights of {download.label} ({where}) are not on this machine, and {why}. Either run "
        f"'dualpt info {download.retry}' on a machine with internet and copy its {cache} folder here, or "
        f"pass weights you have: --model local-dir:DIR (a folder with open_clip_config.json and the weights) "
        f"or {download.file_option}"
    )
