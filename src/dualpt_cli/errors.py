"""One exception family for everything a user can get wrong.

The CLI turns any :class:`DualptError` into a one-line message and a non-zero exit code
(see ``cli.main``); library code raises them and never prints or exits itself.
"""

from __future__ import annotations

from collections.abc import Iterable


class DualptError(Exception):
    """A problem the user can fix: the message says what is wrong and what to do."""

    exit_code = 2


class ModelLoadError(DualptError):
    """The CLIP model could not be resolved or loaded."""


class ProjectError(DualptError):
    """The project folder or one of its files is missing, unreadable or inconsistent."""


class DataError(DualptError):
    """Images, folders or class lists the command was given are unusable."""


class PromptFileError(DualptError):
    """A prompt file is missing, corrupt, tampered with, or of an unknown format."""


class ProviderError(DualptError):
    """An LLM provider could not be reached or did not give a usable answer."""


class TrainingDiverged(DualptError):
    """The loss became NaN or infinite; the last good checkpoint is kept, no prompt file is written."""


class DistributedError(DualptError):
    """A torchrun job cannot go on: an incomplete launch environment, a rank that stopped or did not answer."""

    exit_code = 1


class PartialFailure(DualptError):
    """The command finished, but some items failed; the output already says which."""

    exit_code = 1


def first_names(names: Iterable[str], limit: int = 5) -> str:
    """The first ``limit`` names, comma-separated, with " ..." when there are more: how messages list names."""
    shown = list(names)
    return ", ".join(shown[:limit]) + (" ..." if len(shown) > limit else "")
