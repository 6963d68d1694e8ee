from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from typer.testing import CliRunner

from dualpt_cli.cli.app import app
from dualpt_cli.clip import load as models
from dualpt_cli.clip.load import ModelSpec, load_backbone, select_precision, shared_backbones
from dualpt_cli.errors import ModelLoadError
from imports import imports, package_imports
from tiny_models import build_tiny_model

runner = CliRunner()


def _bb(spec: str, precision: str = "fp32"):
    return load_backbone(ModelSpec(spec), device="cpu", precision=precision)


def _images(bb, n: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, bb.image_size, bb.image_size, generator=g)


def test_global_feature_equals_encode_image(tiny_model):
    bb = _bb(tiny_model)
    x = _images(bb)
    z, local = bb.encode_images(x)
    assert_close(z, bb.model.encode_image(x))
    assert local.shape == (3, bb.num_local, bb.embed_dim)
    assert torch.isfinite(local).all()


def test_local_feature_counts(tiny_rn, tiny_vit):
    assert _bb(tiny_rn).num_local == 9  # 96 px / 32 = 3x3
    assert _bb(tiny_vit).num_local == 16  # 64 px / patch 16 = 4x4


def test_resnet_at_224_has_7x7_local_features(tmp_path):
    spec = "local-dir:" + str(build_tiny_model("rn", tmp_path / "rn224", image_size=224))
    bb = _bb(spec)
    z, local = bb.encode_images(_images(bb, n=1))
    assert local.shape[1] == 49 == bb.num_local


def _attnpool_for_query(pool, feats: torch.Tensor, t: int) -> torch.Tensor:
    """open_clip's AttentionPool2d with token ``t`` of its sequence as the query, written out head by head.

    feats: (B, C, H, W), the pool's input. The sequence is the mean token then the HW spatial tokens, plus the
    positional embedding; open_clip's own output is query 0. Returns (B, d).
    """
    tokens = feats.flatten(2).transpose(1, 2)  # (B, HW, C)
    seq = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1) + pool.positional_embedding  # (B, HW+1, C)
    q, k, v = pool.q_proj(seq[:, t]), pool.k_proj(seq), pool.v_proj(seq)  # (B, C), (B, L, C), (B, L, C)
    dh = seq.shape[-1] // pool.num_heads
    heads = []
    for h in range(pool.num_heads):
        part = slice(h * dh, (h + 1) * dh)
        weights = torch.softmax((k[:, :, part] @ q[:, part, None]).squeeze(-1) / dh**0.5, dim=-1)  # (B, L)
        heads.append((weights[:, :, None] * v[:, :, part]).sum(1))  # (B, dh)
    return pool.c_proj(torch.cat(heads, dim=-1))


def test_resnet_local_features_are_attnpool_outputs_for_every_query(tiny_rn):
    """Local feature i is open_clip's attention pool read out with spatial token i as the query (PLOT)."""
    bb = _bb(tiny_rn)
    x = _images(bb, n=2)
    pool = bb.model.visual.attnpool
    seen = []
    hook = pool.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        global_ = bb.model.encode_image(x)  # open_clip's own forward: the pool's input is captured on the way
    hook.remove()
    (feats,) = seen  # (B, C, 3, 3)
    z, local = bb.encode_images(x)
    with torch.no_grad():
        assert_close(_attnpool_for_query(pool, feats, 0), global_)  # the written-out pool is open_clip's
        expected = torch.stack([_attnpool_for_query(pool, feats, t) for t in range(1, 10)], dim=1)  # (B, 9, d)
    assert local.shape == (2, 9, bb.embed_dim)
    assert_close(local, expected)
    assert_close(z, global_)


def test_vit_local_features_are_projected_patch_tokens(tiny_vit):
    bb = _bb(tiny_vit)
    x = _images(bb, n=2)
    visual = bb.model.visual
    with torch.no_grad():
        tokens = visual.transformer(visual._embeds(x))[:, 1:]
        expected = visual.ln_post(tokens) @ visual.proj
    assert_close(bb.encode_images(x)[1], expected)


def test_text_path_equals_encode_text(tiny_model):
    bb = _bb(tiny_model)
    tokens = bb.tokenize(["a photo of a cat.", "a red circle", "x" * 3, "a much longer sentence about a dog"])
    expected = bb.model.encode_text(tokens)
    emb = bb.token_embeds(tokens)
    eot = bb.eot_positions(tokens)
    assert_close(bb.encode_text_embeds(emb, eot, truncate=False), expected)
    assert_close(bb.encode_text_embeds(emb, eot, truncate=True), expected, rtol=1e-5, atol=1e-5)


def test_prefixed_text_equals_plain(tiny_model):
    bb = _bb(tiny_model)
    assert bb.supports_prefix_cache
    G, n_ctx, W = 3, 4, bb.text_width
    names = ["cat", "golden retriever", "red circle"]
    tokens = bb.tokenize(["X " * n_ctx + n + "." for n in names])  # SOS, n_ctx placeholders, name, ., EOT
    emb = bb.token_embeds(tokens)  # (C, 77, W)
    eot = bb.eot_positions(tokens)
    ctx = torch.randn(G, n_ctx, W, requires_grad=True)
    prefix = torch.cat([emb[:1, :1].expand(G, 1, W), ctx], dim=1)  # (G, 1+n_ctx, W)
    Lp, L = 1 + n_ctx, int(eot.max()) + 1
    suffix = emb[:, Lp:L]  # (C, Ls, W)
    fast = bb.encode_text_prefixed(prefix, suffix, eot)  # (G, C, d)

    full = torch.cat(
        [prefix.unsqueeze(1).expand(G, len(names), Lp, W), emb[:, Lp:].unsqueeze(0).expand(G, -1, -1, -1)], dim=2
    ).reshape(G * len(names), -1, W)
    plain = bb.encode_text_embeds(full, eot.repeat(G), truncate=False).reshape(G, len(names), -1)
    assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    (g_fast,) = torch.autograd.grad(fast.square().sum(), ctx)
    (g_plain,) = torch.autograd.grad(plain.square().sum(), ctx)
    assert_close(g_fast, g_plain, rtol=1e-4, atol=1e-5)


def _per_stream_block(block, hp, hs, C, mask):
    """One block of the prefix cache with each stream run on its own (before the streams became rows of one
    tensor): the reference the merged block must equal bit for bit."""
    import torch.nn.functional as F

    from dualpt_cli.clip.surgery import attention

    attn = block.attn
    G, Lp, W = hp.shape
    H = attn.num_heads
    Dh, Ls = W // H, hs.shape[1]

    def heads(t):
        return t.unflatten(-1, (H, Dh)).transpose(1, 2)

    qp, kp, vp = (heads(t) for t in F.linear(block.ln_1(hp), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1))
    qs, ks, vs = (heads(t) for t in F.linear(block.ln_1(hs), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1))
    out_p = attention(qp, kp, vp, torch.ones(Lp, Lp, dtype=torch.bool).tril())
    k = torch.cat([kp.unsqueeze(1).expand(G, C, H, Lp, Dh).reshape(G * C, H, Lp, Dh), ks], dim=2)
    v = torch.cat([vp.unsqueeze(1).expand(G, C, H, Lp, Dh).reshape(G * C, H, Lp, Dh), vs], dim=2)
    out_s = attention(qs, k, v, mask)
    out_p = F.linear(out_p.transpose(1, 2).reshape(G, Lp, W), attn.out_proj.weight, attn.out_proj.bias)
    out_s = F.linear(out_s.transpose(1, 2).reshape(G * C, Ls, W), attn.out_proj.weight, attn.out_proj.bias)
    hp, hs = hp + block.ls_1(out_p), hs + block.ls_1(out_s)
    return hp + block.ls_2(block.mlp(block.ln_2(hp))), hs + block.ls_2(block.mlp(block.ln_2(hs)))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_prefix_streams_as_rows_equal_per_stream_blocks(tiny_model, precision):
    """The prefix cache runs the row-wise parts of a block once over both streams: the same bits as running
    each stream on its own, forward and backward."""
    bb = _bb(tiny_model, precision)
    G, n_ctx, W = 3, 4, bb.text_width
    names = ["cat", "golden retriever", "red circle", "x"]
    tokens = bb.tokenize(["X " * n_ctx + n + "." for n in names])
    emb, eot = bb.token_embeds(tokens), bb.eot_positions(tokens)
    Lp, L = 1 + n_ctx, int(eot.max()) + 1
    suffix = emb[:, Lp:L].unsqueeze(0).expand(G, -1, -1, -1)  # (G, C, Ls, W)
    C, Ls = suffix.shape[1], suffix.shape[2]
    ctx = torch.randn(G, n_ctx, W, generator=torch.Generator().manual_seed(0), requires_grad=True)
    prefix = torch.cat([emb[:1, :1].expand(G, 1, W), ctx], dim=1)
    fast = bb.encode_text_prefixed(prefix, suffix, eot.expand(G, -1))
    (g_fast,) = torch.autograd.grad(fast.square().sum(), ctx)

    pos = bb.model.positional_embedding
    mask = torch.ones(Ls, Lp + Ls, dtype=torch.bool)
    mask[:, Lp:] = torch.ones(Ls, Ls, dtype=torch.bool).tril()
    with bb.autocast():
        hp, hs = prefix + pos[:Lp], (suffix + pos[Lp:L]).reshape(G * C, Ls, W)
        for block in bb.text_transformer.resblocks:
            hp, hs = _per_stream_block(block, hp, hs, C, mask)
        h = bb.model.ln_final(hs)[torch.arange(G * C), (eot - Lp).repeat(G)]
        plain = bb._project(h).float().reshape(G, C, -1)
    (g_plain,) = torch.autograd.grad(plain.square().sum(), ctx)
    assert torch.equal(fast, plain)
    assert torch.equal(g_fast, g_plain)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_image_chunks_equal_one_batch(tiny_rn, precision, monkeypatch):
    """A ResNet on CPU encodes a batch a few images at a time (faster): the same bits as the whole batch."""
    from dualpt_cli.clip import backbone

    bb = _bb(tiny_rn, precision)
    assert bb.image_chunk == backbone.IMAGE_CHUNK_CPU
    chunk = backbone.IMAGE_CHUNK_CPU
    for n in (2 * chunk + 3, 2 * chunk + 1):  # the second ends with a lone image
        monkeypatch.setattr(backbone, "IMAGE_CHUNK_CPU", chunk)
        x = _images(bb, n=n)
        z, local = bb.encode_images(x)
        monkeypatch.setattr(backbone, "IMAGE_CHUNK_CPU", None)
        assert bb.image_chunk is None
        z_all, local_all = bb.encode_images(x)
        assert torch.equal(z, z_all) and torch.equal(local, local_all), n


def test_bf16_features_close_to_fp32(tiny_rn):
    x = torch.randn(2, 3, 96, 96)
    z32, _ = _bb(tiny_rn).encode_images(x)
    z16, l16 = _bb(tiny_rn, precision="bf16").encode_images(x)
    assert z16.dtype == torch.float32 and torch.isfinite(l16).all()
    assert torch.nn.functional.cosine_similarity(z32, z16).min() > 0.95


def test_preprocess_from_model_config(tiny_vit):
    bb = _bb(tiny_vit)
    from PIL import Image

    out = bb.eval_transform()(Image.new("RGB", (100, 80), "red"))
    assert out.shape == (3, 64, 64)
    assert bb.train_transform()(Image.new("RGB", (100, 80), "red")).shape == (3, 64, 64)


def test_select_precision(monkeypatch):
    assert select_precision("fp32", torch.device("cpu")) == "fp32"
    assert select_precision("BF16", torch.device("cpu")) == "bf16"
    # auto on a CPU: bf16 exactly when the CPU runs it fast (AMX / AVX-512 bf16), else fp32
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: True)
    assert select_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: False)
    assert select_precision("auto", torch.device("cpu")) == "fp32"
    assert select_precision("", torch.device("cpu")) == "fp32"
    with pytest.raises(ModelLoadError):
        select_precision("fp8", torch.device("cpu"))
    with pytest.raises(ModelLoadError):
        select_precision("fp16", torch.device("cpu"))


def test_local_dir_round_trip(tiny_vit, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_vit.removeprefix("local-dir:"), folder)
    a, b = _bb(tiny_vit), _bb(str(folder))  # a plain folder path is taken as local-dir
    x = _images(a, n=1)
    assert_close(a.encode_images(x)[0], b.encode_images(x)[0])
    weights = folder / "open_clip_model.safetensors"
    c = load_backbone(ModelSpec(str(weights)), device="cpu", precision="fp32")  # a weights file beside its config
    assert_close(a.encode_images(x)[0], c.encode_images(x)[0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "NoSuchNet-7"], "unknown model 'NoSuchNet-7'"),
        (["--model", "local-dir:/definitely/missing"], "does not exist"),
        (["--model", "RN50", "--pretrained", "bogus-tag"], "neither a weights file nor a tag"),
        (["--model", "RN50", "--pretrained", "openai"], "HF_HUB_OFFLINE is set"),
        (["--device", "cuda:7"], "CUDA is not available"),
    ],
)
def test_info_bad_model_clean_errors(args, message):
    result = runner.invoke(app, ["info", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_corrupt_weights_clean_error(tiny_rn, tmp_path):
    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_rn.removeprefix("local-dir:"), folder)
    weights = folder / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = runner.invoke(app, ["info", "--model", f"local-dir:{folder}"])
    assert result.exit_code == 2
    assert "cannot load model" in result.output and "Traceback" not in result.output


def test_loaded_weights_are_the_files_and_random_init_is_restored(tiny_model, tmp_path):
    """A model whose weights come from a file is built without drawing its random init (NaN fills the file
    overwrites): every tensor equals the file's, none is NaN, and torch.nn.init is itself again afterwards."""
    from safetensors.torch import load_file

    from dualpt_cli.clip.load import _RANDOM_INITS

    originals = {fn: getattr(torch.nn.init, fn) for fn in _RANDOM_INITS}
    folder = tiny_model.removeprefix("local-dir:")
    stored = load_file(f"{folder}/open_clip_model.safetensors")
    for spec in (tiny_model, f"{folder}/open_clip_model.safetensors"):  # the folder, and the weights file
        state = _bb(spec).model.state_dict()
        for key, value in stored.items():
            assert torch.equal(state[key], value.to(state[key].dtype)), key
        assert not any(t.is_floating_point() and torch.isnan(t).any() for t in state.values())
        assert all(getattr(torch.nn.init, fn) is f for fn, f in originals.items())
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "open_clip_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError):
        _bb(f"local-dir:{broken}")
    assert all(getattr(torch.nn.init, fn) is f for fn, f in originals.items())


def test_a_model_built_without_its_weights_falls_back_to_the_random_init(tiny_rn, monkeypatch):
    """Should a file leave a NaN-filled tensor behind, the model is built again with open_clip's own init."""
    from dualpt_cli.clip import load as loading

    builds, build = [], loading._build

    def counted_build(*args):
        builds.append(torch.nn.init.normal_ is original_normal)  # True: built with open_clip's own init
        return build(*args)

    original_normal = torch.nn.init.normal_
    monkeypatch.setattr(loading, "_all_filled", lambda model: False)
    monkeypatch.setattr(loading, "_build", counted_build)
    bb = _bb(tiny_rn)
    assert builds == [False, True]
    assert not any(torch.isnan(p).any() for p in bb.model.parameters())


def test_missing_weights_in_local_dir(tiny_rn, tmp_path):
    folder = tmp_path / "noweights"
    folder.mkdir()
    shutil.copy(tiny_rn.removeprefix("local-dir:") + "/open_clip_config.json", folder)
    result = runner.invoke(app, ["info", "--model", f"local-dir:{folder}"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = " ".join(result.output.split())  # one message naming the folder and what to check
    assert message.startswith(f"error: cannot load model local-dir:{folder}: "), message
    assert "could not be loaded" in message and message.endswith("Check the weights file or folder (is it complete?)")


def test_info_table_and_json(tiny_vit):
    result = runner.invoke(app, ["info", "--model", tiny_vit, "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert "local features" in result.output and "16 (4x4)" in result.output
    result = runner.invoke(app, ["info", "--model", tiny_vit, "--json", "--device", "cpu"])
    data = json.loads(result.stdout)
    assert data["embed_dim"] == 32 and data["local_grid"] == [4, 4] and data["device"] == "cpu"


def test_version_and_help():
    assert runner.invoke(app, ["--version"]).output.startswith("dualpt ")
    assert "info" in runner.invoke(app, ["--help"]).output


def test_open_clip_imported_by_load_and_surgery_only():
    """An AST scan of every module: open_clip is imported (in any form) by the factory and the surgery only."""
    import dualpt_cli

    users = sorted(
        path for path, found in package_imports(Path(dualpt_cli.__file__).parent).items() if imports("open_clip", found)
    )
    assert users == ["clip/load.py", "clip/surgery.py"], users


def test_import_scan_sees_every_form(tmp_path):
    """The scan behind the open_clip check catches each way of importing, and not a mention in a docstring."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    forms = {
        "a.py": "import open_clip\n",
        "b.py": "from open_clip import create_model\n",
        "c.py": "def f():\n    from open_clip.transform import PreprocessCfg\n",
        "d.py": "import open_clip.transformer as t\n",
        "e.py": "import importlib\nimportlib.import_module('open_clip')\n",
        "f.py": '"""Does not import open_clip: from open_clip import x."""\nimport torch\n',
    }
    for name, text in forms.items():
        (pkg / name).write_text(text)
    found = package_imports(pkg)
    assert sorted(p for p, f in found.items() if imports("open_clip", f)) == ["a.py", "b.py", "c.py", "d.py", "e.py"]


def test_bf16_text_copy_equals_autocast_of_original(tiny_model):
    """The text transformer's pre-cast copy gives exactly what autocast gives with the fp32 weights."""
    bb = _bb(tiny_model, precision="bf16")
    assert bb.text_transformer is not bb.model.transformer
    tokens = bb.tokenize(["a photo of a cat.", "a red circle"])
    emb, eot = bb.token_embeds(tokens), bb.eot_positions(tokens)
    fast = bb.encode_text_embeds(emb, eot)
    bb.text_transformer = bb.model.transformer  # autocast re-casting the original weights
    assert torch.equal(fast, bb.encode_text_embeds(emb, eot))
    fp32 = _bb(tiny_model)
    assert fp32.text_transformer is fp32.model.transformer


def test_local_dir_is_recorded_absolute(tiny_vit, tmp_path, monkeypatch):
    folder = tiny_vit.removeprefix("local-dir:")
    monkeypatch.chdir(folder + "/..")
    relative = "local-dir:" + folder.rsplit("/", 1)[1]
    assert ModelSpec(relative).resolved() == (tiny_vit, None)


def test_shared_backbones_load_one_model_once(tiny_rn):
    """dualpt compare loads its CLIP once for all cells: inside shared_backbones() the same weights, device and
    precision give the same modules (under the name each caller gave); outside it every load is a new model."""
    with shared_backbones():
        first = load_backbone(ModelSpec(tiny_rn, ""), device="cpu", precision="fp32")
        again = load_backbone(ModelSpec(tiny_rn, "openai"), device="cpu", precision="fp32")  # resolves the same
        other = load_backbone(ModelSpec(tiny_rn, ""), device="cpu", precision="bf16")
    assert again.model is first.model and again.spec.pretrained == "openai" and first.spec.pretrained == ""
    assert other.model is not first.model
    assert load_backbone(ModelSpec(tiny_rn, ""), device="cpu", precision="fp32").model is not first.model


def test_bf16_text_copy_is_made_on_first_use_once_for_shared_backbones(tiny_rn):
    """Predicting the trained classes encodes no text, so the bf16 text copy is not made at load; once made it
    is kept, and the backbones of one shared_backbones() block share it (one copy for a whole compare grid)."""
    with shared_backbones():
        first = load_backbone(ModelSpec(tiny_rn, ""), device="cpu", precision="bf16")
        again = load_backbone(ModelSpec(tiny_rn, "openai"), device="cpu", precision="bf16")
    assert "text" not in first._lazy
    made = again.text_transformer
    assert made is not first.model.transformer and first.text_transformer is made and again.text_transformer is made
