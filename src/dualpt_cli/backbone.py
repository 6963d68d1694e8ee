"""The frozen CLIP backbone: the only module that imports open_clip.

Everything else talks to :class:`Backbone`:

- :meth:`Backbone.encode_images` -> global feature ``(B, d)`` and local features ``(B, N, d)``, both in
  CLIP's joint space (method card, "Frozen CLIP parts");
- :meth:`Backbone.encode_text_embeds` -> text features from token embeddings with learnable vectors
  spliced in, pooled at the EOT position the way open_clip pools for that model;
- :meth:`Backbone.encode_text_prefixed` -> the same, with a prefix (SOS + context) shared by many
  suffixes (class names) computed once: exact under the causal mask;
- the model's own image preprocessing, the tokenizer, device and precision.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import hub
from .errors import ModelLoadError

log = logging.getLogger(__name__)

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"


@dataclass(frozen=True)
class ModelSpec:
    """Which CLIP to load, as a user names it."""

    name: str = "RN50"  # built-in name, "hf-hub:org/name", "local-dir:/path", or a folder/weights file path
    pretrained: str = "openai"  # tag for a built-in name, or a weights file; "" or "none" = random weights

    def resolved(self) -> tuple[str, str | None]:
        """(open_clip model name, pretrained argument) after interpreting plain paths."""
        name, pretrained = self.name.strip(), (self.pretrained or "").strip()
        if pretrained.lower() in ("", "none", "random"):
            pretrained = ""
        # a folder model takes a weights file from --pretrained (a tag such as the default "openai" means
        # "the folder's own weights"); absolute paths, so a prompt file naming them works from any folder
        weights = os.path.abspath(Path(pretrained).expanduser()) if _looks_like_file(pretrained) else None
        if name.startswith(LOCAL_DIR):
            return LOCAL_DIR + os.path.abspath(Path(name[len(LOCAL_DIR) :]).expanduser()), weights
        if name.startswith(HF_HUB):
            if weights:
                raise ModelLoadError(f"--pretrained {pretrained} cannot be combined with an {HF_HUB} model; "
                                     f"pass the weights' folder with --model {LOCAL_DIR}/path")
            return name, None
        path = Path(name).expanduser()
        if path.is_dir():
            return LOCAL_DIR + str(path.resolve()), weights
        if path.suffix in (".safetensors", ".pt", ".pth", ".bin") or path.is_file():
            return _weights_file_spec(path)
        return name, pretrained or None

    @property
    def label(self) -> str:
        name, pretrained = self.resolved()
        return f"{name} ({pretrained})" if pretrained else name

    @property
    def display(self) -> str:
        """:attr:`label` with paths under the current folder shown relative to it (for terminal output)."""
        name, pretrained = self.resolved()
        if name.startswith(LOCAL_DIR):
            name = LOCAL_DIR + _relative_to_cwd(name[len(LOCAL_DIR) :])
        if pretrained and os.path.isabs(pretrained):
            pretrained = _relative_to_cwd(pretrained)
        return f"{name} ({pretrained})" if pretrained else name


def _relative_to_cwd(path: str) -> str:
    """``path`` relative to the current folder when it lies under it, else unchanged."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _looks_like_file(pretrained: str) -> bool:
    """A --pretrained value that names a file (a path or a weights suffix) rather than a tag."""
    return bool(pretrained) and (os.sep in pretrained or "/" in pretrained or os.path.isfile(pretrained)
                                 or Path(pretrained).suffix in (".safetensors", ".pt", ".pth", ".bin"))


def _weights_file_spec(path: Path) -> tuple[str, str]:
    """A weights file given as --model: its folder must hold open_clip_config.json."""
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist")
    if not (path.parent / "open_clip_config.json").is_file():
        raise ModelLoadError(
            f"{path} is a weights file without an open_clip_config.json beside it; pass the architecture "
            f"with --model (e.g. RN50) and the file with --pretrained {path}"
        )
    return LOCAL_DIR + str(path.parent.resolve()), str(path.resolve())


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
    if precision not in ("auto", "fp32", "bf16", "fp16"):
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


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------------------
# loading


def load_backbone(spec: ModelSpec, device: str | torch.device = "auto", precision: str = "auto") -> Backbone:
    """Load a frozen CLIP named by ``spec`` onto ``device``; one-line errors for every failure."""
    dev = device if isinstance(device, torch.device) else select_device(device)
    prec = select_precision(precision, dev)
    model, preprocess_cfg, tokenizer = _create(spec)
    return Backbone(model, tokenizer, preprocess_cfg, spec, dev, prec)


def _create(spec: ModelSpec):
    import open_clip  # the only import of open_clip in the package

    name, pretrained = spec.resolved()
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR) :]).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(f"model folder {folder} does not exist; pass local-dir:<folder with "
                                 "open_clip_config.json and weights>")
        if not (folder / "open_clip_config.json").is_file():
            raise ModelLoadError(f"model folder {folder} has no open_clip_config.json; it is not an open_clip "
                                 "local-dir model")
        name = LOCAL_DIR + str(folder)
    elif not name.startswith(HF_HUB) and open_clip.get_model_config(name.replace("/", "-")) is None:
        raise ModelLoadError(
            f"unknown model {spec.name!r}; use a built-in name such as RN50 or ViT-B-16 (see "
            "open_clip.list_models()), hf-hub:org/name, or local-dir:/path/to/folder"
        )
    if pretrained and not os.path.isfile(pretrained) and _looks_like_file(pretrained):
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


def _create_model(open_clip, spec: ModelSpec, name: str, pretrained: str | None, weights_file: str | None,
                  require: bool):
    try:
        if name.startswith(LOCAL_DIR) and weights_file:
            # a weights file beside a config: build from the config, then load that file
            model = open_clip.create_model(name, require_pretrained=False, weights_only=True)
            open_clip.load_checkpoint(model, weights_file, strict=True, weights_only=True)
        else:
            # OpenAI's weights were trained with QuickGELU: follow the tag, as open_clip only warns
            quick = bool(pretrained and open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu"))
            model = open_clip.create_model(name, pretrained=pretrained, require_pretrained=require,
                                           force_quick_gelu=quick, weights_only=True)
        tokenizer = open_clip.get_tokenizer(name)
    except ModelLoadError:
        raise
    except Exception as exc:  # open_clip raises many kinds; all mean "could not load"
        raise ModelLoadError(_load_failure_message(spec, exc)) from None
    return model, tokenizer


def _download_for(open_clip, spec: ModelSpec, name: str, pretrained: str | None) -> hub.Download | None:
    """What open_clip will fetch from the network for this model, if anything."""
    if name.startswith(HF_HUB):
        return hub.Download(label=spec.label, retry=f"--model {name}", repo_id=name[len(HF_HUB) :],
                            filenames=("open_clip_config.json",))
    if not pretrained or name.startswith(LOCAL_DIR):
        return None
    cfg = open_clip.get_pretrained_cfg(name, pretrained) or {}
    retry, file_option = f"--model {spec.name} --pretrained {pretrained}", f"--model {spec.name} --pretrained FILE"
    if cfg.get("hf_hub"):
        repo_id, filename = os.path.split(cfg["hf_hub"])  # "org/repo/" or "org/repo/file.bin"
        filenames = (filename, os.path.splitext(filename)[0] + ".safetensors") if filename else hub.WEIGHT_FILES
        return hub.Download(label=spec.label, retry=retry, repo_id=repo_id, filenames=filenames,
                            file_option=file_option)
    if cfg.get("url"):
        return hub.Download(label=spec.label, retry=retry, url=cfg["url"], file_option=file_option)
    return None


@contextlib.contextmanager
def _root_log_records():
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
    offline = any(w in text.lower() for w in ("connect", "offline", "resolve", "network", "hf_hub", "huggingface",
                                              "download", "url"))
    if offline:
        return (f"cannot download weights for {spec.label}: {text}. Download them on a machine with internet "
                "(open_clip caches them under ~/.cache/huggingface) or point to local weights with "
                "--model local-dir:/path or --pretrained /path/to/weights.safetensors")
    return f"cannot load model {spec.label}: {text}. Check the weights file or folder (is it complete?)"


# ---------------------------------------------------------------------------------------------------------
# the backbone


class Backbone:
    """A frozen open_clip CLIP with the feature paths DUAL-PT needs."""

    def __init__(self, model: nn.Module, tokenizer, preprocess_cfg: dict, spec: ModelSpec,
                 device: torch.device, precision: str):
        if not all(hasattr(model, a) for a in ("visual", "transformer", "token_embedding", "ln_final")):
            raise ModelLoadError(
                f"{spec.label} has a text tower dualpt cannot splice prompts into (e.g. a Hugging Face text "
                "model); use a CLIP with open_clip's own text transformer (RN50, ViT-B-16, ...)"
            )
        visual = model.visual
        self.family = _visual_family(visual)
        if self.family is None:
            raise ModelLoadError(
                f"{spec.label} has an image tower ({type(visual).__name__}) without the local features DUAL-PT "
                "matches; use a ModifiedResNet (RN50, RN101, ...) or VisionTransformer (ViT-B-16, ...) CLIP"
            )
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.preprocess_cfg = preprocess_cfg
        self.spec = spec
        self.device = device
        self.precision = precision
        self.channels_last = self.family == "resnet" and precision != "fp32"
        if self.channels_last:
            self.model.visual.to(memory_format=torch.channels_last)
        # The text transformer runs at every training step. Autocast re-casts frozen weights at every call
        # (its cast cache only keeps trainable leaves), so keep a copy with the matmul weights cast once;
        # the result is the same as autocast's, without the copies.
        self.text_transformer = self.model.transformer
        if precision != "fp32":
            self.text_transformer = _lowp_matmul_copy(self.model.transformer, _DTYPES[precision])

    # -- facts ----------------------------------------------------------------------------------------------

    @property
    def embed_dim(self) -> int:
        proj = self.model.text_projection
        return proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]

    @property
    def text_width(self) -> int:
        return self.model.token_embedding.weight.shape[1]

    @property
    def context_length(self) -> int:
        return self.model.positional_embedding.shape[0]

    @property
    def image_size(self) -> int:
        size = self.preprocess_cfg.get("size", 224)
        return size[0] if isinstance(size, (tuple, list)) else int(size)

    @property
    def grid(self) -> tuple[int, int]:
        visual = self.model.visual
        if self.family == "resnet":
            side = self.image_size // 32
            return side, side
        grid = getattr(visual, "grid_size", None)
        if grid is None:
            patch = visual.conv1.kernel_size[0]
            grid = (self.image_size // patch, self.image_size // patch)
        return tuple(grid)

    @property
    def num_local(self) -> int:
        """N: 7x7 = 49 for RN50 at 224 px; the patch grid for a ViT."""
        gh, gw = self.grid
        return gh * gw

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp().clamp(max=100.0))

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.precision]

    @property
    def pool_type(self) -> str:
        return getattr(self.model, "text_pool_type", "argmax")

    @property
    def supports_prefix_cache(self) -> bool:
        """Prefix caching and truncation are exact only for causal text transformers of plain blocks."""
        from open_clip.transformer import ResidualAttentionBlock

        blocks = self.model.transformer.resblocks
        return (self.model.attn_mask is not None and self.pool_type in ("argmax", "eos")
                and all(type(b) is ResidualAttentionBlock and not hasattr(b, "ln_1_kv") for b in blocks)
                and getattr(self.model.transformer, "batch_first", True))

    def describe(self) -> dict[str, Any]:
        """The facts ``dualpt info`` shows, with snake_case keys (its ``--json`` output)."""
        name, pretrained = self.spec.resolved()
        return {
            "model": name,
            "pretrained": pretrained or ("(weights in the folder)" if name.startswith(LOCAL_DIR)
                                         else "(none: random weights)"),
            "image_tower": f"{self.family} ({type(self.model.visual).__name__})",
            "image_size": self.image_size,
            "embed_dim": self.embed_dim,
            "local_features": self.num_local,
            "local_grid": list(self.grid),
            "text_width": self.text_width,
            "context_length": self.context_length,
            "text_pooling": self.pool_type,
            "device": str(self.device),
            "precision": self.precision,
            "frozen_parameters": sum(p.numel() for p in self.model.parameters()),
        }

    # -- precision ------------------------------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the selected precision (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    # -- images ---------------------------------------------------------------------------------------------

    def eval_transform(self):
        """The model's own test-time preprocessing (resize, center crop, normalize)."""
        from open_clip.transform import PreprocessCfg, image_transform_v2

        fields = PreprocessCfg.__dataclass_fields__
        cfg = PreprocessCfg(**{k: v for k, v in self.preprocess_cfg.items() if k in fields})
        return image_transform_v2(cfg, is_train=False)

    def train_transform(self, scale: tuple[float, float] = (0.08, 1.0)):
        """CoOp's augmentation: random resized crop (bicubic), horizontal flip, CLIP normalization."""
        from torchvision import transforms as T

        return T.Compose([
            T.RandomResizedCrop(self.image_size, scale=scale, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(self.preprocess_cfg["mean"], self.preprocess_cfg["std"]),
        ])

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global and local image features in CLIP's joint space (not normalised).

        Args:
            images: (B, 3, H, W) preprocessed images.
        Returns:
            z: (B, d) global feature, equal to ``model.encode_image(images)``;
            Z: (B, N, d) local features.
        """
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            if self.family == "resnet":
                z, local = _resnet_features(self.model.visual, images)
            else:
                z, local = _vit_features(self.model.visual, images)
        return z.float(), local.float()

    # -- text -----------------------------------------------------------------------------------------------

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(P, L) token ids, padded to the model's context length."""
        return self.tokenizer(texts).to(self.device)

    def eot_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """(P,) index of the position open_clip pools text features from."""
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        if self.pool_type == "eos":
            return (tokens == self.model.text_eos_id).int().argmax(dim=-1)
        if self.pool_type == "last":
            return torch.full((tokens.shape[0],), tokens.shape[1] - 1, device=tokens.device)
        raise ModelLoadError(f"text pooling {self.pool_type!r} is not supported")

    @torch.no_grad()
    def token_embeds(self, tokens: torch.Tensor) -> torch.Tensor:
        """(P, L) ids -> (P, L, width) token embeddings (frozen)."""
        return self.model.token_embedding(tokens.to(self.device))

    def encode_text_embeds(self, x: torch.Tensor, eot: torch.Tensor, truncate: bool = True) -> torch.Tensor:
        """Text features from token embeddings (gradients flow into ``x``).

        Follows open_clip's ``CLIP.encode_text`` step by step: + positional embedding -> causal transformer
        -> ln_final -> pool at ``eot`` -> text projection.

        Args:
            x: (P, L, width) token embeddings, L <= context length, learnable vectors spliced in.
            eot: (P,) position to pool at.
            truncate: cut the sequence right after the longest EOT (exact under the causal mask).
        Returns:
            (P, d) text features, not normalised.
        """
        if truncate and self.supports_prefix_cache:
            x = x[:, : int(eot.max()) + 1]
        length = x.shape[1]
        mask = self.model.attn_mask
        mask = mask[:length, :length] if mask is not None else None
        with self.autocast():
            h = x + self.model.positional_embedding[:length].to(x.dtype)
            h = self.text_transformer(h, attn_mask=mask)  # (P, L, width)
            h = self.model.ln_final(h)
            h = h[torch.arange(h.shape[0], device=h.device), eot]  # (P, width)
            out = self._project(h)
        return out.float()

    def encode_text_prefixed(self, prefix: torch.Tensor, suffix: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """Text features of ``[prefix_g ; suffix_c]`` for every (g, c), computing each prefix once.

        Exact under the causal mask: prefix positions never attend to the suffix, so their hidden states
        (and keys/values) are the same for every suffix. Gradients flow through the shared prefix.

        Args:
            prefix: (G, Lp, width) embeddings of SOS + context, one row per prompt.
            suffix: (G, C, Ls, width) or (C, Ls, width) embeddings of the class-name + EOT positions
                (a 3-D suffix is shared by all G prefixes).
            eot: (C,) or (G, C) pooling position of each suffix, counted in the full sequence (>= Lp).
        Returns:
            (G, C, d) text features, not normalised.
        """
        G, Lp, W = prefix.shape
        if suffix.dim() == 3:
            suffix = suffix.unsqueeze(0).expand(G, -1, -1, -1)
        C, Ls = suffix.shape[1], suffix.shape[2]
        pos = self.model.positional_embedding
        mask = torch.ones(Ls, Lp + Ls, dtype=torch.bool, device=prefix.device)
        mask[:, Lp:] = torch.ones(Ls, Ls, dtype=torch.bool, device=prefix.device).tril()  # True = attend
        with self.autocast():
            hp = prefix + pos[:Lp].to(prefix.dtype)  # (G, Lp, W)
            hs = (suffix + pos[Lp : Lp + Ls].to(suffix.dtype)).reshape(G * C, Ls, W)  # (G*C, Ls, W)
            for block in self.text_transformer.resblocks:
                hp, hs = _prefixed_block(block, hp, hs, C, mask)
            hs = self.model.ln_final(hs)  # (G*C, Ls, W)
            idx = (eot - Lp).expand(G, C).reshape(G * C)  # (G*C,)
            h = hs[torch.arange(G * C, device=hs.device), idx]  # (G*C, W)
            out = self._project(h)
        return out.float().reshape(G, C, -1)

    def _project(self, h: torch.Tensor) -> torch.Tensor:
        proj = self.model.text_projection
        if proj is None:
            return h
        return proj(h) if isinstance(proj, nn.Linear) else h @ proj

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """(P, d) normalised features of plain texts (descriptions, zero-shot prompts)."""
        feats = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenize(texts[start : start + batch_size])
            feats.append(self.encode_text_embeds(self.token_embeds(tokens), self.eot_positions(tokens)))
        return F.normalize(torch.cat(feats), dim=-1)


def _lowp_matmul_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A frozen copy of ``module`` whose Linear and attention projection weights are in ``dtype``.

    LayerNorms stay fp32, as autocast runs them. Under autocast the copy computes exactly what the
    original does (autocast casts those weights to ``dtype`` anyway), without re-casting them per call.
    """
    import copy

    low = copy.deepcopy(module).requires_grad_(False)
    for sub in low.modules():
        if isinstance(sub, (nn.Linear, nn.MultiheadAttention)):
            for name, param in sub.named_parameters(recurse=False):
                if name.endswith("weight") and param.dim() == 2:
                    param.data = param.data.to(dtype)
    return low


def _visual_family(visual: nn.Module) -> str | None:
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, ModifiedResNet):
        return "resnet"
    if isinstance(visual, VisionTransformer) and visual.attn_pool is None:
        return "vit"
    return None


def _resnet_features(visual, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ModifiedResNet: the attention pool run over all HW+1 tokens (mean token first); PLOT's local features."""
    x = x.to(visual.conv1.weight.dtype)
    x = visual.stem(x)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))  # (B, C, H, W)
    pool = visual.attnpool
    x = x.flatten(2).permute(2, 0, 1)  # (HW, B, C)
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)  # (HW+1, B, C)
    x = x + pool.positional_embedding[:, None, :].to(x.dtype)
    x, _ = F.multi_head_attention_forward(
        query=x, key=x, value=x,
        embed_dim_to_check=x.shape[-1],
        num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True,
        training=False,
        need_weights=False,
    )  # (HW+1, B, d)
    x = x.permute(1, 0, 2)  # (B, HW+1, d)
    return x[:, 0], x[:, 1:]


def _vit_features(visual, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VisionTransformer: the pooled output, and the patch tokens through ``ln_post`` and ``proj``."""
    x = visual._embeds(x)
    x = visual.transformer(x)  # (B, 1+N, width)
    pooled, tokens = visual._pool(x)
    if visual.final_ln_after_pool:  # tokens left un-normalised by open_clip in this mode
        tokens = visual.ln_post(tokens)
    if visual.proj is not None:
        pooled, tokens = pooled @ visual.proj, tokens @ visual.proj
    return pooled, tokens


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh), masked) v for short sequences.

    q: (P, H, Lq, Dh); k, v: (P, H, Lk, Dh); mask: (Lq, Lk) bool, True = attend. Written out rather than
    through scaled_dot_product_attention: the sequences here are a few tokens long, where the fused CPU
    kernels' backward (in bf16 especially) costs many times the arithmetic.
    """
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (P, H, Lq, Lk)
    scores = scores.float().masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1).to(v.dtype) @ v  # (P, H, Lq, Dh)


def _prefixed_block(block, hp: torch.Tensor, hs: torch.Tensor, C: int, mask: torch.Tensor):
    """One ResidualAttentionBlock over a shared prefix stream and a per-class suffix stream.

    hp: (G, Lp, W) prefix hidden states; hs: (G*C, Ls, W) suffix hidden states; mask: (Ls, Lp+Ls) bool.
    """
    attn = block.attn
    G, Lp, W = hp.shape
    H = attn.num_heads
    Dh = W // H
    Ls = hs.shape[1]

    def heads(t: torch.Tensor) -> torch.Tensor:  # (P, L, W) -> (P, H, L, Dh)
        return t.unflatten(-1, (H, Dh)).transpose(1, 2)

    qkv_p = F.linear(block.ln_1(hp), attn.in_proj_weight, attn.in_proj_bias)  # (G, Lp, 3W)
    qkv_s = F.linear(block.ln_1(hs), attn.in_proj_weight, attn.in_proj_bias)  # (G*C, Ls, 3W)
    qp, kp, vp = (heads(t) for t in qkv_p.chunk(3, dim=-1))  # (G, H, Lp, Dh)
    qs, ks, vs = (heads(t) for t in qkv_s.chunk(3, dim=-1))  # (G*C, H, Ls, Dh)
    causal = torch.ones(Lp, Lp, dtype=torch.bool, device=hp.device).tril()
    out_p = _attention(qp, kp, vp, causal)  # (G, H, Lp, Dh)
    kp_s = kp.unsqueeze(1).expand(G, C, H, Lp, Dh).reshape(G * C, H, Lp, Dh)
    vp_s = vp.unsqueeze(1).expand(G, C, H, Lp, Dh).reshape(G * C, H, Lp, Dh)
    k = torch.cat([kp_s, ks.to(kp_s.dtype)], dim=2)  # (G*C, H, Lp+Ls, Dh)
    v = torch.cat([vp_s, vs.to(vp_s.dtype)], dim=2)
    out_s = _attention(qs, k, v, mask)  # (G*C, H, Ls, Dh)
    out_p = F.linear(out_p.transpose(1, 2).reshape(G, Lp, W), attn.out_proj.weight, attn.out_proj.bias)
    out_s = F.linear(out_s.transpose(1, 2).reshape(G * C, Ls, W), attn.out_proj.weight, attn.out_proj.bias)
    hp = hp + block.ls_1(out_p)
    hs = hs + block.ls_1(out_s)
    hp = hp + block.ls_2(block.mlp(block.ln_2(hp)))
    hs = hs + block.ls_2(block.mlp(block.ln_2(hs)))
    return hp, hs
