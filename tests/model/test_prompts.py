from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from dualpt_cli.clip.load import ModelSpec, load_backbone
from dualpt_cli.errors import DataError
from dualpt_cli.model.matching import dual_scores
from dualpt_cli.model.prompts import PromptLearner, description_features

NAMES = ["red circle", "golden retriever", "a very long class name with many words in it", "x"]


def _learner(spec, **kw):
    bb = load_backbone(ModelSpec(spec), device="cpu", precision="fp32")
    learner = PromptLearner(bb, NAMES, n_prompts=3, n_ctx=5, seed=0, **kw)
    with torch.no_grad():
        learner.ctx.normal_(0, 0.5)  # well away from init, so differences would show
    return learner


def _run(learner, Z, prefix: bool, truncate: bool, chunk: int = 0):
    learner.use_prefix_cache, learner.truncate, learner.text_chunk = prefix, truncate, chunk
    learner.ctx.grad = None
    W = learner()  # (K, M, d)
    logits = 14.0 * dual_scores(Z, W)
    logits.logsumexp(-1).sum().backward()
    return W.detach(), logits.detach(), learner.ctx.grad.clone()


@pytest.mark.parametrize(
    ("prefix", "truncate", "chunk"),
    [(True, True, 0), (True, False, 0), (False, True, 0), (True, True, 2), (False, False, 3)],
)
def test_shortcuts_equal_plain_path(tiny_model, prefix, truncate, chunk):
    learner = _learner(tiny_model)
    gen = torch.Generator().manual_seed(1)
    Z = F.normalize(torch.randn(5, learner.bb.num_local, learner.bb.embed_dim, generator=gen), dim=-1)
    W0, logits0, grad0 = _run(learner, Z, prefix=False, truncate=False)  # the plain 77-token path
    W1, logits1, grad1 = _run(learner, Z, prefix=prefix, truncate=truncate, chunk=chunk)
    assert_close(W1, W0, rtol=1e-5, atol=1e-6)
    assert_close(logits1, logits0, rtol=1e-5, atol=1e-5)
    assert_close(grad1, grad0, rtol=1e-4, atol=1e-6)


TEXTS = [
    ["red circle, which has a round shape.", "red circle, which has red colour.", "red circle."],
    ["golden retriever, which has long golden fur.", "golden retriever.", "golden retriever, which has a tail."],
    ["a very long class name with many words in it.", "a very long class name, which has x.", "a."],
    ["x, which has y.", "x, which has z and more words than the others.", "x."],
]


@pytest.mark.parametrize(("prefix", "truncate", "chunk"), [(True, True, 0), (False, True, 0), (True, True, 3)])
def test_per_prompt_texts_shortcuts_equal_plain_path(tiny_model, prefix, truncate, chunk):
    """Description prompts (a different text after the context for each of the M prompts) through the shortcuts."""
    learner = _learner(tiny_model, class_texts=TEXTS)
    assert learner.per_prompt and learner.token_suffix.shape[:2] == (4, 3)
    gen = torch.Generator().manual_seed(2)
    Z = F.normalize(torch.randn(5, learner.bb.num_local, learner.bb.embed_dim, generator=gen), dim=-1)
    W0, logits0, grad0 = _run(learner, Z, prefix=False, truncate=False)
    W1, logits1, grad1 = _run(learner, Z, prefix=prefix, truncate=truncate, chunk=chunk)
    assert_close(W1, W0, rtol=1e-5, atol=1e-6)
    assert_close(logits1, logits0, rtol=1e-5, atol=1e-5)
    assert_close(grad1, grad0, rtol=1e-4, atol=1e-6)


def test_per_prompt_texts_equal_encode_text(tiny_rn):
    """Prompt j of class k is exactly ``ctx_words + texts[k][j]``: the words "a photo of a" as context."""
    bb = load_backbone(ModelSpec(tiny_rn), device="cpu", precision="fp32")
    texts = [["cat, which has whiskers.", "cat."], ["dog, which has a tail.", "dog, which barks."]]
    learner = PromptLearner(bb, ["cat", "dog"], n_prompts=2, n_ctx=4, ctx_init="a photo of a", class_texts=texts)
    with torch.no_grad():
        learner.ctx[1] = learner.ctx[0]  # prompt 1 = the words exactly too
        W = learner()  # (2, 2, d)
        flat = [f"a photo of a {t}" for pair in texts for t in pair]
        expected = F.normalize(bb.model.encode_text(bb.tokenize(flat)), dim=-1).reshape(2, 2, -1)
    assert_close(W, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(DataError, match="--prompt-text name"):
        long_text = [["cat, which has " + "fur " * 80], ["dog."]]
        PromptLearner(bb, ["cat", "dog"], n_prompts=1, n_ctx=4, class_texts=long_text)
    with pytest.raises(DataError, match="needs 2 prompt texts"):
        PromptLearner(bb, ["cat", "dog"], n_prompts=2, n_ctx=4, class_texts=[["cat."], ["dog."]])


def test_plain_path_matches_encode_text_for_word_prompts(tiny_rn):
    """With the context set to real word embeddings, the learner's features equal encode_text of the text."""
    bb = load_backbone(ModelSpec(tiny_rn), device="cpu", precision="fp32")
    learner = PromptLearner(bb, ["cat", "dog"], n_prompts=1, n_ctx=4, ctx_init="a photo of a")
    expected = F.normalize(bb.model.encode_text(bb.tokenize(["a photo of a cat.", "a photo of a dog."])), dim=-1)
    assert_close(learner()[:, 0].detach(), expected, rtol=1e-5, atol=1e-5)


def test_class_specific_context(tiny_rn):
    learner = _learner(tiny_rn, class_specific=True)
    assert learner.ctx.shape == (len(NAMES), 3, 5, learner.bb.text_width)
    W = learner()
    assert W.shape == (len(NAMES), 3, learner.bb.embed_dim)
    W.sum().backward()
    assert learner.ctx.grad.abs().sum() > 0


def test_prompts_differ_and_are_normalised(tiny_rn):
    W = _learner(tiny_rn)().detach()
    assert_close(W.norm(dim=-1), torch.ones(len(NAMES), 3))
    assert (W[:, 0] - W[:, 1]).abs().max() > 1e-3


def test_too_long_class_name(tiny_rn):
    bb = load_backbone(ModelSpec(tiny_rn), device="cpu", precision="fp32")
    with pytest.raises(DataError, match="class name too long"):
        PromptLearner(bb, ["word " * 80], n_ctx=16)


def test_description_features(tiny_rn):
    bb = load_backbone(ModelSpec(tiny_rn), device="cpu", precision="fp32")
    mean, has, sets = description_features(bb, ["cat", "dog"], [["whiskers", "pointed ears"], []])
    assert has.tolist() == [True, False]
    assert sets[0].shape == (2, bb.embed_dim) and sets[1].shape == (0, bb.embed_dim)
    expected = bb.encode_texts(["cat, which has whiskers.", "cat, which has pointed ears."]).mean(0)
    assert_close(mean[0], expected)
    assert mean[1].abs().sum() == 0


@pytest.mark.parametrize(
    ("phrase", "text"),
    [
        ("a long tail.", "tiger, which is a long tail"),
        ("an orange coat", "tiger, which is an orange coat"),
        ("used for hunting", "tiger, which is used for hunting"),
        ("has black stripes", "tiger, which has black stripes"),
        ("often seen near water", "tiger, which often seen near water"),
        ("typically large", "tiger, which typically large"),
        ("may roar", "tiger, which may roar"),
        ("can swim", "tiger, which can swim"),
        ("black stripes", "tiger, which has black stripes"),
        ("angular ears", "tiger, which is angular ears"),  # their test is startswith("a"): any word in a-
    ],
)
def test_menon_vondrick_template_rules(phrase, text):
    from dualpt_cli.model.prompts import DESCRIPTION_TEMPLATE, MENON_VONDRICK, phrase_text

    assert phrase_text(MENON_VONDRICK, "tiger", phrase) == text
    assert phrase_text(DESCRIPTION_TEMPLATE, "tiger", phrase) == f"tiger, which has {phrase.rstrip('.')}."
