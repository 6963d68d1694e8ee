"""Issue 23's hostile inputs, the cases that attack cli: moved from tests/test_hostile_inputs.py.

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clihelpers import CPU, invoke, one_line_error, tiny_train
from trained import TRAINED_CLASSES

pytestmark = pytest.mark.images(classes=TRAINED_CLASSES, per_class=2, seed=5)


# ---------------------------------------------------------------------------------------------------------
# 15. huge counts are refused when the options are checked, before anything is allocated


@pytest.mark.parametrize(
    "option, value",
    [("--aug-views", "1000000000"), ("--prompts", "1000000000"), ("--seed", "99999999999999999999")],
)
def test_huge_training_counts_are_refused(images, tiny_rn, option, value):
    result = tiny_train(tiny_rn, option, value)
    one_line_error(result, option, "must be at most")
    assert not Path("dualpt-project").exists()


def test_huge_predict_counts_are_refused(project, images):
    image = next((images / "red").iterdir())
    result = invoke("predict", image, "--project", project, "--workers", "1000000000", *CPU)
    one_line_error(result, "--workers", "must be at most")
