"""Classifying images with a trained prompt file (method card, "Inference").

Predict needs only ``prompts.safetensors`` and the CLIP named in its metadata: the class prompt features
w_k (K, M, d) are stored, and the DUAL-PT scores are the training ones, ``exp(logit_scale) * sum_ij T_ij
cos(z_i, w_kj)`` (Eq. 8) with the graph-matching plan T, computed by the same
:class:`~dualpt_cli.matching.Matcher` as in training, then blended with the stored zero-shot prior as the
prompt file's ``dual_weight`` / ``prior_weight`` say (:mod:`dualpt_cli.head`).
New classes (base-to-new) are encoded from the learned context and their names; no LLM is involved.

Images stream through a DataLoader; a file that cannot be decoded becomes an error row, never a crash.
Rows go to one of four writers (table, json, jsonl, csv); jsonl and csv are flushed row by row.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .backbone import Backbone
from .data import IMG_EXTENSIONS, BadImage, folder_images, is_image_file, load_image
from .errors import DataError, ModelLoadError, PartialFailure, PromptFileError
from .fingerprint import check_image_fingerprint
from .head import ZERO_SHOT_TEMPLATE, blend_logits, name_features
from .matching import Matcher
from .models import LOCAL_DIR, ModelSpec, load_backbone
from .project import ClassEntry, mkstemp_beside, output_path, parse_class_list, resolve_project, write_failure
from .promptfile import load_prompt_file
from .prompts import PromptLearner

FORMATS = ("table", "json", "jsonl", "csv")
FINGERPRINT_CLASSES = 4  # trained classes re-encoded to check that an overriding --model is the trained one
MATCH_BUDGET = 1 << 26  # elements of one (B, K, N, M) similarity tensor before the classes are chunked


# ---------------------------------------------------------------------------------------------------------
# the classifier


@contextlib.contextmanager
def matching_threads(device: torch.device) -> Iterator[None]:
    """One CPU thread for the graph matching: its many small ops gain little from a thread team, and a team
    stalls at every op when a core is busy (decode workers, other processes); restored afterwards."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def trained_entries(meta: dict[str, Any]) -> list[ClassEntry]:
    """The prompt file's classes as (folder, readable name)."""
    names = list(meta["class_names"])
    folders = list(meta.get("class_folders") or names)
    return [ClassEntry(folder=f, name=n) for f, n in zip(folders, names)]


def find_trained(entry: ClassEntry, trained: list[ClassEntry]) -> int | None:
    """Index of the trained class ``entry`` names (same folder, or same name ignoring case), else None."""
    for i, t in enumerate(trained):
        if entry.folder == t.folder or entry.name.casefold() == t.name.casefold():
            return i
    return None


class Classifier:
    """Frozen CLIP + class prompt features W (K, M, d) + the training logits (Eq. 8).

    Example::

        clf = Classifier.from_prompt_file("dualpt-project/prompts.safetensors", device="cpu")
        probs = clf.predict_batch(pixels)  # pixels: (B, 3, H, W) from clf.bb.eval_transform()
    """

    def __init__(self, bb: Backbone, meta: dict[str, Any], W: torch.Tensor, classes: list[ClassEntry],
                 trained: list[bool], source: Path | None = None, batch_size: int = 64,
                 prior: torch.Tensor | None = None):
        self.bb = bb
        self.meta = meta
        self.W = W.to(bb.device)  # (K, M, d), normalised
        self.prior = prior.to(bb.device) if prior is not None else None  # (K, d) zero-shot prior (head.py)
        self.dual_weight = float(meta.get("dual_weight", 1.0))  # files from before the prior: DUAL-PT alone
        self.prior_weight = float(meta.get("prior_weight", 0.0)) if prior is not None else 0.0
        self.classes = classes
        self.trained = trained  # per class: True when its features come from the prompt file
        self.source = source
        K, M = W.shape[:2]
        per_class = batch_size * bb.num_local * M  # elements of the (B, 1, N, M) similarity slice of one class
        chunk = max(1, MATCH_BUDGET // per_class) if K * per_class > MATCH_BUDGET else None  # None: all at once
        self.matcher = Matcher.from_meta(meta, chunk)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @classmethod
    def from_prompt_file(
        cls,
        path: str | Path,
        model: ModelSpec | str | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        classes: list[ClassEntry] | None = None,
        batch_size: int = 64,
        pretrained: str | None = None,
    ) -> Classifier:
        """Load a prompt file and the CLIP it names (or ``model``, checked to be the same architecture).

        ``model`` is a :class:`ModelSpec` or a model name; with a name (or only ``pretrained``), the
        missing half comes from the prompt file's metadata.

        ``classes`` is the class set to predict over (default: the trained classes). Classes the prompt
        file knows (same folder or name) keep their stored features; the others are encoded from the
        learned context with their names (base-to-new).
        """
        path = Path(path)
        tensors, meta = load_prompt_file(path)
        if isinstance(model, str) or (model is None and pretrained is not None):
            tag = meta.get("pretrained") or "" if pretrained is None else pretrained
            model = ModelSpec(model or meta["model"], tag)
        bb = load_model_for(meta, tensors, path, model, device, precision)
        known = trained_entries(meta)
        classes = list(classes) if classes else known
        W, trained = class_features(bb, tensors, meta, known, classes)
        prior = class_priors(bb, tensors, meta, known, classes)
        return cls(bb, meta, W, classes, trained, source=path, batch_size=batch_size, prior=prior)

    def logits_from_local(self, Z: torch.Tensor) -> torch.Tensor:
        """(B, K) DUAL-PT logits from local image features Z (B, N, d), exactly as training computes them."""
        with torch.no_grad(), self.bb.autocast(), matching_threads(self.bb.device):
            return self.matcher.logits(Z.to(self.bb.device), self.W).float()

    def logits_from_features(self, z: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        """(B, K) final logits from global (B, d) and local (B, N, d) features: DUAL-PT blended with the prior
        as the prompt file says (:func:`head.blend_logits`)."""
        dual = self.logits_from_local(Z) if self.dual_weight else None
        return blend_logits(dual, z.to(self.bb.device), self.prior, self.matcher.logit_scale, self.dual_weight,
                            self.prior_weight)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K) logits for preprocessed images (B, 3, H, W)."""
        z, Z = self.bb.encode_images(images)  # (B, d), (B, N, d)
        return self.logits_from_features(z, Z)

    def predict_batch(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K) class probabilities (softmax of the logits)."""
        return self.logits(images).softmax(dim=-1)


def load_model_for(meta: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path, model: ModelSpec | None,
                   device, precision) -> Backbone:
    """The backbone a prompt file was trained with, or ``model`` after checking it is the same one."""
    trained = ModelSpec(meta["model"], meta.get("pretrained") or "")
    spec = model or trained
    try:
        bb = load_backbone(spec, device=device, precision=precision)
    except ModelLoadError as exc:
        if model is not None:
            raise
        raise ModelLoadError(f"{exc} (the model named in {path}; if its weights live elsewhere now, point to "
                             "them with --model/--pretrained)") from None
    check_compatible(meta, bb, path)
    check_image_fingerprint(bb, meta, path)  # also when the named model folder changed in place
    if spec.resolved() != trained.resolved() or spec.resolved()[0].startswith(LOCAL_DIR):
        check_same_weights(bb, tensors, meta)
    return bb


def check_compatible(meta: dict[str, Any], bb: Backbone, path: Path) -> None:
    """A clear error when ``bb`` is not the architecture the prompt file was trained with."""
    trained_name, _ = ModelSpec(meta["model"], meta.get("pretrained") or "").resolved()
    name, _ = bb.spec.resolved()
    plain = not any(n.startswith(LOCAL_DIR) or n.startswith("hf-hub:") for n in (name, trained_name))
    if plain and name.casefold() != trained_name.casefold():
        raise ModelLoadError(f"{path} was trained with {trained_name}, not {name}; drop --model or retrain "
                             f"with --model {name}")
    facts = (("embedding size", "embed_dim", bb.embed_dim), ("local features", "num_local", bb.num_local),
             ("text width", "text_width", bb.text_width))
    for what, key, value in facts:
        if key in meta and int(meta[key]) != value:
            raise ModelLoadError(f"model {bb.spec.label} has {what} {value}, but {path} was trained with "
                                 f"{trained_name} ({what} {meta[key]}); use the model it was trained with")


def class_features(bb: Backbone, tensors: dict[str, torch.Tensor], meta: dict[str, Any], known: list[ClassEntry],
                   classes: list[ClassEntry]) -> tuple[torch.Tensor, list[bool]]:
    """(K, M, d) features for ``classes``: stored ones for trained classes, encoded ones for new classes."""
    stored = tensors["class_features"].to(bb.device)  # (K_trained, M, d)
    index = [find_trained(c, known) for c in classes]
    new = [c for c, i in zip(classes, index) if i is None]
    fresh = iter(encode_new_classes(bb, tensors["ctx"], meta, [c.name for c in new]) if new else [])
    W = torch.stack([stored[i] if i is not None else next(fresh) for i in index])  # (K, M, d)
    return W, [i is not None for i in index]


def class_priors(bb: Backbone, tensors: dict[str, torch.Tensor], meta: dict[str, Any], known: list[ClassEntry],
                 classes: list[ClassEntry]) -> torch.Tensor | None:
    """(K, d) prior prototypes for ``classes``: stored for trained classes, the name prompt for new ones."""
    stored = tensors.get("prior_features")
    if stored is None:
        return None
    index = [find_trained(c, known) for c in classes]
    new = [c.name for c, i in zip(classes, index) if i is None]
    template = meta.get("zero_shot_template", ZERO_SHOT_TEMPLATE)
    fresh = iter(name_features(bb, new, template) if new else [])
    return torch.stack([stored[i].to(bb.device) if i is not None else next(fresh) for i in index])  # (K, d)


def encode_new_classes(bb: Backbone, ctx: torch.Tensor, meta: dict[str, Any], names: list[str]) -> torch.Tensor:
    """(K_new, M, d) features of new class names with the learned shared context (base-to-new)."""
    if meta.get("class_specific"):
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        raise DataError(f"class(es) not in the prompt file: {shown}; these prompts were trained with "
                        "--class-specific context, which cannot describe new classes (retrain without "
                        "--class-specific, or use only trained class names)")
    learner = _learner(bb, ctx, meta, names)
    with torch.no_grad():
        return learner().float()


def _learner(bb: Backbone, ctx: torch.Tensor, meta: dict[str, Any], names: list[str],
             texts: list[list[str]] | None = None) -> PromptLearner:
    """A prompt learner holding the stored context; ``texts`` are the prompts' class texts (None: "{name}.")."""
    learner = PromptLearner(bb, names, int(meta["n_prompts"]), int(meta["n_ctx"]),
                            class_specific=bool(meta.get("class_specific")), class_texts=texts)
    if tuple(ctx.shape) != tuple(learner.ctx.shape):
        raise PromptFileError(f"the prompt file's context has shape {tuple(ctx.shape)}, expected "
                              f"{tuple(learner.ctx.shape)} for this model; re-create it with dualpt train")
    with torch.no_grad():
        learner.ctx.copy_(ctx.to(learner.ctx.device))
    learner.eval()
    return learner


def check_same_weights(bb: Backbone, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """An overriding --model must reproduce a few stored class features from the stored context."""
    known = trained_entries(meta)
    n = min(FINGERPRINT_CLASSES, len(known))
    ctx = tensors["ctx"][:n] if meta.get("class_specific") else tensors["ctx"]
    texts = meta.get("prompt_texts")
    with torch.no_grad():
        again = _learner(bb, ctx, meta, [c.name for c in known[:n]], texts[:n] if texts else None)().float()
    cos = F.cosine_similarity(again, tensors["class_features"][:n].to(again.device), dim=-1).min()
    if float(cos) < 0.99:
        raise ModelLoadError(f"model {bb.spec.label} has the right shape but different weights from the one "
                             f"{meta['model']} the prompt file was trained with (text features disagree); use "
                             "the same weights")


# ---------------------------------------------------------------------------------------------------------
# images: paths, globs, folders -> batches with per-item errors


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Image paths from files, folders (recursive) and globs, in the order given, without duplicates.

    A missing path, an empty folder or a glob that matches no image is an error before anything runs;
    a file given by name is tried whatever its extension.
    """
    if not inputs:
        raise DataError("no images given; pass image files, folders or globs")
    out: dict[Path, None] = {}
    for item in inputs:
        path = Path(item).expanduser()
        if glob.has_magic(item):
            found: list[Path] = []
            for match in sorted(glob.glob(str(path), recursive=True)):
                found += folder_images(Path(match)) if Path(match).is_dir() else [Path(match)]
            found = [p for p in found if is_image_file(p)]
            if not found:
                raise DataError(f"{item} matches no image files ({', '.join(IMG_EXTENSIONS)})")
        elif path.is_dir():
            found = folder_images(path)
            if not found:
                raise DataError(f"folder {item} has no images ({', '.join(IMG_EXTENSIONS)})")
        elif path.exists():
            found = [path]
        else:
            raise DataError(f"{item} does not exist")
        out.update(dict.fromkeys(found))
    return list(out)


class ImageFiles(Dataset):
    """(index, pixels or None, error or None) per path; decoding errors are data, not exceptions."""

    def __init__(self, paths: list[Path], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, self.transform(load_image(self.paths[i])), None
        except BadImage as exc:
            return i, None, str(exc)
        except Exception as exc:  # a transform failing on an odd image is that image's problem only
            return i, None, f"cannot preprocess image ({type(exc).__name__}: {exc})"


@dataclass
class ImageBatch:
    """A batch in input order: ``pixels`` (b, 3, H, W) for the ``ok`` indices, reasons for the others."""

    indices: list[int]
    ok: list[int]
    pixels: torch.Tensor | None
    errors: dict[int, str] = field(default_factory=dict)


def collate_with_errors(items: list[tuple[int, torch.Tensor | None, str | None]]) -> ImageBatch:
    good = [(i, x) for i, x, _ in items if x is not None]
    return ImageBatch(
        indices=[i for i, _, _ in items], ok=[i for i, _ in good],
        pixels=torch.stack([x for _, x in good]) if good else None,
        errors={i: e for i, _, e in items if e is not None},
    )  # fmt: skip


def default_workers(device: torch.device | None = None) -> int:
    """Decoding processes: up to 4 beside a GPU; on a CPU one per 8 cores, since decoding (about a tenth of
    a CLIP forward) in processes beside the encoder's threads slows the encoder more than it saves (on 2
    cores, 2 workers cost 40% of the rate, measured in benchmarks/bench_predict.py)."""
    cpus = os.cpu_count() or 1
    if device is not None and device.type != "cpu":
        return min(4, cpus)
    return min(4, cpus // 8)


def image_batches(paths: list[Path], transform, batch_size: int = 64, workers: int | None = None,
                  pin_memory: bool = False, device: torch.device | None = None) -> Iterator[ImageBatch]:
    """Decode and preprocess ``paths`` (in worker processes if ``workers``); batches come in input order."""
    workers = default_workers(device) if workers is None else workers
    if len(paths) <= batch_size:
        workers = 0  # one batch: starting processes costs more than it saves
    loader = DataLoader(ImageFiles(paths, transform), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=collate_with_errors, pin_memory=pin_memory,
                        persistent_workers=False)
    yield from loader


# ---------------------------------------------------------------------------------------------------------
# rows and writers


def make_row(image: Path, probs: torch.Tensor | None, names: list[str], top_k: int, error: str | None = None
             ) -> dict[str, Any]:
    """One output row: the top-k classes with probabilities, or the error that stopped this image."""
    if probs is not None and not bool(torch.isfinite(probs).all()):  # never a NaN in the output (invalid JSON)
        probs, error = None, "the model gave non-finite scores for this image"
    if probs is None:
        return {"image": str(image), "class": None, "prob": None, "top_k": [], "error": error}
    p, idx = probs.topk(min(top_k, len(names)))
    top = [{"class": names[i], "prob": round(float(v), 6)} for v, i in zip(p.tolist(), idx.tolist())]
    return {"image": str(image), "class": top[0]["class"], "prob": top[0]["prob"], "top_k": top, "error": None}


class RowWriter:
    """Writes rows to a text stream; subclasses choose the format."""

    def __init__(self, fh: IO[str], top_k: int):
        self.fh, self.top_k = fh, top_k

    def write(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlWriter(RowWriter):
    def write(self, row: dict[str, Any]) -> None:
        self.fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.fh.flush()


class CsvWriter(RowWriter):
    """Wide CSV: image, class_1, prob_1, ..., class_k, prob_k, error."""

    def __init__(self, fh: IO[str], top_k: int):
        super().__init__(fh, top_k)
        self.csv = csv.writer(fh, lineterminator="\n")
        ranks = [[f"class_{r}", f"prob_{r}"] for r in range(1, top_k + 1)]
        self.csv.writerow(["image", *[c for pair in ranks for c in pair], "error"])
        fh.flush()

    def write(self, row: dict[str, Any]) -> None:
        cells: list[Any] = [row["image"]]
        for r in range(self.top_k):
            top = row["top_k"][r] if r < len(row["top_k"]) else None
            cells += [top["class"], f"{top['prob']:.6f}"] if top else ["", ""]
        self.csv.writerow([*cells, row["error"] or ""])
        self.fh.flush()


class _BufferedWriter(RowWriter):
    """A writer whose output needs every row first."""

    def __init__(self, fh: IO[str], top_k: int):
        super().__init__(fh, top_k)
        self.rows: list[dict[str, Any]] = []

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)


class JsonWriter(_BufferedWriter):
    """One JSON array, written when all rows are in."""

    def close(self) -> None:
        self.fh.write(json.dumps(self.rows, indent=2, ensure_ascii=False) + "\n")
        self.fh.flush()


class TableWriter(_BufferedWriter):
    """A rich table: image, prediction, probability, and the runners-up."""

    def close(self) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from . import ui

        table = Table(show_edge=False)
        table.add_column("image", overflow="fold")
        table.add_column("prediction")
        table.add_column("prob", justify="right")
        if self.top_k > 1:
            table.add_column(f"next {self.top_k - 1}", overflow="fold")
        for row in self.rows:
            if row["error"]:
                cells = [escape(row["image"]), f"[red]error:[/] {escape(row['error'])}", ""]
                table.add_row(*cells, *([""] if self.top_k > 1 else []))
                continue
            cells = [escape(row["image"]), escape(row["class"]), f"{row['prob']:.1%}"]
            rest = ", ".join(f"{escape(t['class'])} {t['prob']:.1%}" for t in row["top_k"][1:])
            table.add_row(*cells, *([rest] if self.top_k > 1 else []))
        console = ui.console if self.fh is sys.stdout else Console(file=self.fh, width=160, no_color=True)
        console.print(table)


WRITERS: dict[str, type[RowWriter]] = {"table": TableWriter, "json": JsonWriter, "jsonl": JsonlWriter,
                                       "csv": CsvWriter}


@contextlib.contextmanager
def open_output(path: str | Path | None) -> Iterator[IO[str]]:
    """stdout, or a temp file beside ``path`` renamed over it at the end (``path.partial`` on Ctrl-C)."""
    path = output_path(path)  # None for stdout (-, /dev/stdout); symlinks and devices are refused
    if path is None:
        yield sys.stdout
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = mkstemp_beside(path)
    except OSError as exc:
        raise DataError(write_failure(path, exc)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(tmp, path)
    except KeyboardInterrupt:
        os.replace(tmp, f"{path}.partial")
        raise
    except OSError as exc:  # a full disk while writing rows: one line; the old file stays as it was
        Path(tmp).unlink(missing_ok=True)
        raise DataError(write_failure(path, exc)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def format_for(fmt: str | None, output: str | None) -> str:
    """``--format``, else from the ``--output`` extension (.json, .jsonl, .csv), else table."""
    if fmt is None:
        suffix = Path(output).suffix.lower().lstrip(".") if output else ""
        return suffix if suffix in ("json", "jsonl", "csv") else "table"
    if fmt not in FORMATS:
        raise DataError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


# ---------------------------------------------------------------------------------------------------------
# the command


@dataclass
class PredictConfig:
    """Everything ``dualpt predict`` needs."""

    inputs: list[str]  # image files, folders (recursive) and globs
    project: str | None = None  # project whose prompts.safetensors to use
    prompts: str | None = None  # a prompt file (wins over project)
    top_k: int = 5  # classes per image in the output
    fmt: str | None = None  # table, json, jsonl or csv (None: from --output's extension, else table)
    output: str | None = None  # file to write (None: stdout)
    batch_size: int = 64
    workers: int | None = None  # DataLoader worker processes (None: default_workers(device))
    classes: str | None = None  # class list to predict over instead of the trained classes (base-to-new)
    model: str | None = None  # override the model named in the prompt file (same architecture)
    pretrained: str | None = None  # override its pretrained tag or weights file
    device: str = "auto"
    precision: str = "auto"


@dataclass
class PredictSummary:
    images: int
    failed: int
    output: str | None


def prompt_path(prompts: str | None, project: str | None) -> Path:
    return Path(prompts) if prompts else resolve_project(project).prompts


def load_classifier(prompts: str | None, project: str | None, model: str | None, pretrained: str | None,
                    classes: list[ClassEntry] | None, device: str, precision: str, batch_size: int) -> Classifier:
    """The classifier for a command's options: prompt file (or the project's), model override, class set."""
    return Classifier.from_prompt_file(prompt_path(prompts, project), model, device=device, precision=precision,
                                       classes=classes, batch_size=batch_size, pretrained=pretrained)


def _validate(cfg: PredictConfig) -> str:
    if cfg.top_k < 1:
        raise DataError(f"--top-k must be >= 1, got {cfg.top_k}")
    if cfg.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.workers is not None and cfg.workers < 0:
        raise DataError(f"--workers must be >= 0, got {cfg.workers}")
    return format_for(cfg.fmt, cfg.output)


def predict_rows(clf: Classifier, paths: list[Path], top_k: int, batch_size: int = 64,
                 workers: int | None = None, on_progress=None) -> Iterator[dict[str, Any]]:
    """One row per path, in order, as batches finish."""
    names = clf.class_names
    pin = clf.bb.device.type == "cuda"
    for batch in image_batches(paths, clf.bb.eval_transform(), batch_size, workers, pin_memory=pin,
                               device=clf.bb.device):
        probs = clf.predict_batch(batch.pixels).cpu() if batch.pixels is not None else None
        slot = {i: n for n, i in enumerate(batch.ok)}
        for i in batch.indices:
            p = probs[slot[i]] if i in slot else None
            yield make_row(paths[i], p, names, top_k, batch.errors.get(i))
        if on_progress:
            on_progress(len(batch.indices))


def run_predict(cfg: PredictConfig) -> PredictSummary:
    """Classify every input and write the rows; :class:`PartialFailure` at the end if any image failed."""
    from . import ui

    fmt = _validate(cfg)
    paths = expand_inputs(cfg.inputs)  # bad paths fail before the model loads
    entries = parse_class_list(cfg.classes) if cfg.classes else None
    clf = load_classifier(cfg.prompts, cfg.project, cfg.model, cfg.pretrained, entries, cfg.device,
                          cfg.precision, cfg.batch_size)
    top_k = min(cfg.top_k, len(clf.classes))
    failed = 0
    show_bar = len(paths) > cfg.batch_size
    with open_output(cfg.output) as fh, ui.progress(transient=True) as bar:
        task = bar.add_task("classifying", total=len(paths), status="", visible=show_bar)
        writer = WRITERS[fmt](fh, top_k)
        for row in predict_rows(clf, paths, top_k, cfg.batch_size, cfg.workers,
                                on_progress=lambda n: bar.advance(task, n)):
            failed += row["error"] is not None
            writer.write(row)
        bar.stop()
        writer.close()
    if failed:
        raise PartialFailure(f"{failed} of {len(paths)} image(s) could not be read; their rows carry the error")
    return PredictSummary(images=len(paths), failed=failed, output=cfg.output)
