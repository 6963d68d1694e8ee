"""Data-parallel training under torchrun: the pieces :mod:`train` uses to give the single-process result.

Every rank holds the whole feature set and the same prompt learner. Each step:

1. every rank draws the same global batch (the permutation comes from the seed, not from the rank) and
   takes its contiguous share of it (:func:`local_part`);
2. each rank's loss is its shard's mean loss times ``b_rank / B`` (:func:`share_of`), so the sum of the
   ranks' gradients is the gradient of the global batch's mean loss, as in one process;
3. one all-reduce sums, in float64, the gradients of every trainable parameter (any list: the context,
   a meta-net's weights) together with the step's loss and accuracy sums (:func:`reduce_step`);
   The text encoder's K x M prompts are split over the ranks too (:func:`prompt_features`): each encodes
   its share of the classes and the features are gathered, instead of every rank encoding all of them;
4. every rank takes the same optimizer step from the same summed gradients, so the parameters stay equal
   on every rank without being sent; the learning-rate schedule and the epochs do not depend on N.

With one process each helper returns at once and changes nothing (the gradients are not even copied), so
a single-process run is bit-for-bit what it was before torchrun support.

Rank 0 is the only rank that writes project files; :func:`on_main` runs such a step there and shares its
outcome, so a failure on rank 0 (a locked project, a bad checkpoint, a full disk) ends every rank with the
one message rank 0 prints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch

from ..core.distributed import Dist, PeerFailed
from ..core.project import Project, project_lock
from ..errors import DualptError
from ..model.prompts import PromptLearner
from .hooks import BestEpoch

T = TypeVar("T")


def local_part(idx: torch.Tensor, dist: Dist) -> torch.Tensor:
    """This rank's contiguous share of the global batch ``idx`` (may be empty when the batch is short)."""
    lo, hi = dist.shard_bounds(len(idx))
    return idx[lo:hi]


def share_of(local: int, total: int, dist: Dist) -> float:
    """The weight of a rank's mean loss: its share of the global batch (exactly 1.0 in one process)."""
    return 1.0 if not dist.distributed else local / total


def reduce_step(params: Sequence[torch.Tensor], stats: list[float], dist: Dist) -> list[float]:
    """Sum the gradients of ``params`` and the numbers ``stats`` over ranks, in one all-reduce.

    A parameter without a gradient on this rank (its share of the batch was empty) counts as zeros; after
    the call every parameter has the summed gradient on every rank. Returns the summed ``stats``.
    """
    if not dist.distributed:
        return stats
    parts = [
        p.grad.detach().reshape(-1).double().cpu()
        if p.grad is not None
        else torch.zeros(p.numel(), dtype=torch.float64)
        for p in params
    ]
    flat = dist.all_reduce_sum(
        torch.cat([*parts, torch.tensor(stats, dtype=torch.float64)]), "training: summing the gradients of a step"
    )
    start = 0
    for p in params:
        grad = flat[start : start + p.numel()].reshape(p.shape).to(p.device, p.dtype)
        p.grad = grad
        start += p.numel()
    return flat[start:].tolist()


def prompt_features(learner: PromptLearner, dist: Dist) -> torch.Tensor:
    """The (K, M, d) class prompt features, the text encoder's work split over the ranks.

    Each rank encodes a contiguous share of the classes; the features are gathered (an exact sum in which
    the other ranks add zeros) so every rank holds the same W; in the backward pass the gradients with
    respect to W are summed over ranks and each rank back-propagates through its own classes only. The
    context gradients that :func:`reduce_step` then sums are the single-process ones. One process, or
    fewer classes than ranks: the plain ``learner()``.
    """
    K = learner.num_classes
    if not dist.distributed or K < dist.world_size:
        features: torch.Tensor = learner()
        return features
    lo, hi = dist.shard_bounds(K)
    gathered: torch.Tensor = _GatherClasses.apply(learner(range(lo, hi)), lo, K, dist)
    return gathered


class _GatherClasses(torch.autograd.Function):
    """Every rank's share of the classes' features in class order, and the summed gradient of one's own share."""

    @staticmethod
    def forward(ctx: Any, mine: torch.Tensor, lo: int, K: int, dist: Dist) -> torch.Tensor:
        ctx.lo, ctx.hi, ctx.dist = lo, lo + len(mine), dist
        full = mine.new_zeros((K, *mine.shape[1:]))
        full[lo : ctx.hi] = mine
        return dist.all_reduce_sum(full, "training: gathering the class prompt features")

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        grad = ctx.dist.all_reduce_sum(grad.contiguous().clone(), "training: summing the prompt features' gradients")
        return grad[ctx.lo : ctx.hi], None, None, None


def epoch_max(values: dict[str, int], dist: Dist) -> dict[str, int]:
    """The largest of each count over ranks (the matching iterations an epoch took at most)."""
    if not dist.distributed:
        return values
    parts = dist.all_gather_json(values, "training: gathering the epoch's statistics")
    return {k: max(part[k] for part in parts) for k in values}


def on_main(dist: Dist, work: Callable[[], T], what: str) -> T | None:
    """``work()`` on rank 0 only (writing or checking project files); its value there, None elsewhere.

    The outcome is broadcast: when ``work`` raises a :class:`DualptError` on rank 0, every other rank raises
    :class:`PeerFailed` with the same message and exit code (the CLI prints it once, on rank 0).
    """
    if not dist.distributed:
        return work()
    value, failure = None, None
    if dist.is_main:
        try:
            value = work()
        except DualptError as exc:
            failure = exc
    told = dist.broadcast_json(None if failure is None else [str(failure), failure.exit_code], what)
    if failure is not None:
        raise failure
    if told is not None:
        error = PeerFailed(f"rank 0 failed: {told[0]}")
        error.exit_code = told[1]
        raise error
    return value


@contextlib.contextmanager
def main_holds_project(project: Project, command: str, dist: Dist) -> Iterator[None]:
    """The project lock, taken by rank 0 alone (the ranks of one job are one writer)."""
    with contextlib.ExitStack() as stack:
        on_main(dist, lambda: stack.enter_context(project_lock(project.ensure(), command)), "taking the project lock")
        yield


def same_start(
    dist: Dist, params: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer, start: int, best: BestEpoch
) -> tuple[int, BestEpoch]:
    """Rank 0's starting point on every rank: after ``--resume`` only rank 0 has read the checkpoint.

    The epoch and best-validation record go as JSON; the parameters, SGD momentum and the best epoch's
    state (tensors by name) as tensors (a sum in which the other ranks add zeros, so the
    values arrive exactly).
    """
    if not dist.distributed:
        return start, best
    momentum = [optimizer.state.get(p, {}).get("momentum_buffer") for p in params]
    kept = best.state
    named = kept if kept is not None else {}
    state = dist.broadcast_json(
        {
            "start": start,
            "best_epoch": best.epoch,
            "best_acc": best.acc,
            "momentum": [m is not None for m in momentum],
            "best": {k: list(v.shape) for k, v in named.items()} if kept is not None else None,
        },
        "resuming: receiving rank 0's state",
    )
    like = params[0]
    with torch.no_grad():
        for p, m, has in zip(params, momentum, state["momentum"]):
            p.copy_(_from_main(dist, p))
            if has:
                optimizer.state[p]["momentum_buffer"] = _from_main(dist, m if m is not None else torch.zeros_like(p))
        got = None
        if state["best"] is not None:
            got = {
                k: _from_main(dist, named[k] if k in named else like.new_zeros(shape))
                for k, shape in state["best"].items()
            }
    return state["start"], BestEpoch(state["best_epoch"], state["best_acc"], got)


def _from_main(dist: Dist, tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``tensor`` (same shape on every rank)."""
    mine = tensor.detach().double().cpu() if dist.is_main else torch.zeros(tensor.shape, dtype=torch.float64)
    return dist.all_reduce_sum(mine, "resuming: receiving rank 0's tensors").to(tensor.device, tensor.dtype)
