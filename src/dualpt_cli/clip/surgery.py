"""Model surgery: the functions that reach inside open_clip's modules for :class:`~dualpt_cli.clip.backbone.Backbone`.

- image towers: which family a tower is, and its global + local features (ModifiedResNet: the attention
  pool over all HW+1 tokens; VisionTransformer: the projected patch tokens), method card "Frozen CLIP parts";
- text tower: one ResidualAttentionBlock run over a shared prefix stream and per-class suffix streams (the
  prefix cache), whether a text transformer is made of blocks where that is exact, and a low-precision copy;
- open_clip's test-time image transform.

open_clip is imported by two modules only: :mod:`dualpt_cli.clip.load` (its factory) and this one (the classes
it reaches into, and the transform). Both import it inside functions, so ``import dualpt_cli`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def lowp_matmul_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
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


def visual_family(visual: nn.Module) -> str | None:
    """``"resnet"`` for a ModifiedResNet, ``"vit"`` for a VisionTransformer without attention pooling, else None."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, ModifiedResNet):
        return "resnet"
    if isinstance(visual, VisionTransformer) and visual.attn_pool is None:
        return "vit"
    return None


def plain_causal_blocks(transformer: Any) -> bool:
    """True when every block of a text transformer is open_clip's plain ResidualAttentionBlock (batch first)."""
    from open_clip.transformer import ResidualAttentionBlock

    return all(
        type(b) is ResidualAttentionBlock and not hasattr(b, "ln_1_kv") for b in transformer.resblocks
    ) and getattr(transformer, "batch_first", True)


def eval_transform(preprocess_cfg: dict) -> Callable[[Any], torch.Tensor]:
    """open_clip's test-time preprocessing (resize, center crop, normalize) for a model's preprocess config."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    fields = PreprocessCfg.__dataclass_fields__
    cfg = PreprocessCfg(**{k: v for k, v in preprocess_cfg.items() if k in fields})
    transform: Callable[[Any], torch.Tensor] = image_transform_v2(cfg, is_train=False)
    return transform


def resnet_features(visual: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ModifiedResNet: the attention pool run over all HW+1 tokens (mean token first); PLOT's local features."""
    x = x.to(visual.conv1.weight.dtype)
    x = visual.stem(x)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))  # (B, C, H, W)
    pool = visual.attnpool
    x = x.flatten(2).permute(2, 0, 1)  # (HW, B, C)
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)  # (HW+1, B, C)
    x = x + pool.positional_embedding[:, None, :].to(x.dtype)
    x, _ = F.multi_head_attention_forward(
        query=x,
        key=x,
        value=x,
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


def vit_features(visual: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VisionTransformer: the pooled output, and the patch tokens through ``ln_post`` and ``proj``."""
    x = visual._embeds(x)
    x = visual.transformer(x)  # (B, 1+N, width)
    pooled, tokens = visual._pool(x)
    if visual.final_ln_after_pool:  # tokens left un-normalised by open_clip in this mode
        tokens = visual.ln_post(tokens)
    if visual.proj is not None:
        pooled, tokens = pooled @ visual.proj, tokens @ visual.proj
    return pooled, tokens


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh), masked) v for short sequences.

    q: (P, H, Lq, Dh); k, v: (P, H, Lk, Dh); mask: (Lq, Lk) bool, True = attend. Written out rather than
    through scaled_dot_product_attention: the sequences here are a few tokens long, where the fused CPU
    kernels' backward (in bf16 especially) costs many times the arithmetic.
    """
    scores = (q @ k.transpose(-2, -1)) * float(q.shape[-1] ** -0.5)  # (P, H, Lq, Lk)
    scores = scores.float().masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1).to(v.dtype) @ v  # (P, H, Lq, Dh)


def prefixed_block(
    block: Any,
    x: torch.Tensor,
    shape: tuple[int, int, int, int],
    causal: torch.Tensor,
    mask: torch.Tensor,
    pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """One ResidualAttentionBlock over a shared prefix stream and a per-class suffix stream.

    x: (G*Lp + G*C*Ls, W), the G prefixes' Lp hidden states, then the G*C suffixes' Ls hidden states, as rows;
    shape: (G, Lp, C, Ls); causal: (Lp, Lp) and mask: (Ls, Lp+Ls) bool, True = attend. The layer norms, the
    projections and the MLP act on each row alone, so they run once over both streams (the same numbers as
    per stream: every row is computed by itself); only the attention tells the streams apart.

    pool: (G*C,) a position in each suffix. Given (the last block, whose other positions nothing reads), the
    prefix's attention is skipped and only those rows go through the output projection and the MLP; the result
    is (G*C, W), the same numbers as those rows of the whole block (every row is computed by itself).
    """
    attn = block.attn
    G, Lp, C, Ls = shape
    W = x.shape[-1]
    H: int = attn.num_heads
    Dh = W // H
    n_p = G * Lp

    def heads(t: torch.Tensor, n: int, length: int) -> torch.Tensor:  # (n*length, W) -> (n, H, length, Dh)
        split: torch.Tensor = t.view(n, length, H, Dh)
        return split.transpose(1, 2)

    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)  # (rows, 3W)
    qp, kp, vp = (heads(t, G, Lp) for t in qkv[:n_p].chunk(3, dim=-1))  # (G, H, Lp, Dh)
    qs, ks, vs = (heads(t, G * C, Ls) for t in qkv[n_p:].chunk(3, dim=-1))  # (G*C, H, Ls, Dh)
    # each suffix attends to its prefix's keys/values, then its own: one copy of the expanded prefix
    k = torch.cat([kp.unsqueeze(1).expand(G, C, H, Lp, Dh), ks.unflatten(0, (G, C))], dim=3).flatten(0, 1)
    v = torch.cat([vp.unsqueeze(1).expand(G, C, H, Lp, Dh), vs.unflatten(0, (G, C))], dim=3).flatten(0, 1)
    out_s = attention(qs, k, v, mask)  # (G*C, H, Ls, Dh)
    if pool is not None:  # the pooled row of each suffix alone (the attention itself is cheap, and a lone
        seq = torch.arange(G * C, device=x.device)  # query row would take another matmul kernel: other bits)
        out = out_s[seq, :, pool]  # (G*C, H, Dh)
        x = x[n_p + seq * Ls + pool]  # (G*C, W)
    else:
        out_p = attention(qp, kp, vp, causal)  # (G, H, Lp, Dh)
        out = torch.cat([out_p.transpose(1, 2).reshape(n_p, W), out_s.transpose(1, 2).reshape(-1, W)])
    out = out.reshape(-1, W)
    x = x + block.ls_1(F.linear(out, attn.out_proj.weight, attn.out_proj.bias))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x
