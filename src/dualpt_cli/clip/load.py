"""Loading a frozen CLIP: which model a user names, on which device, at which precision.

- :class:`~dualpt_cli.clip.spec.ModelSpec` (in :mod:`spec`): a model as the user names it;
- :func:`select_device`, :func:`select_precision`: ``auto`` resolved for this machine;
- :func:`load_backbone`: open_clip's factory (config lookup, download, weights file) with a one-line
  :class:`~dualpt_cli.errors.ModelLoadError` for every failure, returning a
  :class:`~dualpt_cli.clip.backbone.Backbone`.

open_clip is imported by two modules only: this one (its factory: ``create_model``, configs, pretrained tags,
tokenizer) and :mod:`dualpt_cli.clip.surgery` (the model classes whose insides the backbone reads, and the image
transform). Both import it inside functions, so ``import dualpt_cli`` stays fast.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..core.vocab import PRECISIONS
from ..errors import ModelLoadError
from . import hub
from .backbone import Backbone
from .spec import HF_HUB, LOCAL_DIR, ModelSpec, looks_like_file

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# device and precision


def select_device(device: str = "auto") -> torch.device:
    """cuda > mps > cpu for ``auto``; otherwise the named device, checked to exist."""
    if device in ("", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ModelLoadError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelLoadError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    return dev


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX or AVX-512 bf16 instructions (bf16 autocast is then several times faster)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def select_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 where the hardware runs it fast, fp16 on older GPUs, fp32 otherwise."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ModelLoadError(f"unknown precision {precision!r}; use auto, bf16, fp16 or fp32")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and cpu_has_fast_bf16():
            return "bf16"
        return "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ModelLoadError("--precision fp16 is not supported on CPU; use bf16 or fp32")
    return precision


# ---------------------------------------------------------------------------------------------------------
# loading


_SHARED: dict[tuple, Backbone] | None = None  # the backbones loaded inside shared_backbones(), by what they are


@contextlib.contextmanager
def shared_backbones() -> Iterator[None]:
    """Within this block, loading the same CLIP again (same weights, device, precision) returns the one already
    loaded: ``dualpt compare`` trains and evaluates many cells on one model and loads it once. A backbone is
    frozen (no parameter trains, its modules stay in eval mode), so sharing it changes no result."""
    global _SHARED
    outer, _SHARED = _SHARED, {} if _SHARED is None else _SHARED
    try:
        yield
    finally:
        _SHARED = outer


def load_backbone(spec: ModelSpec, device: str | torch.device = "auto", precision: str = "auto") -> Backbone:
    """Load a frozen CLIP named by ``spec`` onto ``device``; one-line errors for every failure."""
    dev = device if isinstance(device, torch.device) else select_device(device)
    prec = select_precision(precision, dev)
    key = (spec.resolved(), str(dev), prec)
    if _SHARED is not None and key in _SHARED:
        shared = copy.copy(_SHARED[key])  # the same modules, under the name this caller gave
        shared.spec = spec
        return shared
    model, preprocess_cfg, tokenizer = _create(spec)
    bb = Backbone(model, tokenizer, preprocess_cfg, spec, dev, prec)
    if _SHARED is not None:
        _SHARED[key] = bb
    return bb


def _create(spec: ModelSpec) -> tuple[Any, dict[str, Any], Any]:
    import open_clip  # here, not at the top: importing it takes seconds that --help should not pay

    name, pretrained = spec.resolved()
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR) :]).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(
                f"model folder {folder} does not exist; pass local-dir:<folder with open_clip_config.json and weights>"
            )
        if not (folder / "open_clip_config.json").is_file():
            raise ModelLoadError(
                f"model folder {folder} has no open_clip_config.json; it is not an open_clip local-dir model"
            )
        name = LOCAL_DIR + str(folder)
    elif not name.startswith(HF_HUB) and open_clip.get_model_config(name.replace("/", "-")) is None:
        raise ModelLoadError(
            f"unknown model {spec.name!r}; use a built-in name such as RN50 or ViT-B-16 (see "
            "open_clip.list_models()), hf-hub:org/name, or local-dir:/path/to/folder"
        )
    if pretrained and not os.path.isfile(pretrained) and looks_like_file(pretrained):
        raise ModelLoadError(f"weights file {pretrained} (--pretrained) does not exist")
    if pretrained and not os.path.isfile(pretrained):
        tags = open_clip.list_pretrained_tags_by_model(name.replace("/", "-"))
        if pretrained not in tags:
            hint = f"known tags for {name}: {', '.join(tags)}" if tags else f"{name} has no known tags"
            raise ModelLoadError(f"--pretrained {pretrained!r} is neither a weights file nor a tag; {hint}")
    require = bool(pretrained) or name.startswith((LOCAL_DIR, HF_HUB))
    weights_file = pretrained if pretrained and os.path.isfile(pretrained) else None
    download = _download_for(open_clip, spec, name, None if weights_file else pretrained)
    if download is not None:
        hub.ensure_reachable(download)  # seconds, not a minute of hub retries, when there is no network
    with _root_log_records() as records:
        model, tokenizer = _create_model(open_clip, spec, name, pretrained, weights_file, require)
    for record in records:  # open_clip's own warnings, once the load worked (a failure says it all)
        if record.levelno >= logging.WARNING:
            log.warning(record.getMessage())
    model.eval().requires_grad_(False)
    preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    return model, preprocess_cfg, tokenizer


def _create_model(
    open_clip: Any, spec: ModelSpec, name: str, pretrained: str | None, weights_file: str | None, require: bool
) -> tuple[Any, Any]:
    loads = bool(weights_file) or require  # every weight comes from a file (open_clip loads strictly)
    try:
        with _unfilled_init() if loads else contextlib.nullcontext():
            model = _build(open_clip, name, pretrained, weights_file, require)
        if loads and not _all_filled(model):  # something the file did not hold: build it as open_clip does
            model = _build(open_clip, name, pretrained, weights_file, require)
        tokenizer = open_clip.get_tokenizer(name)
    except ModelLoadError:
        raise
    except Exception as exc:  # open_clip raises many kinds; all mean "could not load"
        raise ModelLoadError(_load_failure_message(spec, exc)) from None
    return model, tokenizer


def _build(open_clip: Any, name: str, pretrained: str | None, weights_file: str | None, require: bool) -> Any:
    if name.startswith(LOCAL_DIR) and weights_file:
        # a weights file beside a config: build from the config, then load that file
        model = open_clip.create_model(name, require_pretrained=False, weights_only=True)
        open_clip.load_checkpoint(model, weights_file, strict=True, weights_only=True)
        return model
    # OpenAI's weights were trained with QuickGELU: follow the tag, as open_clip only warns
    quick = bool(pretrained and open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu"))
    return open_clip.create_model(
        name, pretrained=pretrained, require_pretrained=require, force_quick_gelu=quick, weights_only=True
    )


_RANDOM_INITS = (
    "normal_",
    "uniform_",
    "trunc_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "xavier_uniform_",
    "xavier_normal_",
    "orthogonal_",
)


@contextlib.contextmanager
def _unfilled_init() -> Iterator[None]:
    """``torch.nn.init``'s random fills write NaN instead while a model whose weights are then loaded is built.

    Drawing random numbers for a hundred million weights that the file overwrites took half a second of every
    ``dualpt predict`` (RN50); a NaN fill is a memory write. Nothing here reads the global random state
    afterwards (every draw in dualpt has its own seeded generator), and :func:`_all_filled` checks that the
    file overwrote every NaN."""
    from torch.nn import init

    saved = {fn: getattr(init, fn) for fn in _RANDOM_INITS}

    def nan_fill(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.no_grad():
            return tensor.fill_(float("nan"))

    try:
        for fn in _RANDOM_INITS:
            setattr(init, fn, nan_fill)
        yield
    finally:
        for fn, original in saved.items():
            setattr(init, fn, original)


def _all_filled(model: Any) -> bool:
    """True when no floating-point parameter or buffer of ``model`` holds a NaN."""
    tensors = [*model.parameters(), *model.buffers()]
    return not any(t.is_floating_point() and bool(torch.isnan(t).any()) for t in tensors)


def _download_for(open_clip: Any, spec: ModelSpec, name: str, pretrained: str | None) -> hub.Download | None:
    """What open_clip will fetch from the network for this model, if anything."""
    if name.startswith(HF_HUB):
        return hub.Download(
            label=spec.label, retry=f"--model {name}", repo_id=name[len(HF_HUB) :], filenames=("open_clip_config.json",)
        )
    if not pretrained or name.startswith(LOCAL_DIR):
        return None
    cfg = open_clip.get_pretrained_cfg(name, pretrained) or {}
    retry, file_option = f"--model {spec.name} --pretrained {pretrained}", f"--model {spec.name} --pretrained FILE"
    if cfg.get("hf_hub"):
        repo_id, filename = os.path.split(cfg["hf_hub"])  # "org/repo/" or "org/repo/file.bin"
        filenames = (filename, os.path.splitext(filename)[0] + ".safetensors") if filename else hub.WEIGHT_FILES
        return hub.Download(
            label=spec.label, retry=retry, repo_id=repo_id, filenames=filenames, file_option=file_option
        )
    if cfg.get("url"):
        return hub.Download(label=spec.label, retry=retry, url=cfg["url"], file_option=file_option)
    return None


@contextlib.contextmanager
def _root_log_records() -> Iterator[list[logging.LogRecord]]:
    """Collect what is logged on the root logger (open_clip logs there) instead of printing it.

    open_clip logs an error just before raising the same text as an exception; printed, it would duplicate
    the one-line message the CLI gives. Named loggers (huggingface_hub's) are not affected.
    """
    records: list[logging.LogRecord] = []

    class Keep(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            records.append(record)
            return False

    root, keep = logging.getLogger(), Keep()
    root.addFilter(keep)
    try:
        yield records
    finally:
        root.removeFilter(keep)


def _load_failure_message(spec: ModelSpec, exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 300:
        text = text[:300].rsplit(" ", 1)[0] + " ..."  # cut between words
    offline = any(
        w in text.lower()
        for w in ("connect", "offline", "resolve", "network", "hf_hub", "huggingface", "download", "url")
    )
    if offline:
        return (
            f"cannot download weights for {spec.label}: {text}. Download them on a machine with internet "
            "(open_clip caches them under ~/.cache/huggingface) or point to local weights with "
            "--model local-dir:/path or --pretrained /path/to/weights.safetensors"
        )
    return f"cannot load model {spec.label}: {text}. Check the weights file or folder (is it complete?)"
