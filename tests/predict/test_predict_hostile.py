"""Issue 12's hostile session, the cases that attack predict: moved from tests/test_hostile.py.

Every case checks the exit code, a one-line error (no traceback) and the files on disk afterwards.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from clihelpers import invoke, one_line_error

pytestmark = pytest.mark.usefixtures("fast_retries")


# ---------------------------------------------------------------------------------------------------------
# Low: --output


def test_output_to_stdout_and_odd_targets(prompts, test_images, tmp_path):
    for target in ("-", "/dev/stdout"):
        result = invoke("predict", test_images, "--prompt-file", prompts, "--format", "jsonl", "--output", target)
        assert result.exit_code == 0, result.output
        assert len([json.loads(ln) for ln in result.stdout.splitlines()]) == 6
    (tmp_path / "real.csv").write_text("keep me\n")
    (tmp_path / "link.csv").symlink_to(tmp_path / "real.csv")
    one_line_error(
        invoke("predict", test_images, "--prompt-file", prompts, "--output", tmp_path / "link.csv"), "symbolic link"
    )
    assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "real.csv").read_text() == "keep me\n"
    one_line_error(
        invoke("predict", test_images, "--prompt-file", prompts, "--output", "/dev/null"), "not a regular file"
    )
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    (tmp_path / "afile").write_text("x")
    one_line_error(
        invoke("predict", test_images, "--prompt-file", prompts, "--output", tmp_path / "afile" / "out.csv"),
        "afile is a file, not a folder",
    )


def test_written_files_follow_the_umask(prompts, test_images, tmp_path):
    old = os.umask(0o022)
    try:
        (tmp_path / "classes.txt").write_text("tiger\n")
        assert invoke("describe", "classes.txt", "--provider", "none").exit_code == 0
        result = invoke("predict", test_images, "--prompt-file", prompts, "--output", tmp_path / "out.csv")
        assert result.exit_code == 0, result.output
    finally:
        os.umask(old)
    for path in (tmp_path / "dualpt-project" / "descriptions.json", tmp_path / "out.csv"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
