"""``dualpt`` under torchrun with rank 1 started with other options (tests/core/test_core_hostile_outputs.py).

    python -m torch.distributed.run --nproc-per-node 2 ... tests/dist_settings_worker.py predict ARGS...

Rank 1 appends ``$DUALPT_TEST_RANK1_ARGS`` (split on spaces) to the command line; rank 0 runs it as given.
"""

from __future__ import annotations

import os
import sys

from dualpt_cli.cli import app as cli

if __name__ == "__main__":
    extra = os.environ.get("DUALPT_TEST_RANK1_ARGS", "").split() if os.environ.get("RANK") == "1" else []
    sys.argv = ["dualpt", *sys.argv[1:], *extra]
    cli.main()
