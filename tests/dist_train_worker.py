"""``dualpt train`` as each rank of the torchrun tests in tests/e2e/test_distributed_train.py runs it.

    python -m torch.distributed.run --nproc-per-node 2 ... tests/dist_train_worker.py train IMAGES ...

The arguments are the CLI's. ``$DUALPT_TEST_DIE=R:E`` makes rank R end itself with ``os._exit(3)`` as it
starts epoch E (1-based), as a crashed or killed process would: no message, no cleanup.
"""

from __future__ import annotations

import os
import sys

from dualpt_cli.cli.app import main
from dualpt_cli.train import loop as train


def _die_at(rank: int, epoch: int) -> None:
    original = train.train_epoch

    def train_epoch(index, *args, **kwargs):
        if index + 1 == epoch and int(os.environ.get("RANK", "0")) == rank:
            os._exit(3)
        return original(index, *args, **kwargs)

    train.train_epoch = train_epoch


if __name__ == "__main__":
    if os.environ.get("DUALPT_TEST_DIE"):
        _die_at(*(int(x) for x in os.environ["DUALPT_TEST_DIE"].split(":")))
    sys.argv = ["dualpt", *sys.argv[1:]]
    main()
