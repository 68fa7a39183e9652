"""The torch-free generator draws the faces the torch generator draws, and `tagface generate` uses it."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from tagface.checkpoint import read_metadata
from tagface.cli import main
from tagface.config import Recipe
from tagface.errors import TagfaceError
from tagface.models import build_generator
from tagface.numpy_generator import NumpyGenerator, conv_transpose_4x4_s2, load_generator, torch_normal
from tagface.sampling import FaceGenerator, save_generator
from tagface.tags import TagFrequencies, Tags


@pytest.fixture(autouse=True)
def _restore_formatwarning(monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() replaces it process-wide


def make_generator(path, *, g_condition="input", generator="dcgan", embed_dim=0, seed=0):
    """A small generator with random weights and random BatchNorm statistics (so every term of the forward
    pass matters), saved in fp32 as training saves it."""
    recipe = Recipe()
    recipe.model.generator, recipe.model.g_condition = generator, g_condition
    recipe.model.z_dim, recipe.model.embed_dim, recipe.model.g_channels = 8, embed_dim, 4
    recipe.train.resolution = 32
    torch.manual_seed(seed)
    G = build_generator(recipe.model, recipe.train.resolution)
    with torch.no_grad():
        for name, t in G.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith("running_var") else torch.randn_like(t) * 0.3)
    save_generator(G, recipe, TagFrequencies([1.0] + [0.0] * 11, [0.5, 0.5] + [0.0] * 9), path)
    return path


@pytest.mark.parametrize("seed", [0, 1, 12345, -1, 2 ** 32 + 7, 2 ** 63 - 1])
def test_torch_normal_is_torch_randn(seed):
    want = torch.randn(48, 100, generator=torch.Generator().manual_seed(seed)).numpy()
    np.testing.assert_allclose(torch_normal(seed, 48, 100), want, atol=3e-6, rtol=0)


def test_torch_normal_refuses_partial_blocks():
    with pytest.raises(ValueError, match="multiple of 16"):
        torch_normal(0, 3, 5)


@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_is_torch_conv_transpose(bias):
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(6, 5, 4, 2, 1, bias=bias)
    x = torch.randn(3, 6, 4, 7)
    want = conv(x).detach().numpy()
    got = conv_transpose_4x4_s2(x.numpy().transpose(0, 2, 3, 1), conv.weight.detach().numpy(),
                                conv.bias.detach().numpy() if bias else None).transpose(0, 3, 1, 2)
    assert got.shape == want.shape == (3, 5, 8, 14)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("g_condition", ["input", "batchnorm"])
def test_same_faces_as_the_torch_generator(tmp_path, g_condition):
    path = make_generator(tmp_path / "g.safetensors", g_condition=g_condition)
    npg, tg = NumpyGenerator.load(path), FaceGenerator.load(path)
    np.testing.assert_allclose(npg.noise(20, 5, 0.7), tg.noise(20, 5, 0.7).numpy(), atol=3e-6)
    z = tg.noise(8, 3).numpy()
    onehot = np.eye(23, dtype=np.float32)[[0, 3, 11, 5, 7, 2, 9, 1]] + np.eye(23, dtype=np.float32)[
        [12, 22, 15, 13, 20, 17, 12, 18]]
    with torch.no_grad():
        want = tg.G(torch.from_numpy(z), torch.from_numpy(onehot)).numpy()
    np.testing.assert_allclose(npg.forward(z, onehot), want, atol=1e-5)
    for drawn, reference in ((npg.generate(Tags("blue", "red"), 10, seed=2), tg.generate(Tags("blue", "red"), 10, seed=2)),
                             (npg.tag_grid(4, 0.8), tg.tag_grid(4, 0.8))):
        diff = np.abs(drawn.astype(int) - reference.numpy().astype(int))
        assert drawn.dtype == np.uint8 and drawn.shape == tuple(reference.shape)
        assert diff.max() <= 1 and diff.mean() < 1e-3  # a rounding at .5 may fall either way
    assert [npg.complete(Tags(None, None), s) for s in range(20)] == [tg.complete(Tags(None, None), s) for s in range(20)]
    assert npg.complete(Tags(None, None), 9)[0].hair == "orange"  # the only hair colour in the frequencies


def test_other_generators_are_left_to_torch(tmp_path):
    drawable = make_generator(tmp_path / "dcgan.safetensors")
    assert isinstance(load_generator(drawable), NumpyGenerator)
    srresnet = make_generator(tmp_path / "srresnet.safetensors", generator="srresnet")
    learned = make_generator(tmp_path / "learned.safetensors", embed_dim=6)
    for path in (srresnet, learned):
        assert not NumpyGenerator.can_draw(read_metadata(path))
        assert isinstance(load_generator(path), FaceGenerator)
    meta = read_metadata(drawable)
    assert not NumpyGenerator.can_draw({**meta, "tagface.kind": "discriminator"})
    assert not NumpyGenerator.can_draw({**meta, "tagface.state": "{}"})  # a training checkpoint: torch takes G_ema
    recipe = json.loads(meta["tagface.recipe"])
    recipe["model"]["text_encoder"] = "words"
    assert not NumpyGenerator.can_draw({**meta, "tagface.recipe": json.dumps(recipe)})


def test_truncation_out_of_range_is_refused(tmp_path):
    npg = NumpyGenerator.load(make_generator(tmp_path / "g.safetensors"))
    with pytest.raises(TagfaceError, match=r"allowed range is \(0, 2\]"):
        npg.noise(4, 0, 3.0)


def test_generate_command_never_imports_torch(tmp_path):
    path = make_generator(tmp_path / "g.safetensors")
    script = (f"import sys; from tagface.cli import main; "
              f"code = main(['generate', 'blue hair red eyes', '-n', '3', '--checkpoint', {str(path)!r}, "
              f"'--out', {str(tmp_path / 'faces.png')!r}]); "
              f"main(['generate', '--tag-grid', '--checkpoint', {str(path)!r}, '--out', {str(tmp_path / 'grid.png')!r}]); "
              f"print(code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "False"]
    from PIL import Image
    assert Image.open(tmp_path / "faces.png").size == (3 * 34 + 2, 34 + 2)
    assert Image.open(tmp_path / "grid.png").size == (11 * 34 + 2, 12 * 34 + 2)


@pytest.mark.parametrize("damage", ["drop", "reshape", "extra", "recipe"])
def test_a_file_that_does_not_fit_is_a_one_line_error(tmp_path, capsys, damage):
    from safetensors.numpy import load_file, save_file
    path = make_generator(tmp_path / "g.safetensors")
    weights, meta = load_file(path), read_metadata(path)
    if damage == "drop":
        del weights["body.4.running_var"]
    elif damage == "reshape":
        weights["body.3.weight"] = weights["body.3.weight"][:, :2]
    elif damage == "extra":
        weights["cond.0.weight"] = np.zeros((64, 23), np.float32)
    else:
        meta["tagface.recipe"] = "{not json"
    save_file(weights, str(path), metadata=meta)
    code = main(["generate", "blue hair red eyes", "--checkpoint", str(path), "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"tagface: error: {path}: ")
    assert ("not a recipe" if damage == "recipe" else "weights do not fit") in err
    assert not (tmp_path / "x.png").exists()
