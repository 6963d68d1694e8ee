"""``dualpt describe``: ask an LLM for the visual features of each class and store them as short phrases.

Data flow: classes.txt -> one query per class (the paper's, verbatim) -> S answers -> parsed and merged
phrases -> ``descriptions.json`` in the project folder, rewritten atomically after every finished class.

``descriptions.json`` (read by training through :func:`load_descriptions`)::

    {"format": "dualpt-descriptions/1",
     "classes": [{"folder": str, "name": str, "phrases": [str, ...], "status": "ok" | "failed" | "none",
                  "error": str | null,
                  "provenance": {"provider", "model", "temperature", "samples", "query", "time"}}, ...]}

Classes follow the order of classes.txt; a class appears once it is finished (ok, failed or none).
"""

from __future__ import annotations

import contextlib
import json
import queue
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rich.markup import escape

from .classes import ClassEntry, parse_class_list
from .errors import DataError, PartialFailure, ProjectError
from .options import require_finite
from .project import Project, atomic_write_json, project_lock, read_json
from .providers import BadAnswer, Provider, ProviderSettings, RequestRejected, TransientError, make_provider, redact

FORMAT = "dualpt-descriptions/1"
STATUSES = ("ok", "failed", "none")
QUERY = (
    "Q: What are the useful features for distinguishing a {CLASS} in a photo? "
    "Please just give me a list of short phrases. Answer: -"
)
MAX_WORDS = 12  # a longer line is prose, not a short phrase (split at commas, else dropped)
MAX_CHARS = 100


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
        return min(self.cap, self.base * 2**retry) * random.uniform(0.5, 1.0)


RETRY = RetryPolicy()  # module default, replaced by tests to keep them fast


@dataclass(frozen=True)
class DescribeConfig:
    """One ``dualpt describe`` run."""

    classes: Path | str | None  # classes.txt
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
    retry: RetryPolicy | None = None  # None = RETRY
    settings: ProviderSettings = field(init=False)

    def __post_init__(self) -> None:
        if self.classes is None:
            raise DataError("missing classes.txt; pass a class list, e.g. `dualpt describe classes.txt`")
        object.__setattr__(self, "classes", Path(self.classes))
        require_finite({"--temperature": self.temperature, "--timeout": self.timeout})
        checks = (
            (self.samples >= 1, f"--samples must be at least 1, got {self.samples}"),
            (self.concurrency >= 1, f"--concurrency must be at least 1, got {self.concurrency}"),
            (self.timeout > 0, f"--timeout must be positive, got {self.timeout}"),
            (0 <= self.temperature <= 2, f"--temperature must be between 0 and 2, got {self.temperature}"),
        )
        for ok, message in checks:
            if not ok:
                raise DataError(message)
        settings = ProviderSettings(self.model, self.base_url, self.host, self.timeout)
        object.__setattr__(self, "settings", settings)


# ---------------------------------------------------------------------------------------------------------
# answer -> phrases

_BULLET = re.compile(r"^\s*(?:[-*+•·●▪◦‣–—>]+|\(?\d{1,3}[.)\]:]|\(?[a-zA-Z][.)](?=\s)|#+)\s*")
_REFUSAL = re.compile(
    r"\b(?:i['’]?m sorry|i am sorry|i apologi[sz]e|i can(?:['’]|no)?t|i am unable|i['’]?m unable|"
    r"i['’]?m not able|as an ai|language model|i do not have|i don['’]?t have)\b",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(r"^(?:here (?:are|is)|sure|certainly|of course|answer\b|q:)", re.IGNORECASE)
_CLOSING = re.compile(r"^(?:these (?:features|characteristics|traits|details)|i hope|hope this|let me know|"
                      r"overall|in summary|in conclusion)\b", re.IGNORECASE)  # a remark after the list
_NON_ANSWERS = {"no", "yes", "none", "n/a", "na", "unknown", "nothing", "null", "ok", "okay"}
_FILLER = {"a", "an", "the", "of", "in", "photo", "picture", "image", "this", "is", "it", "its", "s"}


def _strip_json_fence(text: str) -> str:
    match = re.fullmatch(r"\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*", text, re.DOTALL)
    return match.group(1) if match else text


def _json_items(text: str) -> list[str] | None:
    """The phrases of a JSON answer (``{"phrases": [...]}``, any list of strings), else None."""
    text = _strip_json_fence(text).strip()
    if not text or text[0] not in "[{":
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = data.get("phrases", lists[0] if lists else None)
    if not isinstance(data, list):
        return None
    return [item for item in data if isinstance(item, str)]


def _lead_in(name: str) -> re.Pattern:
    """``A tiger has ...`` / ``They have ...`` at the start of a prose phrase."""
    subject = rf"(?:(?:a|an|the)\s+)?(?:{re.escape(name)}(?:e?s)?|it|they)"
    verb = r"(?:(?:usually|typically|often|generally|commonly)\s+)?(?:has|have|is|are|features?|shows?)"
    return re.compile(rf"^{subject}\s+{verb}\s+", re.IGNORECASE)


def _clean(line: str) -> str:
    line = _BULLET.sub("", line)
    line = line.replace("**", "").replace("__", "").strip()
    line = line.strip("\"'`“”‘’ ")
    return line.rstrip(".;,:!").strip()


_SENTENCE = re.compile(r"(?<=[a-z0-9)])\.\s+|\s+and\s+(?=(?:a|an|the)\s)")  # in prose lines only
_COMMA = re.compile(r"(?:,(?=\s)|,$)\s*(?:and\s+|or\s+)?")  # "1,000 spots" is no list


def _pieces(line: str, lead_in: re.Pattern) -> list[str]:
    """A line becomes its phrases: split at semicolons and commas, prose also at sentence ends and 'and a'."""
    line = _clean(line)
    prose = len(line.split()) > MAX_WORDS or len(line) > MAX_CHARS
    parts = [part for sentence in (_SENTENCE.split(line) if prose else [line]) for part in sentence.split(";")]
    return [lead_in.sub("", _clean(p)) for part in parts for p in _comma_phrases(part)]


def _comma_phrases(text: str) -> list[str]:
    """Split at commas, except after a lone adjective: "large, rounded ears" stays one phrase."""
    parts = [part.strip() for part in _COMMA.split(text)]
    phrases: list[str] = []
    for i, part in enumerate(parts):
        if phrases and phrases[-1].endswith(","):
            part = f"{phrases.pop()} {part}"
        nxt = parts[i + 1] if i + 1 < len(parts) else ""
        if _lone_adjective(part) and _content_words(nxt) > 1 and not _ARTICLE.match(nxt):
            part += ","  # "large," before "rounded ears"
        phrases.append(part)
    return phrases


_ARTICLE = re.compile(r"(?:a|an|the)\s", re.IGNORECASE)


def _lone_adjective(text: str) -> bool:
    """One content word that is not a plural noun ("whiskers"): likely an adjective before a list comma."""
    words = text.split()
    word = words[-1].casefold() if words else ""
    plural = word.endswith("s") and not word.endswith(("ss", "ous", "less"))
    return _content_words(text) == 1 and len(words) <= 2 and not plural


def _content_words(text: str) -> int:
    return len(set(re.findall(r"\w+", text.casefold())) - _FILLER)


def _restates_class(phrase: str, name: str) -> bool:
    words = set(re.findall(r"\w+", phrase.casefold())) - _FILLER
    name_words = set(re.findall(r"\w+", name.casefold()))
    plural = {w + "s" for w in name_words} | {w + "es" for w in name_words}
    return not (words - name_words - plural)


def parse_phrases(text: str, name: str) -> list[str]:
    """Short phrases from one answer: JSON if it is JSON, else a bulleted, numbered or prose list.

    Bullets and numbering are stripped; empty and overlong lines, lines that only restate the class
    name, preambles and refusals are dropped; duplicates (ignoring case) are removed.
    """
    lead_in = _lead_in(name)
    items = _json_items(text)
    lines = items if items is not None else text.splitlines()
    phrases: list[str] = []
    for line in lines:
        line = line.strip()
        if not line or _REFUSAL.search(line) or (_PREAMBLE.match(line) and line.rstrip().endswith(":")):
            continue
        if _CLOSING.match(_clean(line)):
            continue
        if ":" in line and _PREAMBLE.match(line):  # "Here are some features: a, b, c"
            line = line.split(":", 1)[1]
        for phrase in _pieces(line, lead_in):
            phrase = " ".join(phrase.split())
            if not phrase or len(phrase.split()) > MAX_WORDS or len(phrase) > MAX_CHARS:
                continue
            if not re.search(r"\w", phrase) or phrase.casefold() in _NON_ANSWERS or not is_phrase(phrase):
                continue
            if _restates_class(phrase, name):
                continue
            phrases.append(phrase)
    return merge_phrases(phrases)


_MARKUP = re.compile(r"<[^<>]*>|[<>{}\\]|&[a-z]+;|&#\d+;|\[\[|\]\]")


def is_phrase(phrase: str) -> bool:
    """Printable text of mostly letters, no markup (``<html>``, ``{{``), no replacement characters."""
    if not phrase.isprintable() or "\ufffd" in phrase or _MARKUP.search(phrase):
        return False
    letters = sum(ch.isalpha() or ch.isspace() for ch in phrase)
    return letters >= 0.6 * len(phrase)


def merge_phrases(*lists: list[str]) -> list[str]:
    """Concatenate phrase lists, keeping the first spelling of each phrase (compared ignoring case)."""
    seen: set[str] = set()
    merged: list[str] = []
    for phrases in lists:
        for phrase in phrases:
            key = phrase.casefold()
            if key not in seen:
                seen.add(key)
                merged.append(phrase)
    return merged


# ---------------------------------------------------------------------------------------------------------
# storage


def load_descriptions(project: Project) -> list[dict] | None:
    """The stored classes of ``project`` (see the module doc), None if nothing was described yet."""
    path = project.descriptions
    if not path.exists():
        return None
    data = read_json(path, "class descriptions")
    damaged = f"{path} is damaged or not a dualpt descriptions file; re-run `dualpt describe ... --force`"
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, list) or data.get("format") != FORMAT:
        raise ProjectError(damaged)
    for entry in data["classes"]:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("folder"), str)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("phrases"), list)
            and all(isinstance(p, str) for p in entry["phrases"])
            and entry.get("status") in STATUSES
        ):
            raise ProjectError(f"{damaged} (bad entry {str(entry)[:80]})")
    return data["classes"]


def phrases_by_folder(entries: list[dict] | None) -> dict[str, list[str]]:
    """``{folder: phrases}`` for training; classes without phrases (failed, none) map to ``[]``."""
    return {e["folder"]: list(e["phrases"]) if e["status"] == "ok" else [] for e in entries or []}


def _save(project: Project, classes: list[ClassEntry], done: dict[str, dict]) -> None:
    entries = [done[c.folder] for c in classes if c.folder in done]
    atomic_write_json(project.descriptions, {"format": FORMAT, "classes": entries})


def _entry(cls: ClassEntry, provider: Provider | None, cfg: DescribeConfig, phrases, status, error) -> dict:
    asked = provider is not None and provider.name != "none"
    return {
        "folder": cls.folder,
        "name": cls.name,
        "phrases": phrases,
        "status": status,
        "error": redact(error) if error else error,  # never a credential from a URL
        "provenance": {
            "provider": provider.name if provider else "none",
            "model": provider.model if provider else None,
            "temperature": cfg.temperature if asked else None,
            "samples": cfg.samples if asked else 0,
            "query": query_for(cls.name) if asked else None,
            "time": utc_now(),
        },
    }


def utc_now() -> str:
    """The provenance time stamp: UTC, seconds, ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------------------
# asking


class _Stopped(Exception):
    """The run is being abandoned (Ctrl-C or a fatal provider error elsewhere)."""


def _ask(
    provider: Provider, query: str, cfg: DescribeConfig, policy: RetryPolicy, stop: threading.Event
) -> str:
    """One answer, retrying transient failures with backoff; RequestRejected/ProviderError pass through."""
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


def describe_class(
    cls: ClassEntry, provider: Provider, cfg: DescribeConfig, policy: RetryPolicy, stop: threading.Event
) -> dict:
    """Ask S answers, merge their phrases; a class left with none is asked again, then fails."""
    query = query_for(cls.name)
    bad: list[str] = []  # answers that were not answers (HTML, garbage): asked again like empty ones

    def answer() -> str:
        try:
            return _ask(provider, query, cfg, policy, stop)
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

    @property
    def failed(self) -> list[dict]:
        return [e for e in self.entries if e["status"] == "failed"] + self.failed_kept


def plan_describe(cfg: DescribeConfig) -> DescribePlan:
    """Read the class list and what is stored; build the provider only if something is left to ask."""
    classes = parse_class_list(cfg.classes)
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
    if provider is None or provider.name == "none":
        for cls in plan.todo:
            done[cls.folder] = on_disk[cls.folder] = _entry(cls, provider, cfg, [], "none", None)
        _save(project, plan.classes, on_disk)
        for cls in plan.todo:
            if on_done:
                on_done(done[cls.folder])
    else:
        _save(project, plan.classes, on_disk)  # drops classes no longer listed, keeps the classes.txt order
        with contextlib.closing(_run_pool(plan.todo, provider, cfg)) as finished:
            for entry in finished:
                folder, old = entry["folder"], plan.previous.get(entry["folder"])
                done[folder] = entry
                if entry["status"] == "failed" and old and old["status"] == "ok" and old["name"] == entry["name"]:
                    failed_kept.append(entry)  # a failed retry does not replace good phrases
                else:
                    on_disk[folder] = entry
                    _save(project, plan.classes, on_disk)
                if on_done:
                    on_done(entry)
    entries = [on_disk[c.folder] for c in plan.classes]
    name, model = (provider.name, provider.model) if provider else ("-", None)
    asked = [c.folder for c in plan.todo]
    return DescribeReport(name, model, project.descriptions, entries, asked, plan.dropped, failed_kept)


def _run_pool(todo: list[ClassEntry], provider: Provider, cfg: DescribeConfig):
    """Yield finished entries as ``cfg.concurrency`` worker threads produce them."""
    policy = cfg.retry or RETRY
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
                results.put(describe_class(cls, provider, cfg, policy, stop))
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


# ---------------------------------------------------------------------------------------------------------
# command front ends (the CLI calls these)


def describe(cfg: DescribeConfig, json_out: bool = False) -> None:
    """Run with a progress bar, then print a table (or JSON); PartialFailure if any class failed."""
    from . import ui

    parse_class_list(cfg.classes)  # a bad class list fails before the project folder is touched
    with project_lock(cfg.project, "describe"):  # one writer at a time, from reading what is stored to the end
        plan = plan_describe(cfg)  # bad input fails here, before the progress bar
        with ui.progress() as bar:
            task = bar.add_task("describing", total=len(plan.todo), status="")

            def on_done(entry: dict) -> None:
                mark = "[red]failed[/] " if entry["status"] == "failed" else ""
                bar.update(task, advance=1, status=f"{mark}{escape(entry['name'][:40])}")

            report = run_describe(plan, on_done)
    print_report(report, json_out)
    if report.failed:
        names = ", ".join(e["name"] for e in report.failed[:5]) + (", ..." if len(report.failed) > 5 else "")
        raise PartialFailure(
            f"{len(report.failed)} of {len(report.entries)} classes failed ({names}); "
            "re-run the same command to retry them"
        )


def print_report(report: DescribeReport, json_out: bool) -> None:
    from rich.table import Table

    from . import ui

    if json_out:
        ui.print_json({"format": FORMAT, "file": str(report.path), "classes": report.entries})
        return
    for folder in report.dropped:
        ui.warn(f"class {folder!r} is no longer in the class list; its stored description was dropped")
    if report.provider == "none":
        ui.console.print(
            f"provider none: no LLM was asked. {len(report.asked)} classes written with no phrases to "
            f'{escape(str(report.path))}; training will run without LLM context (the paper\'s "None" '
            "context, beta = 0)."
        )
    source = f" ({report.provider}{' ' + report.model if report.model else ''})" if report.asked else ""
    table = Table(title=f"descriptions{source}")
    kept_after = {e["folder"]: e["error"] for e in report.failed_kept}
    for column in ("class", "folder", "phrases", "status"):
        table.add_column(column, justify="right" if column == "phrases" else "left")
    for entry in report.entries:
        status = entry["status"] if entry["folder"] in report.asked else f"{entry['status']} (kept)"
        if entry["status"] == "failed":
            status = f"[red]failed[/]: {escape(entry['error'] or '')}"
        if entry["folder"] in kept_after:
            status = f"[red]failed[/]: {escape(kept_after[entry['folder']] or '')} (earlier phrases kept)"
        table.add_row(escape(entry["name"]), escape(entry["folder"]), str(len(entry["phrases"])), status)
    ui.console.print(table)
    if not report.asked:
        ui.console.print(f"all {len(report.entries)} classes are already described; nothing was asked (--force asks "
                         "again)")
    kept = len(report.entries) - len(report.asked)
    verb = "written without phrases" if report.provider == "none" else "described"
    ui.console.print(
        f"{len(report.asked)} {verb}, {kept} kept from earlier runs, {len(report.failed)} failed -> "
        f"{escape(str(report.path))}"
    )


def show(project: Project, name: str | None = None, json_out: bool = False) -> None:
    """Print the stored descriptions, all or one class (matched by folder or name, ignoring case)."""
    from . import ui

    entries = load_descriptions(project)
    if entries is None:
        raise ProjectError(
            f"no descriptions in {project.root} yet; run `dualpt describe classes.txt` "
            "(or pass --project DIR)"
        )
    if name is not None:
        key = name.strip().casefold()
        entries = [e for e in entries if key in (e["folder"].casefold(), e["name"].casefold())]
        if not entries:
            raise DataError(
                f"class {name!r} is not in {project.descriptions}; `dualpt describe --show` lists them"
            )
    if json_out:
        ui.print_json(entries)
        return
    for entry in entries:
        prov = entry.get("provenance") or {}
        source = " ".join(str(v) for v in (prov.get("provider"), prov.get("model")) if v)
        head = f"[bold]{escape(entry['name'])}[/] ({escape(entry['folder'])}) - {entry['status']}"
        ui.console.print(f"{head}, {len(entry['phrases'])} phrases [dim]{escape(source)}[/]")
        if entry.get("error"):
            ui.console.print(f"  [red]error:[/] {escape(entry['error'])}")
        for phrase in entry["phrases"]:
            ui.console.print(f"  - {escape(phrase)}")
