"""The torch-free tagger reads faces as tagger.TaggerNet does, and `generate --strict-tags` runs without torch."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from tagface.errors import TagfaceError
from tagface.numpy_tagger import NumpyTagger, load_reader
from tagface.tagger import TaggerNet, load_tagger, predict_logits, save_tagger

from test_numpy_generator import make_generator


def make_tagger(path, width=4, resolution=32, seed=0):
    """A tagger with random weights and random BatchNorm statistics, so every term of the forward pass matters."""
    torch.manual_seed(seed)
    net = TaggerNet(width, resolution)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith("running_var") else torch.randn_like(t) * 0.3)
    save_tagger(net.eval(), path)
    return path


def faces(n, side, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, 3, side, side), dtype=np.uint8)


@pytest.mark.parametrize("width,resolution", [(4, 32), (8, 64)])
def test_numpy_tagger_reads_faces_as_the_torch_tagger_does(tmp_path, width, resolution):
    path = make_tagger(tmp_path / "t.safetensors", width, resolution)
    images = faces(70, resolution)  # more than one batch of 64
    want = predict_logits(load_tagger(path), torch.from_numpy(images)).numpy()
    got = NumpyTagger.load(path)(images)
    assert got.shape == (70, 23)
    assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()


def test_the_shipped_tagger_reads_the_same_in_numpy():
    images = faces(32, 64, seed=1)
    want = predict_logits(load_tagger(None), torch.from_numpy(images)).numpy()
    got = load_reader(None, 64)(images)
    assert isinstance(load_reader(None, 64), NumpyTagger)
    assert np.abs(got - want).max() < 1e-3 and (got.argmax(1) == want.argmax(1)).all()


def test_faces_at_another_size_go_to_torch_which_resizes_them(tmp_path):
    path = make_tagger(tmp_path / "t.safetensors", resolution=32)
    images = faces(5, 48)
    with pytest.raises(ValueError, match=r"uint8 \[N, 3, 32, 32\]"):
        NumpyTagger.load(path)(images)
    reader = load_reader(path, 48)
    assert not isinstance(reader, NumpyTagger)
    want = predict_logits(load_tagger(path), torch.from_numpy(images)).numpy()
    assert np.allclose(reader(images), want)


def test_a_file_that_is_not_a_tagger_is_a_one_line_error(tmp_path):
    gen = make_generator(tmp_path / "g.safetensors")
    with pytest.raises(TagfaceError, match="is not a tagface tagger"):
        load_reader(gen, 32)
    with pytest.raises(TagfaceError, match="does not exist"):
        load_reader(tmp_path / "missing.safetensors", 32)


def test_strict_tags_command_never_imports_torch(tmp_path):
    gen, tagger = make_generator(tmp_path / "g.safetensors"), make_tagger(tmp_path / "t.safetensors")
    script = (f"import sys; from tagface.cli import main; "
              f"code = main(['generate', 'orange hair gray eyes', '-n', '5', '--checkpoint', {str(gen)!r}, "
              f"'--strict-tags', '3', '--tagger', {str(tagger)!r}, '--out', {str(tmp_path / 'faces.png')!r}]); "
              f"print(code, 'torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["0", "False"]
    assert "--strict-tags: the tagger misread" in run.stderr and (tmp_path / "faces.png").exists()


def test_tagger_predict_command_never_imports_torch(tmp_path):
    from PIL import Image
    tagger = make_tagger(tmp_path / "t.safetensors", width=4, resolution=64)
    Image.new("RGB", (90, 70), (200, 180, 40)).save(tmp_path / "face.png")
    script = (f"import sys; from tagface.cli import main; "
              f"code = main(['tagger', 'predict', {str(tmp_path / 'face.png')!r}, '--json', '--tagger', {str(tagger)!r}]); "
              f"print(code, 'torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    *rows, verdict = run.stdout.splitlines()
    assert verdict.split() == ["0", "False"] and '"hair_top"' in rows[0]


def test_top_colours_are_the_softmax_ranking():
    from tagface.numpy_tagger import top_colours
    from tagface.tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR
    logits = np.random.RandomState(3).randn(4, 23)
    for row, got in zip(torch.from_numpy(logits), top_colours(logits, k=3)):
        hair, eyes = row[:N_HAIR].softmax(0).topk(3), row[N_HAIR:].softmax(0).topk(3)
        assert [c for c, _ in got["hair"]] == [HAIR_COLOURS[i] for i in hair.indices.tolist()]
        assert [c for c, _ in got["eyes"]] == [EYE_COLOURS[i] for i in eyes.indices.tolist()]
        assert np.allclose([p for _, p in got["hair"]], hair.values.numpy())
