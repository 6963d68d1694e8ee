"""dualpt: Dual-Aligned Prompt Tuning (DUAL-PT) for CLIP, as a command-line tool."""

from typing import Any

from .errors import DualptError

__all__ = ["Classifier", "DualptError", "Prediction", "TrainConfig", "TrainResult", "__version__", "fit"]
_API = {
    "Classifier": "api",
    "Prediction": "api",
    "fit": "api",
    "TrainConfig": "train.config",
    "TrainResult": "train.hooks",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dualpt")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    """The API names load torch and open_clip on first use, and ``__version__`` reads the installed package's
    metadata on first use (importlib.metadata alone costs tens of milliseconds), so ``dualpt --help`` stays fast."""
    if name == "__version__":
        globals()["__version__"] = value = _version()
        return value
    if name in _API:
        from importlib import import_module

        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
