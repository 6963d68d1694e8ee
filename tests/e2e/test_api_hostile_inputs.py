"""Issue 23's hostile inputs, the cases that attack api: moved from tests/test_hostile_inputs.py.

Every case checks the exit code, one error line (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import pytest

# ---------------------------------------------------------------------------------------------------------
# 17. the Python API with wrong types: one DualptError, never a row per byte or a bare TypeError


@pytest.fixture(scope="module")
def clf(trained):
    from dualpt_cli.api import Classifier

    return Classifier.load(trained[0] / "proj", device="cpu", precision="fp32")


@pytest.mark.parametrize(
    "images, kwargs, words",
    [
        ("numpy", {}, "ndarray"),
        ("tensor", {}, "Tensor"),
        (b"\x89PNG", {}, "bytes"),
        ([5], {}, "image 0 is a int"),
        ("a.png", {"batch_size": -1}, "batch_size"),
        ("a.png", {"batch_size": 0}, "batch_size"),
        ("a.png", {"top_k": 0}, "top_k"),
        ("a.png", {"top_k": -1}, "top_k"),
    ],
)
def test_api_predict_refuses_wrong_types(clf, images, kwargs, words):
    import numpy as np
    import torch

    from dualpt_cli.errors import DualptError

    if images == "numpy":
        images = np.zeros((4, 8, 8, 3), np.uint8)
    elif images == "tensor":
        images = torch.zeros(4, 3, 8, 8)
    with pytest.raises(DualptError, match=words):
        clf.predict(images, **kwargs)


def test_api_load_names_the_file_it_was_given(tmp_path):
    from dualpt_cli.api import Classifier
    from dualpt_cli.errors import DualptError

    with pytest.raises(DualptError, match=r"nope\.safetensors does not exist") as info:
        Classifier.load(tmp_path / "nope.safetensors", device="cpu")
    assert "nope.safetensors/prompts.safetensors" not in str(info.value)
    with pytest.raises(DualptError, match="project folder or a prompt file path, got int"):
        Classifier.load(5)
