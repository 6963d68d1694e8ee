"""dualpt: Dual-Aligned Prompt Tuning (DUAL-PT) for CLIP, as a command-line tool."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dualpt")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

from .errors import DualptError

__all__ = ["Classifier", "DualptError", "Prediction", "TrainConfig", "TrainResult", "__version__", "fit"]
_API = {
    "Classifier": "api",
    "Prediction": "api",
    "fit": "api",
    "TrainConfig": "train.config",
    "TrainResult": "train.hooks",
}


def __getattr__(name: str):
    """The API names load torch and open_clip on first use, so ``dualpt --help`` stays fast."""
    if name in _API:
        from importlib import import_module

        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
