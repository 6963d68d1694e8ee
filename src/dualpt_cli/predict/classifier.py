"""The classifier behind predict, eval and explain: a prompt file, the CLIP it names, and the training logits.

The class prompt features w_k (K, M, d) are stored in the prompt file, and the DUAL-PT scores are the
training ones, ``exp(logit_scale) * sum_ij T_ij cos(z_i, w_kj)`` (Eq. 8) with the graph-matching plan T,
computed by the same :class:`~dualpt_cli.model.matcher.Matcher` as in training, then blended with the stored
zero-shot prior as the prompt file's ``dual_weight`` / ``prior_weight`` say (:mod:`dualpt_cli.model.head`), plus
the residual head where the file has one, all divided by the file's temperature and, where the file has a
``uniform_mix`` eps > 0, turned into the log of ``(1 - eps) softmax + eps / K`` (:mod:`dualpt_cli.model.residual`).
New classes (base-to-new) are encoded from the learned context and their names; no LLM is involved.

The prompt file's ``method`` says how its first term scores an image (:meth:`Classifier.dual_logits`, by the
method's scorer in :mod:`dualpt_cli.predict.scorers`): Eq. 8
(dualpt, plot), Eq. 8 with each image's own prompts (codualpt), the global feature against the single prompt
(coop) or against each image's own single prompt (cocoop), the linear probe's weights (linear-probe), or the
cache model (tip-adapter, tip-adapter-f: its zero-shot term is the stored prior at weight 1); zero-shot and
descriptions files score by the prior alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import torch

from ..clip.backbone import Backbone
from ..clip.fingerprint import check_image_fingerprint
from ..clip.load import load_backbone
from ..clip.spec import LOCAL_DIR, ModelSpec
from ..core.project import resolve_project
from ..data.classes import ClassEntry
from ..errors import DataError, ModelLoadError
from ..model.head import blend_logits
from ..model.residual import head_logits
from ..promptfile.io import read_prompt_file
from ..promptfile.meta import PromptMeta
from .scorers import Scorer, ScoringInputs, SharedPrompts, eq8_logits, predict_method
from .stored import StoredContext, check_same_weights, class_features, class_priors, residual_weights

MATCH_BUDGET = 1 << 26  # elements of one (B, K, N, M) similarity tensor before the classes are chunked
C = TypeVar("C", bound="Classifier")  # a subclass's loaders return that subclass (the API's Classifier)


class Classifier:
    """Frozen CLIP + class prompt features W (K, M, d) + the training logits (Eq. 8).

    Example::

        clf = Classifier.from_prompt_file("dualpt-project/prompts.safetensors", device="cpu")
        probs = clf.predict_batch(pixels)  # pixels: (B, 3, H, W) from clf.bb.eval_transform()
    """

    def __init__(
        self,
        bb: Backbone,
        meta: PromptMeta,
        W: torch.Tensor,
        classes: list[ClassEntry],
        trained: list[bool],
        source: Path | None = None,
        batch_size: int = 64,
        prior: torch.Tensor | None = None,
    ):
        self.bb = bb
        self.meta = meta
        self.W = W.to(bb.device)  # (K, M, d), normalised
        self.prior = prior.to(bb.device) if prior is not None else None  # (K, d) zero-shot prior (head.py)
        self.dual_weight = meta.dual_weight  # files from before the prior: 1, DUAL-PT alone
        self.prior_weight = meta.prior_weight if prior is not None else 0.0
        self.residual: torch.Tensor | None = None  # (K, d) the residual head's weights (model/residual.py)
        self.temperature = meta.temperature
        self.mix = meta.uniform_mix  # eps of (1 - eps) softmax + eps / K; files before version 5: 0
        self.classes = classes
        self.trained = trained  # per class: True when its features come from the prompt file
        self.source = source
        K, M = W.shape[:2]
        per_class = batch_size * bb.num_local * M  # elements of the (B, 1, N, M) similarity slice of one class
        chunk = max(1, MATCH_BUDGET // per_class) if K * per_class > MATCH_BUDGET else None  # None: all at once
        self.matcher = meta.matcher(chunk)
        self.method = meta.method
        # the first term of the logits: the prompt file's method's scorer (predict/scorers.py; from_loaded sets it)
        self.scorer: Scorer = SharedPrompts(bb, self.matcher, self.W)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @classmethod
    def from_prompt_file(
        cls: type[C],
        path: str | Path,
        model: ModelSpec | str | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        classes: list[ClassEntry] | None = None,
        batch_size: int = 64,
        pretrained: str | None = None,
    ) -> C:
        """Load a prompt file and the CLIP it names (or ``model``, checked to be the same architecture).

        ``model`` is a :class:`ModelSpec` or a model name; with a name (or only ``pretrained``), the
        missing half comes from the prompt file's metadata.

        ``classes`` is the class set to predict over (default: the trained classes). Classes the prompt
        file knows (same folder or name) keep their stored features; the others are encoded from the
        learned context with their names (base-to-new).
        """
        path = Path(path)
        tensors, meta = read_prompt_file(path)
        return cls.from_loaded(path, tensors, meta, model, device, precision, classes, batch_size, pretrained)

    @classmethod
    def from_loaded(
        cls: type[C],
        path: Path,
        tensors: dict[str, torch.Tensor],
        meta: PromptMeta,
        model: ModelSpec | str | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        classes: list[ClassEntry] | None = None,
        batch_size: int = 64,
        pretrained: str | None = None,
    ) -> C:
        """:meth:`from_prompt_file` for a prompt file already read with :func:`promptfile.read_prompt_file`."""
        if isinstance(model, str) or (model is None and pretrained is not None):
            tag = meta.pretrained if pretrained is None else pretrained
            model = ModelSpec(model or meta.model, tag)
        bb, context = load_model_for(meta, tensors, path, model, device, precision)
        known = meta.classes
        classes = list(classes) if classes else known
        W, trained = class_features(context, tensors, known, classes)
        prior = class_priors(bb, tensors, meta, known, classes)
        clf = cls(bb, meta, W, classes, trained, source=path, batch_size=batch_size, prior=prior)
        clf.residual = residual_weights(bb, tensors, known, classes)
        clf.scorer = predict_method(meta.method).scorer(
            ScoringInputs(bb, tensors, meta, classes, path, clf.matcher, clf.W)
        )
        return clf

    def dual_logits(self, z: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        """(B, K) logits of the prompt file's method from global (B, d) and local (B, N, d) features."""
        return self.scorer.logits(z.to(self.bb.device), Z.to(self.bb.device))

    def require_local_matching(self) -> None:
        """A one-line DataError unless the prompts score images by graph matching with shared prompts."""
        if not predict_method(self.method).local_matching:
            raise DataError(
                f"{self.source}: explain shows the graph-matching plan of dualpt and plot prompts; "
                f"this prompt file is --method {self.method}, which has none to show"
            )

    def logits_from_local(self, Z: torch.Tensor) -> torch.Tensor:
        """(B, K) DUAL-PT logits from local image features Z (B, N, d), exactly as training computes them."""
        return eq8_logits(self.bb, self.matcher, Z, self.W)

    def logits_from_features(self, z: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
        """(B, K) final logits from global (B, d) and local (B, N, d) features: DUAL-PT blended with the prior
        as the prompt file says (:func:`head.blend_logits`), plus the residual head, over the temperature, mixed
        with the uniform distribution where the file says so (:func:`residual.head_logits`)."""
        dual = self.dual_logits(z, Z) if self.dual_weight else None
        z = z.to(self.bb.device)
        blend = blend_logits(dual, z, self.prior, self.matcher.logit_scale, self.dual_weight, self.prior_weight)
        return head_logits(blend, z, self.residual, self.matcher.logit_scale, self.temperature, self.mix)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K) logits for preprocessed images (B, 3, H, W)."""
        z, Z = self.bb.encode_images(images)  # (B, d), (B, N, d)
        return self.logits_from_features(z, Z)

    def predict_batch(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K) class probabilities (softmax of the logits)."""
        return self.logits(images).softmax(dim=-1)


def prompt_path(prompts: str | None, project: str | None) -> Path:
    """``--prompt-file``, else the project's prompts.safetensors."""
    return Path(prompts) if prompts else resolve_project(project).prompts


def load_classifier(
    prompts: str | None,
    project: str | None,
    model: str | None,
    pretrained: str | None,
    classes: list[ClassEntry] | None,
    device: str,
    precision: str,
    batch_size: int,
) -> Classifier:
    """The classifier for a command's options: prompt file (or the project's), model override, class set."""
    return Classifier.from_prompt_file(
        prompt_path(prompts, project),
        model,
        device=device,
        precision=precision,
        classes=classes,
        batch_size=batch_size,
        pretrained=pretrained,
    )


def load_model_for(
    meta: PromptMeta,
    tensors: dict[str, torch.Tensor],
    path: Path,
    model: ModelSpec | None,
    device: str | torch.device,
    precision: str,
) -> tuple[Backbone, StoredContext]:
    """The backbone a prompt file was trained with, or ``model`` after checking it is the same one; and the
    stored context on it."""
    trained = ModelSpec(meta.model, meta.pretrained)
    spec = model or trained
    try:
        bb = load_backbone(spec, device=device, precision=precision)
    except ModelLoadError as exc:
        if model is not None:
            raise
        raise ModelLoadError(
            f"{exc} (the model named in {path}; if its weights live elsewhere now, point to "
            "them with --model/--pretrained)"
        ) from None
    check_compatible(meta, bb, path)
    check_image_fingerprint(bb, meta.to_dict(), path)  # also when the named model folder changed in place
    context = StoredContext(bb, tensors["ctx"], meta)
    if spec.resolved() != trained.resolved() or spec.resolved()[0].startswith(LOCAL_DIR):
        check_same_weights(context, tensors)
    return bb, context


def check_compatible(meta: PromptMeta, bb: Backbone, path: Path) -> None:
    """A clear error when ``bb`` is not the architecture the prompt file was trained with."""
    trained_name, _ = ModelSpec(meta.model, meta.pretrained).resolved()
    name, _ = bb.spec.resolved()
    plain = not any(n.startswith(LOCAL_DIR) or n.startswith("hf-hub:") for n in (name, trained_name))
    if plain and name.casefold() != trained_name.casefold():
        raise ModelLoadError(
            f"{path} was trained with {trained_name}, not {name}; drop --model or retrain with --model {name}"
        )
    facts = (
        ("embedding size", meta.embed_dim, bb.embed_dim),
        ("local features", meta.num_local, bb.num_local),
        ("text width", meta.text_width, bb.text_width),
    )
    for what, stored, value in facts:
        if stored is not None and stored != value:
            raise ModelLoadError(
                f"model {bb.spec.label} has {what} {value}, but {path} was trained with "
                f"{trained_name} ({what} {stored}); use the model it was trained with"
            )
