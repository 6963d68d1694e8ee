"""The prompt learner: M learnable prompts of n_ctx context vectors, turned into class prompt features.

Prompt j for class k is ``[SOS] ctx_j,1 .. ctx_j,n_ctx <class name tokens> . [EOT]`` (method card,
"Prompts"); ``w_k = normalize(g(prompt_k,j))`` for j = 1..M.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..clip.backbone import Backbone
from ..errors import DataError
from .defaults import DESCRIPTION_TEMPLATE, MENON_VONDRICK, NAME_TEMPLATE  # noqa: F401  (re-exported)

PLACEHOLDER = "X"  # one BPE token per context slot, as CoOp does


def phrase_text(template: str, name: str, phrase: str) -> str:
    """A class's phrase as a text: ``template`` with ``{name}`` and ``{phrase}`` (its final period dropped), or with
    :data:`MENON_VONDRICK` their release's ``make_descriptor_sentence``: "{name}, which is {phrase}" for a phrase
    starting with "a"/"an" or "used", "{name}, which {phrase}" for "has"/"often"/"typically"/"may"/"can",
    else "{name}, which has {phrase}" (their default: ", " between, nothing after)."""
    phrase = phrase.rstrip(".")
    if template != MENON_VONDRICK:
        return template.format(name=name, phrase=phrase)
    if phrase.startswith(("a", "an", "used")):
        return f"{name}, which is {phrase}"
    if phrase.startswith(("has", "often", "typically", "may", "can")):
        return f"{name}, which {phrase}"
    return f"{name}, which has {phrase}"


class PromptLearner(nn.Module):
    """Learnable context shared across classes (default) or per class (``class_specific``, CoOp's CSC).

    Buffers hold the frozen token embeddings of SOS and of each class's name + "." + EOT; only ``ctx``
    is trained.
    """

    _sos: torch.Tensor  # buffers (registered in __init__ and set_classes)
    token_suffix: torch.Tensor  # (K, Ls, W) or (K, M, Ls, W)
    eot: torch.Tensor  # (K,) or (K, M)

    def __init__(
        self,
        bb: Backbone,
        class_names: list[str],
        n_prompts: int = 4,
        n_ctx: int = 16,
        ctx_init: str = "",
        class_specific: bool = False,
        seed: int = 1,
        class_texts: list[list[str]] | None = None,
        placeholder: str = PLACEHOLDER,
        name_template: str = NAME_TEMPLATE,
    ):
        super().__init__()
        self.bb = bb
        self.n_prompts, self.n_ctx, self.class_specific = n_prompts, n_ctx, class_specific
        self.placeholder, self.name_template = placeholder, name_template  # stored in the prompt file
        self.use_prefix_cache = True  # exact shortcut: SOS + context computed once per prompt per step
        self.truncate = True  # exact shortcut: positions after the longest EOT are never computed
        self.text_chunk = 0  # classes per text-encoder chunk with activation checkpointing (0 = all at once)
        width = bb.text_width
        self.register_buffer("_sos", torch.empty(0), persistent=False)
        self.set_classes(class_names, class_texts)

        gen = torch.Generator().manual_seed(seed)
        shape = (len(class_names), n_prompts, n_ctx, width) if class_specific else (n_prompts, n_ctx, width)
        ctx = torch.randn(shape, generator=gen) * 0.02  # N(0, 0.02), CoOp/PLOT
        if ctx_init:
            words = self._init_embeddings(ctx_init)  # (n_ctx, width), words at the end, as CoOp
            ctx[..., 0, :, :] = words  # prompt 0 starts exactly at the words; others = words + small noise
            ctx[..., 1:, :, :] += words
        self.ctx = nn.Parameter(ctx.to(bb.device))

    # -- class tokens ---------------------------------------------------------------------------------------

    def set_classes(self, class_names: list[str], class_texts: list[list[str]] | None = None) -> None:
        """Tokenise ``[SOS] X*n_ctx <text> [EOT]`` per class (and prompt); keep frozen embeddings as buffers.

        ``class_texts`` gives each class's M texts after the context (``"{name}, which has {phrase}."``);
        without it every prompt of class k ends in ``name_template`` (``"{name}."``, the method card's prompt).
        """
        if not class_names:
            raise DataError("no class names to build prompts for")
        if self.n_ctx + 4 > self.bb.context_length:  # SOS, context, at least one name token, ".", EOT
            raise DataError(
                f"--ctx-len {self.n_ctx} is too long for the model's {self.bb.context_length}-token text "
                f"context; use at most {self.bb.context_length - 4} (fewer leaves room for class names)"
            )
        texts = class_texts or [[self.name_template.format(name=name)] for name in class_names]
        if class_texts is not None and any(len(t) != self.n_prompts for t in class_texts):
            raise DataError(f"each class needs {self.n_prompts} prompt texts")
        flat = [t for per_class in texts for t in per_class]
        tokens = self.bb.tokenize([" ".join([self.placeholder] * self.n_ctx) + " " + t for t in flat])  # (P, L)
        eot = self.bb.eot_positions(tokens)
        too_long = [t for t, e in zip(flat, eot.tolist()) if e >= tokens.shape[1] - 1]  # cut off
        if too_long:
            if class_texts is not None:
                raise DataError(
                    f"prompt text too long for the text encoder with {self.n_ctx} context tokens: "
                    f"{too_long[0]!r}; shorten that phrase in descriptions.json, or train with "
                    "--prompt-text name"
                )
            raise DataError(
                f"class name too long for the text encoder with {self.n_ctx} context tokens: "
                f"{too_long[0]!r}; shorten it or lower --ctx-len"
            )
        emb = self.bb.token_embeds(tokens)  # (P, L, width)
        self.class_names = list(class_names)
        self.class_texts = [list(t) for t in texts]
        self.per_prompt = class_texts is not None  # suffixes differ between the M prompts of a class
        self._sos = emb[0, :1].clone()  # (1, width): SOS is the same token for every class
        suffix = emb[:, 1 + self.n_ctx :]  # (P, L-1-n, W)
        if self.per_prompt:
            suffix = suffix.unflatten(0, (len(class_names), self.n_prompts))  # (K, M, Ls, W)
            eot = eot.unflatten(0, (len(class_names), self.n_prompts))  # (K, M)
        self.register_buffer("token_suffix", suffix.clone(), persistent=False)  # (K, Ls, W) or (K, M, Ls, W)
        self.register_buffer("eot", eot, persistent=False)  # (K,) or (K, M)

    def _init_embeddings(self, text: str) -> torch.Tensor:
        tokens = self.bb.tokenize([text])
        n_words = int(self.bb.eot_positions(tokens)[0]) - 1
        if n_words < 1 or n_words > self.n_ctx:
            raise DataError(
                f"--ctx-init {text!r} has {n_words} tokens; it must have 1 to --ctx-len ({self.n_ctx}) tokens"
            )
        emb = self.bb.token_embeds(tokens)[0, 1 : 1 + n_words].cpu()  # (n_words, width)
        out = torch.zeros(self.n_ctx, emb.shape[1])
        out[self.n_ctx - n_words :] = emb  # the words sit right before the class name
        return out

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- forward --------------------------------------------------------------------------------------------

    def forward(self, classes: range | None = None) -> torch.Tensor:
        """(K, M, d) normalised class prompt features (of ``classes`` only, if given); gradients flow into ``ctx``."""
        return F.normalize(self._by_class_chunks(self._encode, dim=0, classes=classes), dim=-1)

    def _by_class_chunks(
        self, encode: Callable[..., torch.Tensor], *args: torch.Tensor, dim: int, classes: range | None = None
    ) -> torch.Tensor:
        """``encode(idx, *args)`` for ``text_chunk`` classes at a time (with activation checkpointing while
        gradients are on), concatenated along ``dim``; all classes, or the contiguous ``classes``."""
        lo, K = (classes.start, classes.stop) if classes is not None else (0, self.num_classes)
        chunk = self.text_chunk or K - lo
        parts = []
        for start in range(lo, K, chunk):
            idx = slice(start, min(start + chunk, K))
            if torch.is_grad_enabled() and chunk < K - lo:
                parts.append(checkpoint(encode, idx, *args, use_reentrant=False))
            else:
                parts.append(encode(idx, *args))
        return torch.cat(parts, dim=dim)

    def _encode(self, idx: slice) -> torch.Tensor:
        """(k, M, d) unnormalised features for classes ``idx``."""
        M, W = self.n_prompts, self.ctx.shape[-1]
        suffix, eot = self.token_suffix[idx], self.eot[idx]  # (k, Ls, W), (k,)
        k = suffix.shape[0]
        Lp = 1 + self.n_ctx
        sos = self._sos.to(self.ctx.dtype)
        if self.truncate:
            suffix = suffix[..., : int(eot.max()) + 1 - Lp, :]
        if not self.per_prompt:  # one suffix per class, the same for its M prompts
            suffix = suffix.unsqueeze(1).expand(k, M, suffix.shape[1], W)  # (k, M, Ls, W)
            eot = eot.unsqueeze(1).expand(k, M)  # (k, M)
        if not self.class_specific and self.use_prefix_cache and self.bb.supports_prefix_cache:
            prefix = torch.cat([sos.expand(M, 1, W), self.ctx], dim=1)  # (M, Lp, W)
            feats = self.bb.encode_text_prefixed(prefix, suffix.transpose(0, 1), eot.T)  # (M, k, d)
            return feats.transpose(0, 1)  # (k, M, d)
        ctx = self.ctx[idx] if self.class_specific else self.ctx.unsqueeze(0).expand(k, M, self.n_ctx, W)
        full = torch.cat([sos.expand(k, M, 1, W), ctx, suffix], dim=2)  # (k, M, L, W)
        feats = self.bb.encode_text_embeds(
            full.reshape(k * M, -1, W), eot.reshape(k * M), truncate=self.truncate
        )  # (k*M, d)
        return feats.reshape(k, M, -1)


# ---------------------------------------------------------------------------------------------------------
# The conditional variant (CoDUAL-PT): CoCoOp's meta-net makes the prompts depend on the image


class MetaNet(nn.Module):
    """CoCoOp's meta-net: Linear(d, d/16) - ReLU - Linear(d/16, width), one token pi(z) per image.

    Initialised with PyTorch's default Linear init, drawn from a generator seeded with ``seed``.
    """

    def __init__(self, embed_dim: int, width: int, seed: int = 1):
        super().__init__()
        hidden = max(1, embed_dim // 16)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.linear1 = nn.Linear(embed_dim, hidden)
            self.linear2 = nn.Linear(hidden, width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, d) normalised global image features -> (B, width) conditional tokens."""
        token: torch.Tensor = self.linear2(F.relu(self.linear1(z)))
        return token


class ConditionalPromptLearner(PromptLearner):
    """CoDUAL-PT's prompts: the M shared contexts, each shifted by the image's token, ctx_j,i + pi(z).

    Defaults follow the method card's conditional variant (CoCoOp's recipe): n_ctx 4 initialised from
    "a photo of a". The context must be shared across classes (CoCoOp has no class-specific variant).
    The plain :meth:`forward` (no image) gives the unshifted prompts; :meth:`forward_conditional` the
    per-image ones.
    """

    def __init__(
        self,
        bb: Backbone,
        class_names: list[str],
        n_prompts: int = 4,
        n_ctx: int = 4,
        ctx_init: str = "a photo of a",
        seed: int = 1,
        class_texts: list[list[str]] | None = None,
        class_specific: bool = False,
    ):
        if class_specific:
            raise DataError(
                "the conditional variant (codualpt) shares its context across classes; drop --class-specific"
            )
        super().__init__(
            bb, class_names, n_prompts=n_prompts, n_ctx=n_ctx, ctx_init=ctx_init, seed=seed, class_texts=class_texts
        )
        self.meta_net = MetaNet(bb.embed_dim, bb.text_width, seed).to(bb.device)

    def forward_conditional(self, z: torch.Tensor) -> torch.Tensor:
        """Per-image class prompt features; gradients flow into ``ctx`` and the meta-net.

        Args:
            z: (B, d) global image features (normalised here, as CoCoOp does).
        Returns:
            (B, K, M, d) normalised features: image b's prompts for every class.
        """
        token = self.meta_net(F.normalize(z.float(), dim=-1).to(self.ctx.dtype))  # (B, W)
        ctx = self.ctx.unsqueeze(0) + token[:, None, None, :]  # (B, M, n_ctx, W)
        return F.normalize(self._by_class_chunks(self._encode_conditional, ctx, dim=1), dim=-1)

    def _encode_conditional(self, idx: slice, ctx: torch.Tensor) -> torch.Tensor:
        """(B, k, M, d) unnormalised features of classes ``idx`` for per-image contexts ``ctx`` (B, M, n_ctx, W).

        With the prefix cache the B*M prefixes (SOS + shifted context) are computed once each and every
        class's suffix attends to them: the text encoder runs over B*M prefixes and B*M*k suffixes.
        """
        B, M, n, W = ctx.shape
        suffix, eot = self.token_suffix[idx], self.eot[idx]  # (k, Ls, W), (k,) or (k, M, Ls, W), (k, M)
        k = suffix.shape[0]
        Lp = 1 + n
        sos = self._sos.to(ctx.dtype)
        if self.truncate:
            suffix = suffix[..., : int(eot.max()) + 1 - Lp, :]
        Ls = suffix.shape[-2]
        if self.use_prefix_cache and self.bb.supports_prefix_cache:
            prefix = torch.cat([sos.expand(B, M, 1, W), ctx], dim=2).reshape(B * M, Lp, W)  # (B*M, Lp, W)
            if self.per_prompt:  # prompt m of every image ends in class k's m-th text
                suffix = suffix.transpose(0, 1).unsqueeze(0).expand(B, M, k, Ls, W).reshape(B * M, k, Ls, W)
                eot = eot.T.unsqueeze(0).expand(B, M, k).reshape(B * M, k)
            feats = self.bb.encode_text_prefixed(prefix, suffix, eot)  # (B*M, k, d)
            return feats.reshape(B, M, k, -1).transpose(1, 2)  # (B, k, M, d)
        if not self.per_prompt:
            suffix = suffix.unsqueeze(1).expand(k, M, Ls, W)  # (k, M, Ls, W)
            eot = eot.unsqueeze(1).expand(k, M)  # (k, M)
        full = torch.cat(
            [
                sos.expand(B, k, M, 1, W),
                ctx.unsqueeze(1).expand(B, k, M, n, W),
                suffix.unsqueeze(0).expand(B, k, M, Ls, W),
            ],
            dim=3,
        )  # (B, k, M, L, W)
        feats = self.bb.encode_text_embeds(
            full.reshape(B * k * M, -1, W), eot.unsqueeze(0).expand(B, k, M).reshape(-1), truncate=self.truncate
        )  # (B*k*M, d)
        return feats.reshape(B, k, M, -1)


# ---------------------------------------------------------------------------------------------------------
# LLM description embeddings


def description_features(
    bb: Backbone, class_names: list[str], phrases: list[list[str]], template: str = DESCRIPTION_TEMPLATE
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Encode each class's phrases once (frozen): h_k in R^{e_k x d}.

    Returns:
        mean: (K, d) mean of the normalised phrase features (zeros where a class has none);
        has: (K,) bool, classes that have at least one phrase;
        per_class: K tensors of shape (e_k, d), normalised.
    """
    texts, owner = [], []
    for k, (name, items) in enumerate(zip(class_names, phrases)):
        for phrase in items:
            texts.append(phrase_text(template, name, phrase))
            owner.append(k)
    d = bb.embed_dim
    mean = torch.zeros(len(class_names), d, device=bb.device)
    has = torch.zeros(len(class_names), dtype=torch.bool, device=bb.device)
    per_class = [torch.zeros(0, d, device=bb.device) for _ in class_names]
    if not texts:
        return mean, has, per_class
    feats = bb.encode_texts(texts)  # (P, d) normalised
    owner_t = torch.tensor(owner, device=bb.device)
    for k in owner_t.unique().tolist():
        rows = feats[owner_t == k]
        per_class[k] = rows
        mean[k] = rows.mean(dim=0)
        has[k] = True
    return mean, has, per_class
