"""The frozen CLIP backbone's feature paths: what DUAL-PT reads out of an open_clip CLIP.

Everything else talks to :class:`Backbone` (built by :func:`dualpt_cli.clip.load.load_backbone`):

- :meth:`Backbone.encode_images` -> global feature ``(B, d)`` and local features ``(B, N, d)``, both in
  CLIP's joint space (method card, "Frozen CLIP parts");
- :meth:`Backbone.encode_text_embeds` -> text features from token embeddings with learnable vectors
  spliced in, pooled at the EOT position the way open_clip pools for that model;
- :meth:`Backbone.encode_text_prefixed` -> the same, with a prefix (SOS + context) shared by many
  suffixes (class names) computed once: exact under the causal mask;
- the model's own image preprocessing, the tokenizer, device and precision.

This module does not import open_clip: the code that reaches inside open_clip's modules is in
:mod:`dualpt_cli.clip.surgery`, and the factory in :mod:`dualpt_cli.clip.load` (the only two modules importing it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelLoadError
from . import surgery
from .pixels import fuse_to_tensor_normalize
from .spec import ModelSpec

IMAGE_CHUNK_CPU = 8  # images per image-tower pass of a ResNet on CPU (Backbone.image_chunk)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------------------
# the backbone


class Backbone:
    """A frozen open_clip CLIP with the feature paths DUAL-PT needs."""

    def __init__(
        self,
        model: Any,  # an open_clip CLIP (untyped: open_clip ships no type hints)
        tokenizer: Callable[[list[str]], torch.Tensor],
        preprocess_cfg: dict,
        spec: ModelSpec,
        device: torch.device,
        precision: str,
    ):
        if not all(hasattr(model, a) for a in ("visual", "transformer", "token_embedding", "ln_final")):
            raise ModelLoadError(
                f"{spec.label} has a text tower dualpt cannot splice prompts into (e.g. a Hugging Face text "
                "model); use a CLIP with open_clip's own text transformer (RN50, ViT-B-16, ...)"
            )
        visual = model.visual
        self.family = surgery.visual_family(visual)
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
        self._lazy: dict[str, Any] = {}  # made on first use; shared with copy.copy's (shared_backbones)

    @property
    def text_transformer(self) -> Any:
        """The text transformer the text paths run.

        It runs at every training step. Autocast re-casts frozen weights at every call (its cast cache only
        keeps trainable leaves), so below fp32 this is a copy with the matmul weights cast once: the result
        is the same as autocast's, without the copies. Made on first use: predicting the trained classes
        encodes no text, and the copy costs a second of start-up."""
        if "text" not in self._lazy:
            text = self.model.transformer
            low = self.precision != "fp32"
            self._lazy["text"] = surgery.lowp_matmul_copy(text, _DTYPES[self.precision]) if low else text
        return self._lazy["text"]

    @text_transformer.setter
    def text_transformer(self, module: Any) -> None:
        self._lazy = {**self._lazy, "text": module}  # this backbone's only, not its copies'

    # -- facts ----------------------------------------------------------------------------------------------

    @property
    def embed_dim(self) -> int:
        proj = self.model.text_projection
        return proj.out_features if isinstance(proj, nn.Linear) else int(proj.shape[1])

    @property
    def text_width(self) -> int:
        return int(self.model.token_embedding.weight.shape[1])

    @property
    def context_length(self) -> int:
        return int(self.model.positional_embedding.shape[0])

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
        return int(grid[0]), int(grid[1])

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
        return str(getattr(self.model, "text_pool_type", "argmax"))

    @property
    def supports_prefix_cache(self) -> bool:
        """Prefix caching and truncation are exact only for causal text transformers of plain blocks."""
        return (
            self.model.attn_mask is not None
            and self.pool_type in ("argmax", "eos")
            and surgery.plain_causal_blocks(self.model.transformer)
        )

    def describe(self) -> dict[str, Any]:
        """The facts ``dualpt info`` shows, with snake_case keys (its ``--json`` output)."""
        return {
            **self.spec.describe(),  # model, pretrained
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

    def eval_transform(self) -> Callable[[Any], torch.Tensor]:
        """The model's own test-time preprocessing (resize, center crop, normalize), its last two steps fused
        (:mod:`~dualpt_cli.clip.pixels`: the same pixels)."""
        transform: Callable[[Any], torch.Tensor] = fuse_to_tensor_normalize(surgery.eval_transform(self.preprocess_cfg))
        return transform

    def train_transform(self, scale: tuple[float, float] = (0.08, 1.0)) -> Callable[[Any], torch.Tensor]:
        """CoOp's augmentation: random resized crop (bicubic), horizontal flip, CLIP normalization."""
        from torchvision import transforms as T

        transform: Callable[[Any], torch.Tensor] = fuse_to_tensor_normalize(
            T.Compose(
                [
                    T.RandomResizedCrop(self.image_size, scale=scale, interpolation=T.InterpolationMode.BICUBIC),
                    T.RandomHorizontalFlip(),
                    T.ToTensor(),
                    T.Normalize(self.preprocess_cfg["mean"], self.preprocess_cfg["std"]),
                ]
            )
        )
        return transform

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global and local image features in CLIP's joint space (not normalised).

        Args:
            images: (B, 3, H, W) preprocessed images.
        Returns:
            z: (B, d) global feature, equal to ``model.encode_image(images)``;
            Z: (B, N, d) local features.
        """
        chunk = self.image_chunk
        if chunk and len(images) > chunk:  # the same numbers: every image is computed by itself
            starts = list(range(0, len(images), chunk))
            if chunk > 1 and len(images) - starts[-1] == 1:  # no pass of one image: it joins the one before
                starts.pop()
            ends = starts[1:] + [len(images)]
            parts = [self._encode_pass(images[i:j]) for i, j in zip(starts, ends)]
            return torch.cat([z for z, _ in parts]), torch.cat([local for _, local in parts])
        return self._encode_pass(images)

    def _encode_pass(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`encode_images` of ``images`` in one pass of the image tower."""
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            if self.family == "resnet":
                z, local = surgery.resnet_features(self.model.visual, images)
            else:
                z, local = surgery.vit_features(self.model.visual, images)
        return z.float(), local.float()

    @property
    def image_chunk(self) -> int | None:
        """Images per forward pass of the image tower, whatever batch the caller hands over (None: all).

        On CPU a ResNet's activations for a batch of 64 crops outgrow the caches: 8 at a time ran 1.5x faster
        per image on RN50 in bf16 (AMX) and 1.64x in fp32 (AVX2), with the same bits
        (benchmarks/bench_image_chunk.py, docs/performance.md). A lone last image joins the pass before it:
        a pass of one image can take other convolution kernels (the tests' tiny ResNet then differed in the
        last bit on an AVX2 CPU). ViTs and GPUs take the batch whole."""
        return IMAGE_CHUNK_CPU if self.device.type == "cpu" and self.family == "resnet" else None

    # -- text -----------------------------------------------------------------------------------------------

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(P, L) token ids, padded to the model's context length."""
        return self.tokenizer(texts).to(self.device)

    def eot_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """(P,) index of the position open_clip pools text features from."""
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        if self.pool_type == "eos":
            return tokens.eq(self.model.text_eos_id).int().argmax(dim=-1)
        if self.pool_type == "last":
            return torch.full((tokens.shape[0],), tokens.shape[1] - 1, device=tokens.device)
        raise ModelLoadError(f"text pooling {self.pool_type!r} is not supported")

    @torch.no_grad()
    def token_embeds(self, tokens: torch.Tensor) -> torch.Tensor:
        """(P, L) ids -> (P, L, width) token embeddings (frozen)."""
        embeds: torch.Tensor = self.model.token_embedding(tokens.to(self.device))
        return embeds

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
        causal = torch.ones(Lp, Lp, dtype=torch.bool, device=prefix.device).tril()  # True = attend
        mask = torch.ones(Ls, Lp + Ls, dtype=torch.bool, device=prefix.device)
        mask[:, Lp:] = torch.ones(Ls, Ls, dtype=torch.bool, device=prefix.device).tril()
        with self.autocast():
            hp = prefix + pos[:Lp].to(prefix.dtype)  # (G, Lp, W)
            hs = suffix + pos[Lp : Lp + Ls].to(suffix.dtype)  # (G, C, Ls, W)
            # both streams as the rows of one (G*Lp + G*C*Ls, W) tensor: the row-wise parts of a block run once
            x = torch.cat([hp.reshape(G * Lp, W), hs.reshape(G * C * Ls, W)])
            *blocks, last = self.text_transformer.resblocks
            for block in blocks:
                x = surgery.prefixed_block(block, x, (G, Lp, C, Ls), causal, mask)
            # the last block computes only the rows pooled at (each suffix's EOT): nothing reads the others
            idx = (eot - Lp).expand(G, C).reshape(G * C)  # (G*C,)
            h = surgery.prefixed_block(last, x, (G, Lp, C, Ls), causal, mask, pool=idx)  # (G*C, W)
            out = self._project(self.model.ln_final(h))
        return out.float().reshape(G, C, -1)

    def _project(self, h: torch.Tensor) -> torch.Tensor:
        proj: torch.Tensor | nn.Linear | None = self.model.text_projection
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
