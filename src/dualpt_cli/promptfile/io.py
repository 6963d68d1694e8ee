"""Reading and writing safetensors files: the prompt file and training checkpoints.

The prompt file is self-describing: its safetensors metadata holds the format version, the backbone, the
preprocessing, the class names and every hyperparameter, plus a checksum over tensors and metadata so a
damaged or edited file is refused. Tensors:

- ``ctx``: the learned context, (M, n_ctx, width) shared or (K, M, n_ctx, width) class-specific;
- ``class_features``: the normalised class prompt features w_k, (K, M, d) float32, so predict needs no
  text-encoder pass for the trained classes;
- ``prior_features`` (optional): the zero-shot prior prototypes p_k, (K, d) float32 (description ensemble or
  name prompt, see :mod:`dualpt_cli.model.head`), blended with the DUAL-PT logits by ``prior_weight``;
- ``probe_weights`` (linear-probe files): the fitted class weights, (K, d) float32;
- ``probe_bias`` (LP-CLIP files): the logistic regression's bias, (K,) float32; with it the probe scores the
  raw global feature, ``z W^T + b`` (:mod:`dualpt_cli.model.lpclip`);
- ``residual_weights`` (optional): the residual head r_k added to the blend, (K, d) float32
  (:mod:`dualpt_cli.model.residual`); the blend plus it is divided by the metadata's ``temperature``;
- ``meta_net.*`` (codualpt and cocoop files): the meta-net's Linear weights and biases
  (:mod:`dualpt_cli.model.conditional`);
- ``tip_keys``, ``tip_values`` (tip-adapter and tip-adapter-f files): the cache's keys (n, d) and one-hot values
  (n, K) float32, with ``tip_alpha`` and ``tip_beta`` in the metadata (:mod:`dualpt_cli.model.tip_adapter`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from ..core.project import atomic_write_bytes, read_user_file
from ..core.userfiles import BINARY_CAP
from ..errors import PromptFileError
from .meta import PromptMeta

PROMPT_FORMAT = "dualpt-prompts/1"
CHECKPOINT_FORMAT = "dualpt-checkpoint/1"
REQUIRED_TENSORS = ("ctx", "class_features")


def _checksum(tensors: dict[str, torch.Tensor], header: dict[str, str]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(json.dumps(header, sort_keys=True).encode())
    return h.hexdigest()


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], fmt: str, meta: dict[str, Any]) -> None:
    """Atomically write ``tensors`` with ``meta`` (JSON) and a checksum in the safetensors header."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {"format": fmt, "meta": json.dumps(meta, sort_keys=True, ensure_ascii=False)}
    header["checksum"] = _checksum(tensors, header)
    atomic_write_bytes(Path(path), save(tensors, metadata=header))


def read_safetensors(path: Path, fmt: str, what: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a file written by :func:`write_safetensors`; one clear error for any damage."""
    path = Path(path)
    raw = read_user_file(path, what, PromptFileError, BINARY_CAP)
    try:
        tensors = load(raw)
        header = _header(raw)
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError, OverflowError, RecursionError):
        raise PromptFileError(f"{path} is not a valid {what} (not safetensors, or truncated); re-create it") from None
    found = header.get("format")
    if found != fmt:
        if found and found.split("/")[0] == fmt.split("/")[0]:
            raise PromptFileError(f"{path} has format {found}, this dualpt reads {fmt}; upgrade dualpt or retrain")
        raise PromptFileError(f"{path} is not a dualpt {what} (format {found!r}, expected {fmt})")
    expected = header.pop("checksum", None)
    if expected != _checksum(tensors, {k: v for k, v in header.items()}):
        raise PromptFileError(f"{path} fails its checksum: it was modified or damaged; re-create it")
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError, RecursionError):
        raise PromptFileError(f"{path} has no readable metadata; re-create it") from None
    return tensors, meta


def _header(raw: bytes) -> dict[str, str]:
    n = int.from_bytes(raw[:8], "little")
    if n <= 0 or n > len(raw) - 8:
        raise ValueError("bad header length")
    return dict(json.loads(raw[8 : 8 + n].decode("utf-8")).get("__metadata__") or {})


def save_prompt_file(
    path: Path,
    ctx: torch.Tensor,
    class_features: torch.Tensor,
    meta: PromptMeta,
    prior_features: torch.Tensor | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """``extra``: a method's own tensors (``probe_weights``, ``meta_net.*``; train/method.py's ``Fitted``)."""
    tensors = {**(extra or {}), "ctx": ctx, "class_features": class_features.float()}
    if prior_features is not None:
        tensors["prior_features"] = prior_features.float()
    bad = non_finite(tensors)
    if bad:  # never leave a prompt file that predicts NaN
        raise PromptFileError(
            f"not writing {path}: the learned {bad} has NaN or infinite values (training "
            "diverged); lower --lr and train again"
        )
    write_safetensors(path, tensors, PROMPT_FORMAT, meta.to_dict())


def non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor with a NaN or infinite value, else None."""
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return key
    return None


def read_prompt_file(path: Path) -> tuple[dict[str, torch.Tensor], PromptMeta]:
    """(tensors, metadata) of a prompt file, checked for format, checksum, metadata and consistent shapes."""
    tensors, raw = read_safetensors(path, PROMPT_FORMAT, "prompt file")
    missing = [k for k in REQUIRED_TENSORS if k not in tensors]
    if missing:
        raise PromptFileError(f"{path} lacks tensor(s) {', '.join(missing)}; re-create it with dualpt train")
    meta = PromptMeta.from_dict(raw, path)
    bad = non_finite(tensors)
    if bad:
        raise PromptFileError(
            f"{path}: tensor {bad} has NaN or infinite values (from a diverged training); train again with a lower --lr"
        )
    feats = tensors["class_features"]
    K, M = len(meta.class_names), meta.n_prompts
    if feats.dim() != 3 or feats.shape[0] != K or feats.shape[1] != M or feats.shape[2] != meta.embed_dim:
        raise PromptFileError(f"{path}: class_features shape {tuple(feats.shape)} does not match its metadata")
    prior = tensors.get("prior_features")
    if prior is not None and tuple(prior.shape) != (K, feats.shape[2]):
        raise PromptFileError(f"{path}: prior_features shape {tuple(prior.shape)} does not match its metadata")
    residual = tensors.get("residual_weights")
    if residual is not None and tuple(residual.shape) != (K, feats.shape[2]):
        raise PromptFileError(f"{path}: residual_weights shape {tuple(residual.shape)} does not match its metadata")
    if not meta.dual_weight and not meta.prior_weight:
        raise PromptFileError(
            f"{path}: its metadata gives both the prompts and the prior a weight of 0; re-create it with dualpt train"
        )
    if prior is None and meta.prior_weight:
        raise PromptFileError(
            f"{path}: its metadata blends a zero-shot prior but the file has no prior_features; "
            "re-create it with dualpt train"
        )
    return tensors, meta


def load_prompt_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """:func:`read_prompt_file` with the metadata as its JSON object (for tools and tests that look at it)."""
    tensors, meta = read_prompt_file(path)
    return tensors, meta.to_dict()
