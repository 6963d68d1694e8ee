"""The base-to-new protocol (CoCoOp; the paper's Table 1): train on base classes, evaluate on base and new.

``dualpt train --base-classes half`` trains on the first ceil(K/2) class folders in sorted order (CoCoOp's
split of CoOp's datasets), ``--base-classes FILE`` on the classes a class list names; the other folders are
the new classes, recorded in the prompt file (:class:`~dualpt_cli.promptfile.meta.PromptMeta` ``new_class_*``) so
that ``dualpt eval`` on the full folder scores them from the learned context with their names and reports
base, new and H without being told the split again.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import DataError, first_names
from .classes import ClassEntry, class_entries, find_trained, parse_class_list

HALF = "half"


def split_base_new(classes: list[ClassEntry], spec: str) -> tuple[list[ClassEntry], list[ClassEntry]]:
    """(base, new) classes of an ImageFolder's ``classes`` (in folder order) for ``--base-classes spec``.

    ``spec`` is ``"half"`` (the first ceil(K/2) classes) or a class-list file (:func:`classes.parse_class_list`)
    whose entries are matched to the folders by folder name or readable name. Both parts must be non-empty.
    """
    if spec.strip().lower() == HALF:
        if len(classes) < 2:
            raise DataError(f"--base-classes half needs at least 2 class folders, found {len(classes)}")
        cut = math.ceil(len(classes) / 2)
        return classes[:cut], classes[cut:]
    if not Path(spec).expanduser().is_file():
        raise DataError(f"--base-classes {spec}: no such file; give 'half' or a class list (one class a line)")
    listed = parse_class_list(Path(spec).expanduser())
    unknown = [c.folder for c in listed if find_trained(c, classes) is None]
    if unknown:
        shown = first_names(unknown)
        raise DataError(f"--base-classes {spec}: no image folder for {shown}; list folders of the training images")
    base = [c for c in classes if find_trained(c, listed) is not None]
    new = [c for c in classes if find_trained(c, listed) is None]
    if not new:
        raise DataError(
            f"--base-classes {spec} lists every class folder; leave some out as new classes, or "
            "train without --base-classes"
        )
    return base, new


def recorded_new_classes(new: list[ClassEntry], folders: list[str]) -> list[ClassEntry]:
    """The new classes a prompt file recorded (``new``), when the folders to evaluate hold any of them; else []."""
    present = class_entries(folders, None)
    return new if any(find_trained(c, new) is not None for c in present) else []
