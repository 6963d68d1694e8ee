"""Which CLIP a user names: :class:`ModelSpec` (built-in name, ``hf-hub:``, ``local-dir:``, a folder or a
weights file, and the pretrained tag or weights file), resolved to what open_clip's factory takes.

Shared by :mod:`load` (which builds the model) and :mod:`backbone` (which keeps the spec it was built from);
it imports neither, nor open_clip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"


@dataclass(frozen=True)
class ModelSpec:
    """Which CLIP to load, as a user names it."""

    name: str = "RN50"  # built-in name, "hf-hub:org/name", "local-dir:/path", or a folder/weights file path
    pretrained: str = "openai"  # tag for a built-in name, or a weights file; "" or "none" = random weights

    def resolved(self) -> tuple[str, str | None]:
        """(open_clip model name, pretrained argument) after interpreting plain paths."""
        name, pretrained = self.name.strip(), (self.pretrained or "").strip()
        if pretrained.lower() in ("", "none", "random"):
            pretrained = ""
        # a folder model takes a weights file from --pretrained (a tag such as the default "openai" means
        # "the folder's own weights"); absolute paths, so a prompt file naming them works from any folder
        weights = os.path.abspath(Path(pretrained).expanduser()) if looks_like_file(pretrained) else None
        if name.startswith(LOCAL_DIR):
            return LOCAL_DIR + os.path.abspath(Path(name[len(LOCAL_DIR) :]).expanduser()), weights
        if name.startswith(HF_HUB):
            if weights:
                raise ModelLoadError(
                    f"--pretrained {pretrained} cannot be combined with an {HF_HUB} model; "
                    f"pass the weights' folder with --model {LOCAL_DIR}/path"
                )
            return name, None
        path = Path(name).expanduser()
        if path.is_dir():
            return LOCAL_DIR + str(path.resolve()), weights
        if path.suffix in (".safetensors", ".pt", ".pth", ".bin") or path.is_file():
            return _weights_file_spec(path)
        return name, pretrained or None

    @property
    def label(self) -> str:
        name, pretrained = self.resolved()
        return f"{name} ({pretrained})" if pretrained else name

    @property
    def display(self) -> str:
        """:attr:`label` with paths under the current folder shown relative to it (for terminal output)."""
        name, pretrained = self.resolved()
        if name.startswith(LOCAL_DIR):
            name = LOCAL_DIR + _relative_to_cwd(name[len(LOCAL_DIR) :])
        if pretrained and os.path.isabs(pretrained):
            pretrained = _relative_to_cwd(pretrained)
        return f"{name} ({pretrained})" if pretrained else name

    def describe(self) -> dict[str, str]:
        """The model and its weights as ``dualpt info`` shows them (the first rows of ``Backbone.describe``)."""
        name, pretrained = self.resolved()
        return {
            "model": name,
            "pretrained": pretrained
            or ("(weights in the folder)" if name.startswith(LOCAL_DIR) else "(none: random weights)"),
        }


def _relative_to_cwd(path: str) -> str:
    """``path`` relative to the current folder when it lies under it, else unchanged."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def looks_like_file(pretrained: str) -> bool:
    """A --pretrained value that names a file (a path or a weights suffix) rather than a tag."""
    return bool(pretrained) and (
        os.sep in pretrained
        or "/" in pretrained
        or os.path.isfile(pretrained)
        or Path(pretrained).suffix in (".safetensors", ".pt", ".pth", ".bin")
    )


def _weights_file_spec(path: Path) -> tuple[str, str]:
    """A weights file given as --model: its folder must hold open_clip_config.json."""
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist")
    if not (path.parent / "open_clip_config.json").is_file():
        raise ModelLoadError(
            f"{path} is a weights file without an open_clip_config.json beside it; pass the architecture "
            f"with --model (e.g. RN50) and the file with --pretrained {path}"
        )
    return LOCAL_DIR + str(path.parent.resolve()), str(path.resolve())
