"""The prompt file's metadata: one typed :class:`PromptMeta`, written (:meth:`~PromptMeta.to_dict`) and read
(:meth:`~PromptMeta.from_dict`) here and nowhere else.

Reading checks every field once, when the file is loaded: a field that is missing or of the wrong kind is
a one-line :class:`PromptFileError` naming it, never a KeyError deep inside predict. Files written before
the metadata had a version (format 1: no ``format_version``, ``placeholder`` or ``name_template``) load
with the values dualpt used then; a file from a newer dualpt (a greater ``format_version``) is refused.
Keys this dualpt does not know are kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..core.vocab import METHODS
from ..data.classes import ClassEntry
from ..errors import PromptFileError
from ..model.head import ZERO_SHOT_TEMPLATE
from ..model.matcher import Matcher
from ..model.matching import ALIGNS, SolverSettings
from ..model.prompts import NAME_TEMPLATE, PLACEHOLDER

META_VERSION = 5  # 1: before PromptMeta; 2: adds format_version, placeholder, name_template; 3: adds method
#   and align (an older dualpt would score a coop or an "attn" file as DUAL-PT with graph matching: it must refuse it);
#   4: adds the residual head and temperature (an older dualpt would drop them and predict something else);
#   5: adds uniform_mix > 0 (an older dualpt would ignore it and give other probabilities)
DUALPT_VERSION = 2  # what plain dualpt files (graph matching) keep writing: an older dualpt reads them alike
HEAD_VERSION = 4  # what files with the residual head and no uniform share (uniform_mix 0) keep writing


def version_for(method: str, align: str = "graph", head: bool = False, mix: bool = False) -> int:
    """The format version a file is written with: 2 for dualpt with graph matching and no head (unchanged since),
    3 for the other methods and plans, 4 with the residual head, 5 when its probabilities mix in the uniform
    distribution (``mix``), so that an older dualpt refuses a file it would score differently."""
    if mix:
        return META_VERSION
    if head:
        return HEAD_VERSION
    return DUALPT_VERSION if method == "dualpt" and align == "graph" else 3


@dataclass
class PromptMeta:
    """What a prompt file says about itself (its tensors are described in :mod:`dualpt_cli.promptfile.io`)."""

    model: str  # the CLIP: open_clip name, or a local-dir:/hf-hub: spec
    pretrained: str  # its pretrained tag or weights file ("" for none)
    class_names: list[str]  # readable class names, in the order of the class_features rows
    n_prompts: int  # M, learnable prompts per class
    n_ctx: int  # context tokens per prompt
    embed_dim: int  # d, CLIP's joint embedding size
    class_specific: bool  # context per class (CoOp's CSC) instead of shared
    logit_scale: float  # the factor on the matching scores (Eq. 8)
    alpha: float  # graph matching: weight of the edge (GW) cost against the node cost
    lam: float  # graph matching: entropic regularisation lambda (stored as "lambda")
    outer_iters: int  # graph matching: outer iteration cap
    inner_iters: int  # graph matching: Sinkhorn iteration cap
    tol: float  # graph matching: stopping tolerance
    format_version: int = META_VERSION  # of this metadata; a greater one than META_VERSION is refused
    placeholder: str = PLACEHOLDER  # the word tokenised in each context slot before the context replaces it
    name_template: str = NAME_TEMPLATE  # a class's text after the context ("{name}."); encodes new classes
    class_folders: list[str] | None = None  # ImageFolder folder per class (None: the class names)
    text_width: int | None = None  # width of the text tokens (the context vectors' size)
    num_local: int | None = None  # N, local image features per image
    dual_weight: float = 1.0  # weight of the DUAL-PT logits in the blend (head.blend_logits)
    prior_weight: float = 0.0  # weight of the zero-shot prior logits
    zero_shot_template: str = ZERO_SHOT_TEMPLATE  # the name prompt of the prior for new classes
    image_fingerprint: list[float] | None = None  # global feature of a test pattern (fingerprint.py)
    prompt_texts: list[list[str]] | None = None  # per class and prompt, the text after the context
    dualpt_version: str | None = None  # the dualpt that wrote the file
    image_size: int | None = None  # the model's input size
    preprocess: dict[str, Any] | None = None  # the model's preprocessing config
    beta: float | None = None  # weight of L_LLM in training
    shots: int | None = None  # training images per class (None: all)
    seed: int | None = None  # training seed
    epochs: int | None = None  # epochs trained
    best_epoch: int | None = None  # the epoch whose context was kept
    precision: str | None = None  # training precision
    llm_context: bool | None = None  # whether LLM descriptions were used
    recipe: str | None = None  # training recipe
    prior: str | None = None  # where the prior came from: "names" or "descriptions"
    guard: dict[str, Any] | None = None  # the held-out comparison with zero-shot (train.Decision)
    align: str = "graph"  # the plan of the logits (alignment.py); files from before it: graph matching
    base_classes: str | None = None  # base-to-new: how the base classes were chosen ("half" or the class file)
    new_class_names: list[str] | None = None  # base-to-new: the held-out (new) classes' names ...
    new_class_folders: list[str] | None = None  # ... and folders; dualpt eval adds them when the folder has them
    method: str = "dualpt"  # how the file scores an image (TrainConfig.method); files before version 3: dualpt
    probe_normalize: bool | None = None  # linear-probe: cosine classifier (normalised weights) or plain
    temperature: float = 1.0  # the final logits are divided by it (model/residual.py; files before version 4: 1)
    uniform_mix: float = 0.0  # eps: probabilities (1 - eps) softmax + eps / K (residual.py; before version 5: 0)
    head: dict[str, Any] | None = None  # the residual head: penalty, folds, cross-validated accuracies
    tip_alpha: float | None = None  # tip-adapter(-f): the cache's weight alpha (model/tip_adapter.py) ...
    tip_beta: float | None = None  # ... and its sharpness beta
    extra: dict[str, Any] = field(default_factory=dict)  # keys this dualpt does not know, kept as they were

    @property
    def classes(self) -> list[ClassEntry]:
        """The trained classes as (folder, readable name)."""
        folders = self.class_folders or self.class_names
        return [ClassEntry(folder=f, name=n) for f, n in zip(folders, self.class_names)]

    @property
    def new_classes(self) -> list[ClassEntry]:
        """The classes held out of a base-to-new run (``--base-classes``), [] for other runs."""
        names = self.new_class_names or []
        return [ClassEntry(folder=f, name=n) for f, n in zip(self.new_class_folders or names, names)]

    def matcher(self, chunk: int | None = None) -> Matcher:
        """The graph matching the prompts were trained with (``chunk``: classes per step, a memory setting)."""
        solver = SolverSettings(
            alpha=self.alpha,
            lam=self.lam,
            outer_iters=self.outer_iters,
            inner_iters=self.inner_iters,
            tol=self.tol,
            align=self.align,
        )
        return Matcher(logit_scale=self.logit_scale, solver=solver, chunk=chunk)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored in the file (the inverse of :meth:`from_dict`)."""
        out = {_KEY.get(f.name, f.name): getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, meta: Any, path: str | Path) -> PromptMeta:
        """Check ``meta`` (a prompt file's stored metadata) and read it; :class:`PromptFileError` if unusable."""
        if not isinstance(meta, dict):
            raise PromptFileError(f"{path} has metadata that is not a JSON object; re-create it with dualpt train")
        version = meta.get("format_version", 1)
        if not _is_int(version) or version < 1:
            raise _bad(path, "format_version", "an integer >= 1", version)
        if version > META_VERSION:
            raise PromptFileError(
                f"{path} was made by a newer dualpt (metadata format {version}, this dualpt reads "
                f"up to {META_VERSION}); upgrade dualpt, or re-create it with dualpt train"
            )
        for key, (ok, what) in _CHECKS.items():
            if key not in meta or (meta[key] is None and key not in REQUIRED):
                if key in REQUIRED:
                    raise PromptFileError(
                        f"{path} lacks metadata field {key!r}: it was made by an older dualpt "
                        "(or edited); re-create it with dualpt train"
                    )
                continue
            if not ok(meta[key]):
                raise _bad(path, key, what, meta[key])
        for what, names_key, folders_key in (
            ("", "class_names", "class_folders"),
            ("new ", "new_class_names", "new_class_folders"),
        ):
            names, folders = meta.get(names_key) or [], meta.get(folders_key)
            if folders is not None and len(folders) != len(names):
                raise PromptFileError(
                    f"{path}: {len(folders)} {what}class folders for {len(names)} {what}class names "
                    "in its metadata; re-create it with dualpt train"
                )
        names = meta["class_names"]
        seen: set[str] = set()
        for name in names:
            if name.casefold() in seen:
                raise PromptFileError(f"{path} names class {name!r} twice; re-create it with dualpt train")
            seen.add(name.casefold())
        known = {_KEY.get(f.name, f.name): f.name for f in fields(cls) if f.name != "extra"}
        values = {known[k]: v for k, v in meta.items() if k in known and v is not None}
        values["format_version"] = version
        if version == 1:  # what dualpt did before the template was stored
            values.update(placeholder=PLACEHOLDER, name_template=NAME_TEMPLATE)
        return cls(**values, extra={k: v for k, v in meta.items() if k not in known})


_KEY = {"lam": "lambda"}  # field name -> key in the file, where they differ


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_names(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(isinstance(x, str) and x.strip() for x in v)


def _bad(path: str | Path, key: str, what: str, value: Any) -> PromptFileError:
    return PromptFileError(
        f"{path}: metadata field {key!r} must be {what}, got {str(value)[:60]!r}; re-create it with dualpt train"
    )


_COUNT = (lambda v: _is_int(v) and v >= 1, "an integer >= 1")
_POSITIVE = (lambda v: _is_number(v) and v > 0, "a positive number")
_WEIGHT = (lambda v: _is_number(v) and v >= 0, "a number >= 0")
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model": (lambda v: isinstance(v, str) and bool(v.strip()), "a model name"),
    "pretrained": (lambda v: isinstance(v, str), "a string"),
    "class_names": (_is_names, "a non-empty list of names"),
    "n_prompts": _COUNT,
    "n_ctx": _COUNT,
    "embed_dim": _COUNT,
    "class_specific": (lambda v: isinstance(v, bool), "true or false"),
    "logit_scale": _POSITIVE,
    "alpha": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "lambda": _POSITIVE,
    "outer_iters": _COUNT,
    "inner_iters": _COUNT,
    "tol": _POSITIVE,
    "placeholder": (lambda v: isinstance(v, str) and bool(v) and not any(c.isspace() for c in v), "one word"),
    "name_template": (lambda v: isinstance(v, str) and "{name}" in v, "a template with {name}"),
    "class_folders": (_is_names, "a non-empty list of names"),
    "text_width": _COUNT,
    "num_local": _COUNT,
    "dual_weight": _WEIGHT,
    "prior_weight": _WEIGHT,
    "zero_shot_template": (lambda v: isinstance(v, str) and "{}" in v, "a template with {}"),
    "image_fingerprint": (
        lambda v: isinstance(v, list) and len(v) > 0 and all(_is_number(x) for x in v),
        "a list of numbers",
    ),
    "prompt_texts": (lambda v: isinstance(v, list) and all(_is_names(t) for t in v), "a list of text lists"),
    "align": (lambda v: v in ALIGNS, f"one of {', '.join(ALIGNS)}"),
    "base_classes": (lambda v: isinstance(v, str), "a string"),
    "new_class_names": (_is_names, "a non-empty list of names"),
    "new_class_folders": (_is_names, "a non-empty list of names"),
    "method": (lambda v: v in METHODS, f"one of {', '.join(METHODS)} (a newer dualpt's method?)"),
    "probe_normalize": (lambda v: isinstance(v, bool), "true or false"),
    "temperature": _POSITIVE,
    "uniform_mix": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "head": (lambda v: isinstance(v, dict), "a JSON object"),
    "tip_alpha": _WEIGHT,
    "tip_beta": _WEIGHT,
}
REQUIRED = (
    "model",
    "pretrained",
    "class_names",
    "n_prompts",
    "n_ctx",
    "embed_dim",
    "class_specific",
    "logit_scale",
    "alpha",
    "lambda",
    "outer_iters",
    "inner_iters",
    "tol",
)
