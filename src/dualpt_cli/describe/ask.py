"""``dualpt describe``: ask an LLM for the visual features of each class and store them as short phrases.

Data flow: classes.txt -> one query per class (the paper's, verbatim) -> S answers -> parsed and merged
phrases (:mod:`phrases`) -> ``descriptions.json`` (:mod:`descriptions`) in the project folder, rewritten
atomically after every finished class. This module decides what to ask and asks; it never prints
(:mod:`describe_ui` shows progress and the summary).
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

from ..core.checks import check_all, require_finite
from ..core.project import Project
from ..data.classes import ClassEntry, parse_class_list
from ..data.descriptions import load_descriptions, make_entry, merge_phrases, save_descriptions, utc_now
from ..errors import DataError
from .phrases import parse_phrases
from .providers import BadAnswer, Provider, ProviderSettings, RequestRejected, TransientError, make_provider
from .redact import redact

QUERY = (
    "Q: What are the useful features for distinguishing a {CLASS} in a photo? "
    "Please just give me a list of short phrases. Answer: -"
)


def query_for(name: str) -> str:
    """The paper's query for one class name, verbatim."""
    return QUERY.replace("{CLASS}", name)


# ---------------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one request on 429/5xx/timeouts/connection errors: exponential backoff, jitter."""

    attempts: int = 6  # tries per request, the first included
    base: float = 1.0  # seconds before the first retry (doubles each time)
    cap: float = 30.0  # longest backoff, seconds
    retry_after_cap: float = 120.0  # longest wait honoured from a Retry-After header, seconds

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based); the server's Retry-After wins."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        return min(self.cap, self.base * 2.0**retry) * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class DescribeConfig:
    """One ``dualpt describe`` run."""

    classes: Path | str | None  # classes.txt (a Path after __post_init__; None is refused there)
    project: Project  # where descriptions.json goes
    provider: str = "auto"  # auto, openai, ollama or none
    model: str | None = None  # LLM model; None = the provider's default
    samples: int = 1  # answers asked per class, merged
    temperature: float = 0.7  # sampling temperature (the paper's)
    force: bool = False  # describe again classes that are already described
    concurrency: int = 4  # requests in flight
    timeout: float = 60.0  # seconds per request
    base_url: str | None = None  # OpenAI-compatible server URL
    host: str | None = None  # Ollama server URL
    class_attempts: int = 3  # rounds of S answers before a class with no usable phrase fails
    retry: RetryPolicy = field(default_factory=RetryPolicy)  # backoff of one request (tests make it fast)
    settings: ProviderSettings = field(init=False)

    @property
    def class_file(self) -> Path:
        """``classes``, which __post_init__ made a Path."""
        assert isinstance(self.classes, Path)
        return self.classes

    def __post_init__(self) -> None:
        if self.classes is None:
            raise DataError("missing classes.txt; pass a class list, e.g. `dualpt describe classes.txt`")
        object.__setattr__(self, "classes", Path(self.classes))
        require_finite({"--temperature": self.temperature, "--timeout": self.timeout})
        check_all(
            [
                (self.samples >= 1, f"--samples must be at least 1, got {self.samples}"),
                (self.concurrency >= 1, f"--concurrency must be at least 1, got {self.concurrency}"),
                (self.timeout > 0, f"--timeout must be positive, got {self.timeout}"),
                (0 <= self.temperature <= 2, f"--temperature must be between 0 and 2, got {self.temperature}"),
            ]
        )
        settings = ProviderSettings(self.model, self.base_url, self.host, self.timeout)
        object.__setattr__(self, "settings", settings)


def _entry(
    cls: ClassEntry, provider: Provider | None, cfg: DescribeConfig, phrases: list[str], status: str, error: str | None
) -> dict:
    """A descriptions.json entry (see :mod:`descriptions`) with the provenance of this provider and query."""
    asked = provider is not None and provider.name != "none"
    provenance = {
        "provider": provider.name if provider else "none",
        "model": provider.model if provider else None,
        "temperature": cfg.temperature if asked else None,
        "samples": cfg.samples if asked else 0,
        "query": query_for(cls.name) if asked else None,
        "time": utc_now(),
    }
    return make_entry(cls, phrases, status, redact(error) if error else error, provenance)  # no credential


# ---------------------------------------------------------------------------------------------------------
# asking


class _Stopped(Exception):
    """The run is being abandoned (Ctrl-C or a fatal provider error elsewhere)."""


def _ask(provider: Provider, query: str, cfg: DescribeConfig, stop: threading.Event) -> str:
    """One answer, retrying transient failures with ``cfg.retry``; RequestRejected/ProviderError pass through."""
    policy = cfg.retry
    for retry in range(policy.attempts):
        if stop.is_set():
            raise _Stopped
        try:
            return provider.complete(query, cfg.temperature)
        except TransientError as exc:
            if retry == policy.attempts - 1:
                raise RequestRejected(f"{exc} (gave up after {policy.attempts} tries)") from None
            if stop.wait(policy.delay(retry, exc.retry_after)):
                raise _Stopped from None
    raise AssertionError("unreachable")


def describe_class(cls: ClassEntry, provider: Provider, cfg: DescribeConfig, stop: threading.Event) -> dict:
    """Ask S answers, merge their phrases; a class left with none is asked again, then fails."""
    query = query_for(cls.name)
    bad: list[str] = []  # answers that were not answers (HTML, garbage): asked again like empty ones

    def answer() -> str:
        try:
            return _ask(provider, query, cfg, stop)
        except BadAnswer as exc:
            bad.append(str(exc))
            return ""

    try:
        for _ in range(cfg.class_attempts):
            answers = [answer() for _ in range(cfg.samples)]
            phrases = merge_phrases(*(parse_phrases(text, cls.name) for text in answers))
            if phrases:
                return _entry(cls, provider, cfg, phrases, "ok", None)
        error = f"no usable phrases in {cfg.class_attempts * cfg.samples} answers"
        if bad:
            error += f" ({len(bad)} not a chat answer: {bad[-1]})"
    except RequestRejected as exc:
        error = str(exc)
    return _entry(cls, provider, cfg, [], "failed", error)


@dataclass
class DescribePlan:
    """What a run will do, decided before any request: the classes, what is kept, what is asked."""

    cfg: DescribeConfig
    classes: list[ClassEntry]  # in classes.txt order
    done: dict[str, dict]  # folder -> stored entry kept as it is
    todo: list[ClassEntry]  # classes to describe in this run
    dropped: list[str]  # folders stored earlier but no longer in classes.txt
    provider: Provider | None  # None when there is nothing to ask
    previous: dict[str, dict] = field(default_factory=dict)  # folder -> stored entry of a class asked again


@dataclass
class DescribeReport:
    """What one run did, for the summary table or ``--json``."""

    provider: str
    model: str | None
    path: Path
    entries: list[dict]  # all stored classes, in classes.txt order
    asked: list[str]  # folders described in this run
    dropped: list[str]  # folders stored earlier but no longer in classes.txt
    failed_kept: list[dict] = field(default_factory=list)  # failed this run; the earlier phrases were kept
    unnamed: list[str] = field(default_factory=list)  # (phrase files) listed classes with no phrases, none stored

    @property
    def failed(self) -> list[dict]:
        return [e for e in self.entries if e["status"] == "failed"] + self.failed_kept


def plan_describe(cfg: DescribeConfig) -> DescribePlan:
    """Read the class list and what is stored; build the provider only if something is left to ask."""
    classes = parse_class_list(cfg.class_file)
    project = cfg.project.ensure()
    stored = {e["folder"]: e for e in load_descriptions(project) or []}
    wanted = {c.folder for c in classes}
    done: dict[str, dict] = {}
    todo: list[ClassEntry] = []
    for cls in classes:
        old = stored.get(cls.folder)
        if old and old["name"] == cls.name and old["status"] == "ok" and not cfg.force:
            done[cls.folder] = old
        else:
            todo.append(cls)
    provider = make_provider(cfg.provider, cfg.settings) if todo else None
    dropped = [folder for folder in stored if folder not in wanted]
    previous = {c.folder: stored[c.folder] for c in todo if c.folder in stored}
    return DescribePlan(cfg, classes, done, todo, dropped, provider, previous)


def run_describe(plan: DescribePlan, on_done: Callable[[dict], None] | None = None) -> DescribeReport:
    """Describe the plan's classes, rewriting descriptions.json after each one.

    ``on_done(entry)`` runs in the calling thread after each class is saved (progress display).
    On Ctrl-C (KeyboardInterrupt) the workers stop; every class finished so far is already on disk.
    """
    cfg, provider, project, done = plan.cfg, plan.provider, plan.cfg.project, dict(plan.done)
    # what is on disk: a class asked again keeps its stored entry until a new answer replaces it, so a dead
    # server, a wrong key, Ctrl-C or a crash never loses phrases described earlier
    on_disk = {**plan.previous, **done}
    failed_kept: list[dict] = []
    wrote = project.descriptions.exists()

    def save() -> None:  # no file until a class is described: a run that only failed leaves none behind
        nonlocal wrote
        if wrote or any(e["status"] != "failed" for e in on_disk.values()):
            save_descriptions(project, plan.classes, on_disk)
            wrote = True

    if provider is None or provider.name == "none":
        for cls in plan.todo:
            done[cls.folder] = on_disk[cls.folder] = _entry(cls, provider, cfg, [], "none", None)
        save()
        for cls in plan.todo:
            if on_done:
                on_done(done[cls.folder])
    else:
        save()  # drops classes no longer listed, keeps the classes.txt order
        with contextlib.closing(_run_pool(plan.todo, provider, cfg)) as finished:
            for entry in finished:
                folder, old = entry["folder"], plan.previous.get(entry["folder"])
                done[folder] = entry
                if entry["status"] == "failed" and old and old["status"] == "ok" and old["name"] == entry["name"]:
                    failed_kept.append(entry)  # a failed retry does not replace good phrases
                else:
                    on_disk[folder] = entry
                    save()
                if on_done:
                    on_done(entry)
    entries = [on_disk[c.folder] for c in plan.classes]
    name, model = (provider.name, provider.model) if provider else ("-", None)
    asked = [c.folder for c in plan.todo]
    return DescribeReport(name, model, project.descriptions, entries, asked, plan.dropped, failed_kept)


def _run_pool(todo: list[ClassEntry], provider: Provider, cfg: DescribeConfig) -> Generator[dict, None, None]:
    """Yield finished entries as ``cfg.concurrency`` worker threads produce them."""
    jobs: queue.Queue = queue.Queue()
    results: queue.Queue = queue.Queue()
    stop = threading.Event()
    for cls in todo:
        jobs.put(cls)

    def work() -> None:
        while not stop.is_set():
            try:
                cls = jobs.get_nowait()
            except queue.Empty:
                return
            try:
                results.put(describe_class(cls, provider, cfg, stop))
            except _Stopped:
                return
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                results.put(exc)

    # daemon threads: Ctrl-C must not wait for a request that is still in flight
    for _ in range(min(cfg.concurrency, len(todo))):
        threading.Thread(target=work, daemon=True, name="dualpt-describe").start()
    try:
        for _ in todo:
            result = results.get()
            if isinstance(result, BaseException):
                raise result
            yield result
    finally:
        stop.set()
