# Copied unchanged (apart from this header) from shared/synthclip/pretrain.py in the dualpt steering
# repository: the script that trained the demo CLIP in model/ (see model/README.md). Run it from this folder.
"""Pretrain a tiny open_clip CLIP model on on-the-fly generated (image, caption) pairs.

The shipped model was trained in two phases (~8.5 + 16.3 min on 2 CPU cores, bf16 autocast):
    python pretrain.py --steps 1600 --stop-after 800 --out sw_phase1
    python pretrain.py --init sw_phase1 --seed 1 --steps 1500 --lr 7e-4 --warmup 30 \
        --clean0 0.1 --clean1 0.1 --out model
(phase 1: lr 1e-3, batch 128, curriculum 60% -> 10% "clean" images; phase 2: fresh seed stream, re-warmed
cosine schedule, 10% clean images).

Saves an open_clip `local-dir:` model folder:
    <out>/open_clip_config.json   {"model_cfg": ..., "preprocess_cfg": ...}
    <out>/open_clip_model.safetensors
    <out>/train_log.json          (loss curve, timings, args)
Loading:  open_clip.create_model_and_transforms('local-dir:<out>'), open_clip.get_tokenizer('local-dir:<out>')

Loss: CLIP InfoNCE with multi-positive targets (UniCL/SupCon-style): because captions are partial,
caption j is a valid positive for image i whenever every attribute it mentions matches image i.
`--loss clip` gives the plain one-positive open_clip ClipLoss instead.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import open_clip
from torch.nn.attention import sdpa_kernel, SDPBackend  # math SDPA: much faster backward on CPU here
from open_clip.transformer import text_global_pool

import generator as G

MODEL_CFG = {
    "embed_dim": 128,
    "quick_gelu": True,
    "vision_cfg": {"image_size": G.IMG, "layers": 6, "width": 128, "head_width": 64, "patch_size": 8,
                   "pool_type": "avg", "pos_embed_type": "sin_cos_2d"},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 4},
}
MEAN = (0.48145466, 0.4578275, 0.40821073)   # OpenAI CLIP defaults (kept so the usual pipeline applies)
STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESS_CFG = {"size": G.IMG, "mean": list(MEAN), "std": list(STD), "interpolation": "bicubic",
                  "resize_mode": "shortest"}
ATTR_VALUES = {'shape': G.SHAPES, 'colour': list(G.ALL_COLOURS), 'texture': G.TEXTURES, 'size': G.SIZES,
               'bg': G.BACKGROUNDS + ['tinted']}


def to_tensor(imgs_u8: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W,3] -> normalised float [N,3,H,W]; identical to the saved preprocess on 64x64 PNGs."""
    x = torch.from_numpy(imgs_u8).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - m) / s


def encode_text_trunc(model, text: torch.Tensor) -> torch.Tensor:
    """model.encode_text on the shortest prefix that contains every EOT token.
    Exact for causal-mask + argmax(EOT) pooling, ~3x cheaper than the full 77 tokens."""
    L = int(text.argmax(dim=-1).max()) + 1
    text = text[:, :L]
    x = model.token_embedding(text)
    x = x + model.positional_embedding[:L]
    x = model.transformer(x, attn_mask=model.attn_mask[:L, :L])
    x = model.ln_final(x)
    x = text_global_pool(x, text, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    return x @ model.text_projection


def consistency(attrs, ments) -> torch.Tensor:
    """C[i, j] = 1 if caption j is consistent with image i."""
    n = len(attrs)
    C = np.ones((n, n), bool)
    for k, vals in ATTR_VALUES.items():
        iv = np.array([vals.index(a[k]) for a in attrs])
        cv = np.array([vals.index(m[k]) if k in m else -1 for m in ments])
        C &= (cv[None, :] < 0) | (iv[:, None] == cv[None, :])
    return torch.from_numpy(C.astype(np.float32))


def target_entropy(C):
    """Lower bound of the multi-positive loss for this batch (entropy of the soft targets)."""
    def h(M):
        p = M / M.sum(1, keepdim=True)
        return -(p * torch.log(p.clamp_min(1e-12))).sum(1).mean()
    return 0.5 * (h(C) + h(C.t())).item()


def multi_pos_loss(img_f, txt_f, logit_scale, C):
    logits = logit_scale * img_f @ txt_f.t()
    ti = C / C.sum(1, keepdim=True)
    tt = C.t() / C.t().sum(1, keepdim=True)
    li = -(ti * F.log_softmax(logits, 1)).sum(1).mean()
    lt = -(tt * F.log_softmax(logits.t(), 1)).sum(1).mean()
    return 0.5 * (li + lt)


def make_model():
    from open_clip.model import CLIP
    return CLIP(**MODEL_CFG)


class PairStream(torch.utils.data.IterableDataset):
    """Yields whole pretraining batches (generated in a DataLoader worker, overlapping with compute)."""

    def __init__(self, seed, batch, total, clean0=0.6, clean1=0.1, clean_frac=0.5):
        self.seed, self.batch, self.total = seed, batch, total
        self.clean0, self.clean1, self.clean_frac = clean0, clean1, clean_frac
        self.tok = open_clip.get_tokenizer('ViT-B-32')

    def p_clean(self, step):
        """Curriculum: share of clean images decays linearly clean0 -> clean1 over the first clean_frac of training."""
        f = min(1.0, step / max(1, self.clean_frac * self.total))
        return self.clean0 + (self.clean1 - self.clean0) * f

    def __iter__(self):
        for step in range(self.total):
            # pretraining seeds: 10_000_000 + 1_000_000 * seed + step (tasks/probes use SeedSequence lists)
            imgs, caps, attrs, ments = G.batch(10_000_000 + self.seed * 1_000_000 + step, self.batch,
                                               p_clean=self.p_clean(step))
            yield torch.from_numpy(imgs), self.tok(caps), consistency(attrs, ments)


def param_groups(model, wd):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.ndim < 2 or 'embedding' in n or 'logit_scale' in n or n.endswith('class_embedding'):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{'params': decay, 'weight_decay': wd}, {'params': no_decay, 'weight_decay': 0.0}]


def save_local_dir(model, out):
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'open_clip_config.json'), 'w') as f:
        json.dump({"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}, f, indent=2)
    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(out, 'open_clip_model.safetensors'))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'model'))
    ap.add_argument('--steps', type=int, default=1600)
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--wd', type=float, default=0.05)
    ap.add_argument('--warmup', type=int, default=100)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--loss', choices=['multipos', 'clip'], default='multipos')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--workers', type=int, default=1, help='data-generation worker processes')
    ap.add_argument('--clean0', type=float, default=0.6, help='curriculum: initial share of clean images')
    ap.add_argument('--clean1', type=float, default=0.1, help='curriculum: final share of clean images')
    ap.add_argument('--clean-frac', type=float, default=0.5, help='curriculum: decay over this fraction of steps')
    ap.add_argument('--no-bf16', action='store_true')
    ap.add_argument('--bench', type=int, default=0, help='only time N steps')
    ap.add_argument('--init', default='', help='local-dir model to continue training from')
    ap.add_argument('--stop-after', type=int, default=0, help='stop (and save) after this step; schedule keeps --steps')
    ap.add_argument('--log-every', type=int, default=50)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = make_model()
    if args.init:  # continue from a saved local-dir model (new seed stream / schedule; optimizer state is fresh)
        from safetensors.torch import load_file
        model.load_state_dict(load_file(os.path.join(args.init, 'open_clip_model.safetensors')))
        print('initialised from', args.init, flush=True)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f'params {n_params/1e6:.2f}M', flush=True)
    opt = torch.optim.AdamW(param_groups(model, args.wd), lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    clip_loss = open_clip.ClipLoss()
    total = args.bench or args.steps

    def lr_at(s):
        if s < args.warmup:
            return args.lr * (s + 1) / args.warmup
        p = (s - args.warmup) / max(1, total - args.warmup)
        return args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * p)))

    log = {'args': vars(args), 'model_cfg': MODEL_CFG, 'steps': [], 'loss': [], 'time': []}
    t0 = time.time()
    tdata = 0.0
    ema = None
    floor_ema = None
    stream = PairStream(args.seed, args.batch, total, args.clean0, args.clean1, args.clean_frac)
    loader = torch.utils.data.DataLoader(stream, batch_size=None,
                                         num_workers=args.workers, prefetch_factor=4 if args.workers else None)
    it = iter(loader)
    for step in range(total):
        td = time.time()
        imgs, t, C = next(it)
        x = to_tensor(imgs.numpy())
        tdata += time.time() - td
        for g in opt.param_groups:
            g['lr'] = lr_at(step)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=not args.no_bf16), sdpa_kernel(SDPBackend.MATH):
            fi = model.encode_image(x)
            ft = encode_text_trunc(model, t)
        fi = F.normalize(fi.float(), dim=-1)
        ft = F.normalize(ft.float(), dim=-1)
        scale = model.logit_scale.exp()
        if args.loss == 'multipos':
            loss = multi_pos_loss(fi, ft, scale, C)
        else:
            loss = clip_loss(fi, ft, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        lv = loss.item()
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        fl = target_entropy(C) if args.loss == 'multipos' else 0.0
        floor_ema = fl if floor_ema is None else 0.98 * floor_ema + 0.02 * fl
        if step % args.log_every == 0 or step == total - 1:
            el = time.time() - t0
            log['steps'].append(step); log['loss'].append(ema); log['time'].append(el)
            log.setdefault('loss_floor', []).append(floor_ema)
            print(f'step {step} loss {lv:.4f} ema {ema:.4f} floor {floor_ema:.3f} scale {scale.item():.1f} lr {lr_at(step):.2e} '
                  f'elapsed {el:.0f}s (data {tdata:.0f}s) {el/(step+1):.2f}s/step', flush=True)
        if not args.bench and step > 0 and step % 400 == 0:
            save_local_dir(model, args.out + '_ckpt')
        if args.stop_after and step == args.stop_after:
            print(f'stopping after step {step} (schedule planned for {total} steps)', flush=True)
            break
    el = time.time() - t0
    print(f'done {step + 1} steps in {el:.0f}s, final ema loss {ema:.4f}', flush=True)
    if args.bench:
        return
    log['total_time_s'] = el
    log['final_loss_ema'] = ema
    log['final_loss_floor_ema'] = floor_ema
    save_local_dir(model, args.out)
    import shutil
    shutil.rmtree(args.out + '_ckpt', ignore_errors=True)   # periodic checkpoint no longer needed
    with open(os.path.join(args.out, 'train_log.json'), 'w') as f:
        json.dump(log, f)
    print('saved to', args.out)


if __name__ == '__main__':
    main()
