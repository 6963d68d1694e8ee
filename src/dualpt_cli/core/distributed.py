"""Running under ``torchrun``: the one module that talks to ``torch.distributed``.

dualpt has no launcher of its own. ``torchrun --nproc-per-node N -m dualpt_cli ...`` starts N processes
and tells each its place in the job through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). :func:`distributed` reads that, joins the process group (NCCL when the
rank's device is a GPU, gloo otherwise; the GPU is the one of ``LOCAL_RANK``) and yields a :class:`Dist`;
started any other way it yields the single-process :class:`Dist`, whose collectives return at once, so
library code calls the same API either way::

    with distributed(device="auto") as dist:
        bb = load_backbone(spec, device=dist.device)
        fs = encode_views(bb, paths, views, cache_dir, dist=dist)   # each rank encodes its shard
        if dist.is_main:
            write_outputs(...)

Failures end the whole job with one line instead of a hang: every collective runs under a timeout
(``$DUALPT_DIST_TIMEOUT`` seconds, default 1800), a peer that dies or does not answer in time becomes a
:class:`~dualpt_cli.errors.DistributedError` naming the step, and the SIGTERM with which torchrun stops the
other ranks when one fails is turned into that error too, so ``finally`` blocks run (atomic writes remove
their temporary file) and the process group is torn down.

Values go between ranks as tensors or JSON text, never as pickles: a rank never unpickles bytes another
process sent it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from types import FrameType
from typing import Any, TypeVar

import torch

from ..errors import DistributedError
from .launch import JOINED, LAUNCH_VARS, LaunchEnv, PeerFailed, launch_env, launch_rank  # noqa: F401  (re-exported)
from .shards import shard, shard_bounds

T = TypeVar("T")

TIMEOUT_ENV = "DUALPT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0  # a barrier waits at most this long for the slowest rank


def timeout_from_env(environ: Mapping[str, str] | None = None) -> float:
    """Seconds a collective may wait: ``$DUALPT_DIST_TIMEOUT`` (a positive number), else the default."""
    text = (os.environ if environ is None else environ).get(TIMEOUT_ENV, "")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise DistributedError(f"{TIMEOUT_ENV}={text!r}: expected a positive number of seconds, e.g. 1800")
    return value


class Dist:
    """This process's place in the job and the few collectives dualpt uses.

    The single-process instance (``Dist()``) answers every collective at once: ``all_reduce_sum`` leaves the
    tensor as it is, ``gather_json`` returns ``[value]``, ``broadcast_json`` returns ``value``. A failed or
    timed-out collective raises :class:`DistributedError` naming ``what`` was being done.
    """

    def __init__(
        self,
        rank: int = 0,
        world_size: int = 1,
        local_rank: int = 0,
        device: str = "auto",
        backend: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ):
        self.rank = rank  # this process, 0 .. world_size - 1
        self.world_size = world_size  # processes in the job
        self.local_rank = local_rank  # index on this machine
        self.device = device  # the device this rank computes on, for load_backbone (cuda:LOCAL_RANK on GPUs)
        self.backend = backend  # "nccl" / "gloo", None without a process group
        self.timeout_s = timeout_s  # how long a collective waits for the slowest rank
        # tensors travel on the rank's GPU with NCCL, on the CPU with gloo
        self.comm_device = torch.device(device) if backend == "nccl" else torch.device("cpu")

    def __repr__(self) -> str:
        return f"Dist(rank={self.rank}, world_size={self.world_size}, device={self.device!r}, backend={self.backend!r})"

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the project files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def meta(self) -> dict[str, Any]:
        """What ``run_config.json`` records about the job."""
        return {"world_size": self.world_size, "backend": self.backend}

    def shard_bounds(self, n: int, align: int = 1) -> tuple[int, int]:
        return shard_bounds(n, self.rank, self.world_size, align)

    def shard(self, items: Sequence[T], align: int = 1) -> list[T]:
        return shard(items, self.rank, self.world_size, align)

    def barrier(self, what: str = "waiting for every rank") -> None:
        if self.distributed:
            import torch.distributed as tdist

            self._collective(what, tdist.barrier)

    def all_reduce_sum(self, tensor: torch.Tensor, what: str = "summing over ranks") -> torch.Tensor:
        """Sum ``tensor`` over all ranks, in place; returns it."""
        if self.distributed:
            import torch.distributed as tdist

            buf = tensor.to(self.comm_device)
            self._collective(what, lambda: tdist.all_reduce(buf, op=tdist.ReduceOp.SUM))
            if buf is not tensor:
                tensor.copy_(buf)
        return tensor

    def sum(self, value: float, what: str = "summing over ranks") -> float:
        """A number summed over all ranks (float64 on the wire: counts stay exact up to 2**53)."""
        return float(self.all_reduce_sum(torch.tensor([value], dtype=torch.float64), what)[0])

    def all_gather_json(self, value: Any, what: str = "gathering from every rank") -> list[Any]:
        """Every rank's ``value`` (JSON-serialisable), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        import torch.distributed as tdist

        payload = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8)
        size = torch.tensor([payload.numel()], dtype=torch.int64, device=self.comm_device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        self._collective(what, lambda: tdist.all_gather(sizes, size))
        longest = int(max(sizes).item())
        buf = torch.zeros(longest, dtype=torch.uint8, device=self.comm_device)
        buf[: payload.numel()] = payload.to(self.comm_device)
        bufs = [torch.empty_like(buf) for _ in range(self.world_size)]
        self._collective(what, lambda: tdist.all_gather(bufs, buf))
        return [json.loads(b[: int(s.item())].cpu().numpy().tobytes()) for b, s in zip(bufs, sizes)]

    def gather_json(self, value: Any, what: str = "gathering on rank 0") -> list[Any] | None:
        """Every rank's ``value`` in rank order on rank 0; None on the others.

        Meant for small values (counts, file names, a shard's row list): each rank holds all parts for a
        moment. Large outputs are better written by each rank to a part file and concatenated by rank 0.
        """
        parts = self.all_gather_json(value, what)
        return parts if self.is_main else None

    def broadcast_json(self, value: Any, what: str = "receiving rank 0's value") -> Any:
        """Rank 0's ``value`` (JSON-serialisable) on every rank; the others' ``value`` is ignored."""
        if not self.distributed:
            return value
        import torch.distributed as tdist

        payload = json.dumps(value).encode() if self.is_main else b""
        size = torch.tensor([len(payload)], dtype=torch.int64, device=self.comm_device)
        self._collective(what, lambda: tdist.broadcast(size, src=0))
        buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.comm_device)
        if self.is_main:
            buf.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
        self._collective(what, lambda: tdist.broadcast(buf, src=0))
        return json.loads(buf.cpu().numpy().tobytes())

    def _collective(self, what: str, call: Callable[[], Any]) -> Any:
        """Run one collective; a dead or silent peer becomes one clear :class:`DistributedError`."""
        try:
            return call()
        except RuntimeError as exc:  # DistBackendError, DistNetworkError, gloo's timeouts are RuntimeErrors
            raise DistributedError(
                f"{what}: failed on rank {self.rank} of {self.world_size} because another rank stopped or did "
                f"not answer within {self.timeout_s:g} s ({_short(exc)}); look for the first error above, "
                f"or raise {TIMEOUT_ENV} if a rank is just slow"
            ) from None


SINGLE = Dist()  # one process: the default of every function that takes a Dist


@contextlib.contextmanager
def distributed(device: str = "auto", timeout_s: float | None = None) -> Iterator[Dist]:
    """This process's :class:`Dist` for the block: a joined process group under torchrun, else one process.

    ``device`` is the user's ``--device``. Under torchrun every rank of a GPU job (``auto`` or ``cuda``
    with CUDA present) computes on ``cuda:LOCAL_RANK`` and talks NCCL; any other device talks gloo. On
    leaving the block, also by an error or Ctrl-C, the process group is destroyed and the SIGTERM handler
    put back.
    """
    env = launch_env()
    if env is None or env.world_size == 1:
        yield Dist(device=device)
        return
    timeout_s = timeout_from_env() if timeout_s is None else timeout_s
    rank_device, backend = _rank_device(device, env)
    import torch.distributed as tdist

    restore = _stop_on_sigterm(env)
    try:
        if backend == "nccl":
            torch.cuda.set_device(env.local_rank)
        try:
            tdist.init_process_group(
                backend, rank=env.rank, world_size=env.world_size, timeout=timedelta(seconds=timeout_s)
            )
        except (RuntimeError, ValueError) as exc:
            raise DistributedError(
                f"rank {env.rank} of {env.world_size} could not join the job at {env.master} within "
                f"{timeout_s:g} s ({_short(exc)}); start every rank with the same torchrun --master-addr/"
                "--master-port (or --rdzv-endpoint) and check that this machine can reach it"
            ) from None
        dist = Dist(env.rank, env.world_size, env.local_rank, rank_device, backend, timeout_s)
        JOINED.add(env.rank)
        try:
            yield dist
            # all ranks leave together, so none tears its group down while a peer still talks to it
            dist.barrier("finishing: waiting for every rank")
        finally:
            with contextlib.suppress(Exception):  # a peer may be gone already: nothing left to tell it
                tdist.destroy_process_group()
            # free the C++ group and gloo's threads now, while the interpreter is whole: left to the exit,
            # a rank aborted in about 1 of 10 runs here ("terminate called without an active exception")
            gc.collect()
    finally:
        restore()


def _rank_device(device: str, env: LaunchEnv) -> tuple[str, str]:
    """(this rank's device, backend) for the user's ``--device`` under a launch of ``env.world_size`` ranks."""
    if device.startswith("cuda:"):
        raise DistributedError(
            f"--device {device} under torchrun: each rank uses the GPU of its LOCAL_RANK; "
            "pass --device cuda (or auto), and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    if device == "cuda" or (device in ("", "auto") and torch.cuda.is_available()):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if env.local_rank >= count:
            raise DistributedError(
                f"rank {env.rank} has LOCAL_RANK {env.local_rank} but this machine has {count} "
                "CUDA device(s): start at most that many processes per machine "
                "(torchrun --nproc-per-node), or pass --device cpu"
            )
        return f"cuda:{env.local_rank}", "nccl"
    return device, "gloo"


def _stop_on_sigterm(env: LaunchEnv) -> Callable[[], None]:
    """Make torchrun's SIGTERM (sent to all ranks when one fails) an error, so cleanup code runs."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum: int, frame: FrameType | None) -> None:
        raise PeerFailed(
            f"rank {env.rank} of {env.world_size} was stopped by the launcher (SIGTERM), "
            'most likely because another rank failed (see its error, and torchrun\'s "Root Cause")'
        )

    previous = signal.signal(signal.SIGTERM, stop)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def _short(exc: BaseException) -> str:
    """The gist of a torch.distributed error: its first line without the C++ source location."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text[:200]
