"""dualpt: Dual-Aligned Prompt Tuning (DUAL-PT) for CLIP, as a command-line tool."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dualpt")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

from .errors import DualptError

__all__ = ["DualptError", "__version__"]
