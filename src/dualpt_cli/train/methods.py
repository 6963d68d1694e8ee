"""What the training loop does with a registered method (:mod:`.registry`; docs/method.md, "Methods").

- The prompt-tuning methods (dualpt, plot, coop, codualpt, cocoop) share the loop: :func:`build_learner` gives
  the learner of the method, :func:`trainable` its parameters, :func:`batched_logits` its scores on cached
  features (validation, the guard).
- The methods with a ``fit`` (linear-probe, tip-adapter(-f), zero-shot, descriptions) run no epochs of that loop
  (:func:`run_fixed`): they are fitted (or just built) on the cached features and still write a prompt file, with
  the context of :func:`fixed_learner`, so predict, eval and explain read every method alike.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..clip.backbone import Backbone
from ..core.distributed import SINGLE, Dist
from ..core.project import Project
from ..model.conditional import TEXT_BUDGET
from ..model.head import name_features
from ..model.prompts import ConditionalPromptLearner, PromptLearner
from .config import TrainConfig
from .export import Kept, MethodExtras, RunRecord, save_prompts
from .hooks import Callbacks, TrainResult
from .method import FitInputs
from .objective import Objective
from .registry import train_method
from .trainset import TrainData

FIXED_CONTEXT = "a photo of a"  # the context of a training-free prompt file: its one prompt is zero-shot CLIP's


def build_learner(
    cfg: TrainConfig, bb: Backbone, data: TrainData, class_texts: list[list[str]] | None
) -> PromptLearner:
    """The prompt learner of ``cfg.method`` (its ``TrainMethod.learner``; codualpt, cocoop: with CoCoOp's meta-net)."""
    build = train_method(cfg.method).learner
    assert build is not None, f"--method {cfg.method} is fitted on the cached features, not trained by the loop"
    learner = build(cfg, bb, [c.name for c in data.classes], class_texts)
    learner.text_chunk = cfg.text_chunk
    return learner


def trainable(learner: PromptLearner) -> list[torch.nn.Parameter]:
    """What the optimiser updates: the context (and the meta-net for codualpt); CLIP stays frozen."""
    return [p for p in learner.parameters() if p.requires_grad]


def snapshot(learner: PromptLearner) -> dict[str, torch.Tensor]:
    """A copy of the trainable tensors by name (``ctx``, ``meta_net.linear1.weight`` ...): the best epoch's."""
    return {name: p.detach().clone() for name, p in learner.named_parameters()}


@torch.no_grad()
def restore(learner: PromptLearner, state: dict[str, torch.Tensor]) -> None:
    for name, p in learner.named_parameters():
        p.copy_(state[name].to(p.device))


@torch.no_grad()
def batched_logits(
    objective: Objective,
    learner: PromptLearner,
    local: torch.Tensor,
    global_: torch.Tensor,
    batch_size: int = 256,
    dist: Dist = SINGLE,
) -> torch.Tensor:
    """(V, K) logits of cached features ``local`` (V, N, d) and ``global_`` (V, d), as training scores them.

    Under torchrun every rank calls it (its share of the images may be empty): the shared prompts are encoded
    once, with the classes split over the ranks."""
    bb = learner.bb
    conditional = isinstance(learner, ConditionalPromptLearner)
    if conditional:  # every image encodes its own K x M prompts
        batch_size = max(1, min(batch_size, TEXT_BUDGET // (learner.num_classes * learner.n_prompts)))
    W = None if conditional else objective.prompts(learner, None, dist)  # (K, M, d), once
    out = [torch.zeros(0, learner.num_classes, device=bb.device)]
    for start in range(0, len(local), batch_size):
        Z = local[start : start + batch_size].to(bb.device).float()
        z = global_[start : start + batch_size].to(bb.device).float()
        if conditional:
            W = objective.prompts(learner, z)  # (b, K, M, d)
        assert W is not None  # the shared prompts once, or this batch's conditional ones
        with bb.autocast():
            out.append(objective.logits(Z, W, z).float())
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------------
# the methods fitted on the cached features


def fixed_learner(bb: Backbone, names: list[str]) -> PromptLearner:
    """One prompt whose context is the words "a photo of a": its class features are zero-shot CLIP's, and a
    training-free prompt file stores it as its context so new classes encode the same way as for any method."""
    n_words = int(bb.eot_positions(bb.tokenize([FIXED_CONTEXT]))[0]) - 1
    learner = PromptLearner(bb, names, n_prompts=1, n_ctx=n_words, ctx_init=FIXED_CONTEXT)
    learner.eval()
    return learner


def run_fixed(
    cfg: TrainConfig, cb: Callbacks, project: Project, bb: Backbone, data: TrainData, objective: Objective
) -> TrainResult:
    """A method fitted on the cached features (``TrainMethod.fit``: linear-probe, tip-adapter(-f), zero-shot,
    descriptions): fit (or just build) the classifier and write the prompt file."""
    t0 = time.perf_counter()
    fit = train_method(cfg.method).fit
    assert fit is not None, f"--method {cfg.method} is trained by the loop"
    names = [c.name for c in data.classes]
    learner = fixed_learner(bb, names)
    n_views = data.train.global_.shape[1]
    z = data.train.global_.flatten(0, 1).to(bb.device).float()  # (images x views, d): every cached view
    labels = data.train_labels.repeat_interleave(n_views).to(bb.device)
    text = name_features(bb, names)  # (K, d) "a photo of a {name}."
    fitted = fit(FitInputs(cfg, cb, project, bb, data, z, labels, text, objective.desc_mean, objective.desc_has))
    loss = float(F.cross_entropy(fitted.logits.float(), labels))
    acc = float((fitted.logits.argmax(-1) == labels).float().mean())
    run = RunRecord(cfg, objective, data, fitted.epochs)
    kept, extras = Kept(fitted.decision, fitted.prior), MethodExtras(fitted.tensors, fitted.meta)
    path = save_prompts(project, learner, run, kept, extras)
    return TrainResult(
        prompt_file=path,
        epochs=fitted.epochs,
        train_acc=acc,
        loss=loss,
        seconds=time.perf_counter() - t0,
        best_epoch=None,
        val_acc=None,
        skipped=[(str(p), r) for p, r in data.train.bad],
        profile=None,
        guard=None,
        method=cfg.method,
    )
