"""The project folder where describe, train and predict meet, and safe file writing.

Layout of a project folder (default ``./dualpt-project``, else ``$DUALPT_PROJECT`` or ``--project``)::

    descriptions.json     class list + LLM phrases (describe)
    prompts.safetensors   learned prompts + metadata (train); all that predict needs
    run_config.json       the resolved training config
    train_log.jsonl       one line per epoch
    split.json            the exact few-shot files used for training (and validation)
    checkpoint/           the last end-of-epoch state, for --resume
    curves.png            training curves from train_log.jsonl (train, report)
    runs/NAME/            a copy of every run's files, plus result.json and eval.json (see runs.py)
    .lock                 the pid of the command writing to the project (describe, train) while it runs

Frozen CLIP features of the training views live in one cache per user, shared by all projects
(:func:`user_cache_dir`: ``$DUALPT_CACHE``, else ``$XDG_CACHE_HOME/dualpt``, else ``~/.cache/dualpt``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError, DualptError, ProjectError
from .userfiles import TEXT_CAP, Protected, check_output, read_regular

PROJECT_ENV = "DUALPT_PROJECT"
DEFAULT_PROJECT = "dualpt-project"
CACHE_ENV = "DUALPT_CACHE"


def user_cache_dir() -> Path:
    """dualpt's per-user cache: ``$DUALPT_CACHE``, else ``$XDG_CACHE_HOME/dualpt``, else ``~/.cache/dualpt``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "dualpt"


@dataclass(frozen=True)
class Project:
    """Paths inside one project folder."""

    root: Path

    @property
    def descriptions(self) -> Path:
        return self.root / "descriptions.json"

    @property
    def prompts(self) -> Path:
        return self.root / "prompts.safetensors"

    @property
    def run_config(self) -> Path:
        return self.root / "run_config.json"

    @property
    def train_log(self) -> Path:
        return self.root / "train_log.jsonl"

    @property
    def split(self) -> Path:
        return self.root / "split.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoint"

    @property
    def cache_dir(self) -> Path:
        """The feature cache: per user, shared with every other project (content-addressed, so that is safe)."""
        return user_cache_dir() / "features"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def owned(self) -> Protected:
        """The files and folders of this project that no ``--output`` may replace."""
        what = f"a file of project {self.root}"
        files = (self.descriptions, self.prompts, self.run_config, self.train_log, self.split, self.lock_file)
        return Protected(
            files=tuple((p, what) for p in (*files, self.root / "curves.png")),
            folders=((self.checkpoint_dir, what), (self.root / "runs", what)),
        )

    def ensure(self) -> Project:
        """Create the folder (and parents) if needed; a clear error if that is impossible."""
        if self.root.exists() and not self.root.is_dir():
            raise ProjectError(f"project path {self.root} exists but is not a folder; pass --project DIR")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"cannot create project folder {self.root}: {exc.strerror}") from None
        return self


def resolve_project(path: str | os.PathLike | None = None) -> Project:
    """``--project`` wins, then ``$DUALPT_PROJECT``, then ``./dualpt-project``."""
    chosen = path or os.environ.get(PROJECT_ENV) or DEFAULT_PROJECT
    return Project(Path(chosen).expanduser())


def protected_reads(
    project: str | os.PathLike | None,
    prompt_file: str | os.PathLike | None,
    images: Iterable[Path],
    *others: str | None,
) -> Protected:
    """What a command that reads these must not overwrite: the images, other input files, the prompt file and
    the files of its project (the ``--project``'s and the one holding the prompt file)."""
    kept = resolve_project(project).owned() + Protected.inputs(images, "an input image") + Protected.inputs(others)
    if prompt_file is not None:
        kept += Protected.inputs([prompt_file], "the prompt file") + Project(Path(prompt_file).parent).owned()
    return kept


# ---------------------------------------------------------------------------------------------------------
# atomic writes: a reader sees the old file or the new one, never half of one


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``.

    The new file gets the mode every other file gets (0666 less the umask). A read-only folder or a full
    disk is a :class:`ProjectError` naming the path; ``path`` keeps its old content then.
    """
    path = Path(path)
    try:
        mode = path.lstat().st_mode
    except OSError:
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):  # never rename over a device
        raise ProjectError(f"cannot write {path}: it is not a regular file (a device, pipe or folder); nothing written")
    fd, tmp = temp_beside(path, ProjectError)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ProjectError(write_failure(path, exc)) from None
        raise


def temp_beside(path: Path, error: type[DualptError]) -> tuple[int, str]:
    """:func:`mkstemp_beside` after creating ``path``'s folder; a failure is one ``error`` naming the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return mkstemp_beside(path)
    except OSError as exc:
        raise error(write_failure(path, exc)) from None


def mkstemp_beside(path: Path) -> tuple[int, str]:
    """``tempfile.mkstemp`` in ``path``'s folder, with the umask's mode instead of mkstemp's 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())
    except OSError:
        pass  # a file system without modes (FAT, some network shares): keep what mkstemp gave
    return fd, tmp


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def write_failure(path: Path, exc: OSError) -> str:
    """One line for an OSError while writing ``path`` (read-only folder, full disk, ...)."""
    reason = exc.strerror or str(exc)
    hint = {
        errno.ENOSPC: "free some disk space",
        errno.EDQUOT: "free some disk space",
        errno.EROFS: "use a writable folder (--project DIR)",
        errno.EACCES: "check the folder's permissions",
        errno.EPERM: "check the folder's permissions",
    }.get(exc.errno or 0, "check the folder")
    return f"cannot write {path}: {reason}; {hint} (files already there were left as they were)"


def append_line(path: Path, line: str) -> None:
    """Append one line (a log record); a clear error instead of a traceback if the disk refuses."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError as exc:
        raise ProjectError(write_failure(path, exc)) from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """``obj`` as JSON; a file name that is not UTF-8 is kept as ``\\udcNN`` escapes (it reads back the same)."""
    try:
        atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    except UnicodeEncodeError:
        atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path, what: str, fix: str = "delete it or re-create it") -> Any:
    """Read a JSON file the project wrote; a clear error names the file (and ``fix``) if it is damaged."""
    if not os.path.lexists(path):
        raise ProjectError(f"{path} does not exist ({what})")
    try:
        return json.loads(read_regular(path, what, ProjectError).decode("utf-8"))  # a device is refused, not read
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProjectError(f"{path} is not valid JSON ({what}): {exc}; {fix}") from None
    except RecursionError:
        raise ProjectError(f"{path} is nested too deeply to be a {what}; {fix}") from None


def read_user_text(path: Path, what: str) -> str:
    """A UTF-8 text file the user named (a BOM is dropped); :class:`DataError` naming it otherwise."""
    try:
        return read_user_file(path, what, DataError).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{what} {path} is not UTF-8 text; save it as UTF-8") from None


def read_user_file(path: Path, what: str, error: type[DualptError], cap: int | None = None) -> bytes:
    """The bytes of a regular file the user named, at most ``cap``; ``error`` with one clear line (``what`` and the
    path) if it is missing, unreadable, a device or pipe, or over ``cap`` (default :data:`TEXT_CAP`)."""
    return read_regular(path, what, error, cap or TEXT_CAP)


STDOUT_NAMES = ("-", "/dev/stdout")
STDERR_NAMES = ("/dev/stderr", "/dev/fd/2")  # where messages and progress go: results never do


def output_path(
    output: str | os.PathLike | None, flag: str = "--output", protected: Protected | None = None
) -> Path | None:
    """Where ``--output`` may write: None for stdout (no option, ``-`` or ``/dev/stdout``), else a path that
    is a regular file or does not exist yet, in a folder that exists or can be made. ``/dev/stderr`` is
    refused by name (not as the symbolic link it is on Linux): results go to stdout or a file.

    Symlinks, devices, pipes and folders are refused rather than replaced by a new regular file, and so is
    any of ``protected`` (the command's inputs, the project's files: :func:`userfiles.check_output`).
    """
    if output is None or str(output) in STDOUT_NAMES:
        return None
    if str(output) in STDERR_NAMES:
        raise DataError(f"{flag} {output} is standard error, which carries messages, not results; give a file name")
    path = Path(output).expanduser()
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DataError(f"{flag} {path}: {parent} is a file, not a folder")
            break
    check_output(path, flag, protected)
    return path


# ---------------------------------------------------------------------------------------------------------
# one writer at a time


@contextlib.contextmanager
def project_lock(project: Project, command: str) -> Iterator[None]:
    """Hold the project for a writing command (describe, train); a second writer gets a clear error.

    ``<project>/.lock`` holds the holder's pid, host, command and start time. The lock itself is an OS lock
    on that file (``flock``, or ``msvcrt.locking`` on Windows), which the OS drops when the holder dies: a
    lock left by a killed process is stale and simply taken over.
    """
    project.ensure()
    path = project.lock_file
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ProjectError(write_failure(path, exc)) from None
    try:
        if not try_lock(fd):
            raise ProjectError(
                f"project {project.root} is in use: {_holder(path)} is writing to it; wait for it "
                f"to finish, or use another --project (if no such process runs, delete {path})"
            )
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(info) + "\n").encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released: an empty lock file names no holder
    finally:
        os.close(fd)  # closing drops the OS lock


def try_lock(fd: int) -> bool:
    """Take the OS lock of the open file ``fd`` without waiting: False if another process holds it."""
    if sys.platform == "win32":  # pragma: no cover - CI runs on Linux
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(path: Path) -> str:
    """``dualpt train (pid 123 on host, since ...)`` from a lock file, as far as it can be read."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
        return (
            f"dualpt {info.get('command', '?')} (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
            f"since {info.get('since', '?')})"
        )
    except (OSError, ValueError, AttributeError):
        return "another dualpt command"
