"""``dualpt predict`` under torchrun with rank 1 dying mid-stream (tests/e2e/test_distributed_predict.py).

    python -m torch.distributed.run --nproc-per-node 2 ... tests/dist_predict_worker.py predict ARGS...

Runs the real CLI with the given arguments; rank 1 ends itself with ``os._exit(3)`` after writing two
rows to its part file, and rank 0 classifies slowly (a second per row), so it is still writing its own
rows when the launcher stops it.
"""

from __future__ import annotations

import os
import sys
import time

from dualpt_cli.cli import app as cli
from dualpt_cli.predict import rows as predict

ROWS_BEFORE_DYING = 2


def _dying_rows(original):
    rank = int(os.environ["RANK"])

    def rows(*args, **kwargs):
        for n, row in enumerate(original(*args, **kwargs)):
            if rank == 1 and n == ROWS_BEFORE_DYING:
                os._exit(3)  # no cleanup at all, as a crash or an OOM kill
            if rank == 0:
                time.sleep(1.0)
            yield row

    return rows


if __name__ == "__main__":
    predict.predict_rows = _dying_rows(predict.predict_rows)
    sys.argv = ["dualpt", *sys.argv[1:]]
    cli.main()
