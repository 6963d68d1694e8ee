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
    block: Any, hp: torch.Tensor, hs: torch.Tensor, C: int, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ResidualAttentionBlock over a shared prefix stream and a per-class suffix stream.

    hp: (G, Lp, W) prefix hidden states; hs: (G*C, Ls, W) suffix hidden states; mask: (Ls, Lp+Ls) bool.
    """
    attn = block.attn
    G, Lp, W = hp.shape
    H: int = attn.num_heads
    Dh = W // H
    Ls = hs.shape[1]

    def heads(t: torch.Tensor) -> torch.Tensor:  # (P, L, W) -> (P, H, L, Dh)
        split: torch.Tensor = t.unflatten(-1, (H, Dh))
        return split.transpose(1, 2)

    qkv_p = F.linear(block.ln_1(hp), attn.in_proj_weight, attn.in_proj_bias)  # (G, Lp, 3W)
    qkv_s = F.linear(block.ln_1(hs), attn.in_proj_weight, attn.in_proj_bias)  # (G*C, Ls, 3W)
    qp, kp, vp = (heads(t) for t in qkv_p.chunk(3, dim=-1))  # (G, H, Lp, Dh)
    qs, ks, vs = (heads(t) for t in qkv_s.chunk(3, dim=-1))  # (G*C, H, Ls, Dh)
    causal = torch.ones(Lp, Lp, dtype=torch.bool, device=hp.device).tril()
    out_p = attention(qp, kp, vp, causal)  # (G, H, Lp, Dh)
    kp_s = kp.unsqueeze(1).expand(G, C, H, Lp, Dh).reshape(G * C, H, Lp, Dh)
    vp_s = vp.unsqueeze(1).expand(G, C, H, Lp, Dh).reshape(G * C, H, Lp, Dh)
    k = torch.cat([kp_s, ks.to(kp_s.dtype)], dim=2)  # (G*C, H, Lp+Ls, Dh)
    v = torch.cat([vp_s, vs.to(vp_s.dtype)], dim=2)
    out_s = attention(qs, k, v, mask)  # (G*C, H, Ls, Dh)
    out_p = F.linear(out_p.transpose(1, 2).reshape(G, Lp, W), attn.out_proj.weight, attn.out_proj.bias)
    out_s = F.linear(out_s.transpose(1, 2).reshape(G * C, Ls, W), attn.out_proj.weight, attn.out_proj.bias)
    hp = hp + block.ls_1(out_p)
    hs = hs + block.ls_1(out_s)
    hp = hp + block.ls_2(block.mlp(block.ln_2(hp)))
    hs = hs + block.ls_2(block.mlp(block.ln_2(hs)))
    return hp, hs
