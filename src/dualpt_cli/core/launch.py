"""Where this process sits in a ``torchrun`` job, read from the launcher's environment, without torch.

The CLI asks it for every command (who prints an error), so it imports nothing heavy; joining the job and
the collectives are in :mod:`distributed`, which re-exports these names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import DistributedError

JOINED: set[int] = set()  # this process's rank once it joined a process group (errors before are the same on all)
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in a torchrun job, as the launcher's environment says."""

    rank: int  # RANK: 0 .. world_size - 1 over all machines
    world_size: int  # WORLD_SIZE: processes in the job
    local_rank: int  # LOCAL_RANK: index on this machine; picks the GPU
    master: str  # MASTER_ADDR:MASTER_PORT, the rendezvous (for messages)


class PeerFailed(DistributedError):
    """This rank stops because another one failed, and that one reports why: on ranks other than 0 the CLI
    prints nothing for it (one clear line, not one per rank)."""


def launch_rank(environ: Mapping[str, str] | None = None) -> int:
    """``RANK`` of a torchrun launch (0 otherwise, or when it is not a number): who prints."""
    text = (os.environ if environ is None else environ).get("RANK", "0")
    return int(text) if text.isdigit() else 0


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv | None:
    """The torchrun launch this process belongs to, or None when it was started another way.

    ``RANK`` and ``WORLD_SIZE`` mark a launch (a cluster may export ``MASTER_ADDR`` alone); a launch missing
    any of the other variables, or with values that are not ranks, is a :class:`DistributedError`.
    """
    env = os.environ if environ is None else environ
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return None
    missing = [v for v in LAUNCH_VARS if not env.get(v)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise DistributedError(
            f"RANK/WORLD_SIZE are set but {', '.join(missing)} {verb} not: start dualpt with "
            "torchrun (e.g. torchrun --nproc-per-node 2 -m dualpt_cli "
            "train ...), or unset RANK and WORLD_SIZE to run as one process"
        )
    try:
        rank, world, local = (int(env[v]) for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise DistributedError(
            f"RANK={env['RANK']!r}, WORLD_SIZE={env['WORLD_SIZE']!r}, LOCAL_RANK="
            f"{env['LOCAL_RANK']!r}: expected whole numbers (as torchrun sets them)"
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedError(
            f"RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}: expected 0 <= RANK < "
            "WORLD_SIZE and LOCAL_RANK >= 0 (as torchrun sets them)"
        )
    return LaunchEnv(rank, world, local, f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}")
