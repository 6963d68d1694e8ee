"""Files the user names, read and written safely whatever they are.

- :func:`read_regular`: the bytes of a regular file, at most a cap: a device (``/dev/zero``), a pipe or a
  socket is refused before it is opened (opening a FIFO would wait for a writer), and a file over the cap is
  refused instead of read into memory.
- :func:`check_output`: an output path the user named may be a regular file or a new name, never a device,
  pipe, folder or symbolic link, and never one of :class:`Protected` (the command's inputs and the files a
  project owns): ``predict x.png -o x.png`` would otherwise replace the image it reads.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, DualptError

MiB = 1 << 20
TEXT_CAP = 64 * MiB  # a class list, phrase file, split file or config: far below this
BINARY_CAP = 4096 * MiB  # a prompt file


def shown(path: str | os.PathLike) -> str:
    """``path`` as text any UTF-8 output can hold, the same way in every output (rows, CSV, eval.json): bytes
    of a file name that are not UTF-8 (which Python keeps as lone surrogates) become ``\\xNN`` escapes."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, for a message: a folder, a pipe, a socket or a device."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def read_regular(path: str | os.PathLike, what: str, error: type[DualptError], cap: int = TEXT_CAP) -> bytes:
    """The bytes of the regular file ``path`` (symlinks followed); ``error`` with one line otherwise."""
    path = Path(path)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{what} {path} is a folder; pass the file itself")
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {path} is {file_kind(st.st_mode)}, not a regular file; pass a file")
        if st.st_size > cap:
            raise error(f"{what} {path} is {st.st_size / MiB:.0f} MiB, more than the {cap // MiB} MiB allowed")
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # swapped for a device since the stat
                raise error(f"{what} {path} is not a regular file; pass a file")
            data = fh.read(cap + 1)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder; pass the file itself") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise error(f"{what} {path} is more than the {cap // MiB} MiB allowed")
    return data


@dataclass(frozen=True)
class Protected:
    """Files an output must not replace: ``files`` are (path, what it is), ``folders`` whole trees."""

    files: tuple[tuple[Path, str], ...] = ()
    folders: tuple[tuple[Path, str], ...] = ()

    def __add__(self, other: Protected) -> Protected:
        return Protected(self.files + other.files, self.folders + other.folders)

    @classmethod
    def inputs(cls, paths: Iterable[str | os.PathLike | None], what: str = "an input") -> Protected:
        return cls(files=tuple((Path(p), what) for p in paths if p is not None))

    def clash(self, target: Path) -> tuple[Path, str] | None:
        """The protected file (and what it is) that writing ``target`` would replace, else None."""
        real = Path(os.path.realpath(target))
        try:
            st = os.stat(real)
            ident = (st.st_dev, st.st_ino)
        except OSError:
            ident = None
        for path, what in self.files:
            if Path(os.path.realpath(path)) == real:
                return path, what
            if ident is not None:  # a hard link, or the same file by another name
                try:
                    other = os.stat(path)
                except OSError:
                    continue
                if (other.st_dev, other.st_ino) == ident:
                    return path, what
        for folder, what in self.folders:
            if real.is_relative_to(os.path.realpath(folder)):
                return folder, what
        return None


def check_output(path: Path, flag: str, protected: Protected | None = None) -> None:
    """A :class:`DataError` if ``path`` (an output the user named) is a folder, symbolic link, device or pipe, or
    would replace a protected file."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise DataError(f"{flag} {path}: {exc.strerror}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise DataError(f"{flag} {path} is a folder; give a file name")
        if stat.S_ISLNK(st.st_mode):
            raise DataError(f"{flag} {path} is a symbolic link; give the path of a regular file (or - for stdout)")
        if not stat.S_ISREG(st.st_mode):
            raise DataError(
                f"{flag} {path} is not a regular file ({file_kind(st.st_mode)}); give a file name, or - for stdout"
            )
    hit = protected.clash(path) if protected is not None else None
    if hit is not None:
        raise DataError(f"{flag} {path} would overwrite {hit[0]} ({hit[1]}); write the output somewhere else")
