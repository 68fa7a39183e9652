"""`tagface export`: the ONNX generator runs in onnxruntime and draws what PyTorch draws."""
import json
import warnings

import pytest
import torch

from tagface.cli import main
from tagface.errors import TagfaceError
from tagface.export import export_checkpoint, export_onnx
from tagface.losses import Labels
from tagface.sampling import FaceGenerator, standing_batchnorm
from tagface.tags import EYE_COLOURS, HAIR_COLOURS, TagFrequencies
from tagface.training import Trainer

from test_models_losses import random_faces, tiny_recipe

onnx = pytest.importorskip("onnx", reason="ONNX export needs: pip install 'tagface[export]'")
ort = pytest.importorskip("onnxruntime", reason="checking an export needs: pip install 'tagface[export]'")


@pytest.fixture(autouse=True)
def _restore_formatwarning(monkeypatch):
    # main() replaces warnings.formatwarning process-wide; put it back after each test
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny trained run per generator architecture."""
    out = {}
    for name in ("seed-dcgan-cls", "seed-srresnet-dragan"):
        run = tmp_path_factory.mktemp(name)
        Trainer(tiny_recipe(name), random_faces(), run, progress=False).fit(1)
        out[name] = run
    return out


def _tags(n: int, seed: int) -> Labels:
    g = torch.Generator().manual_seed(seed)
    return Labels(torch.randint(0, len(HAIR_COLOURS), (n,), generator=g),
                  torch.randint(0, len(EYE_COLOURS), (n,), generator=g))


@pytest.mark.parametrize("name", ["seed-dcgan-cls", "seed-srresnet-dragan"])
def test_onnx_matches_pytorch(name, runs, tmp_path, capsys):
    out = tmp_path / "g.onnx"
    assert main(["export", "--checkpoint", str(runs[name]), "--format", "onnx", "--out", str(out)]) == 0
    assert "g.onnx" in capsys.readouterr().err
    gen = FaceGenerator.load(runs[name])
    assert gen.recipe.model.generator == ("dcgan" if "dcgan" in name else "srresnet")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["z", "labels"]
    assert [o.name for o in session.get_outputs()] == ["images"]
    for batch in (1, 3):
        z = gen.noise(batch, seed=batch)
        labels = _tags(batch, batch)
        images = session.run(["images"], {"z": z.numpy(), "labels": labels.onehot.numpy()})[0]
        with torch.no_grad():
            want = gen.G(z, labels.onehot).numpy()
        assert images.shape == (batch, 3, 32, 32)
        assert abs(images - want).max() < 1e-4
        assert images.min() >= -1 and images.max() <= 1


def test_metadata_and_dynamic_batch(runs, tmp_path):
    out = tmp_path / "g.onnx"
    info = export_checkpoint(runs["seed-dcgan-cls"], out, "onnx", opset=13)
    assert info["opset"] == 13 and info["max_abs_diff"] < 1e-4
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["tagface.recipe_name"] == "seed-dcgan-cls"
    assert json.loads(meta["tagface.hair_colours"]) == list(HAIR_COLOURS)
    assert json.loads(meta["tagface.eye_colours"]) == list(EYE_COLOURS)
    assert json.loads(meta["tagface.recipe"])["model"]["g_channels"] == 8
    assert meta["tagface.z_dim"] == "100" and meta["tagface.resolution"] == "32"
    assert model.opset_import[0].version == 13
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.input) + list(model.graph.output)}
    assert shapes == {"z": ["batch", 100], "labels": ["batch", 23], "images": ["batch", 3, 32, 32]}
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_export_leaves_a_training_generator_in_training_mode(tmp_path):
    trainer = Trainer(tiny_recipe("seed-acgan-dcgan"), random_faces(), tmp_path / "run", progress=False)
    assert trainer.G.training
    info = export_onnx(trainer.G, trainer.recipe, tmp_path / "g.onnx")
    assert trainer.G.training and info["max_abs_diff"] < 1e-4


def test_dynamo_exporter_when_onnxscript_is_installed(runs, tmp_path):
    pytest.importorskip("onnxscript", reason="the torch.export-based exporter needs onnxscript")
    info = export_checkpoint(runs["seed-srresnet-dragan"], tmp_path / "g.onnx", opset=18, exporter="dynamo")
    assert info["max_abs_diff"] < 1e-4


def test_unknown_format_and_bad_opset_are_one_line_errors(runs, tmp_path, capsys):
    code = main(["export", "--checkpoint", str(runs["seed-dcgan-cls"]), "--format", "TFLite",
                 "--out", str(tmp_path / "g.tflite")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown export format 'TFLite'" in err and "onnx" in err
    with pytest.raises(TagfaceError, match="opset"):
        export_checkpoint(runs["seed-dcgan-cls"], tmp_path / "g.onnx", opset=99)
    with pytest.raises(TagfaceError, match="does not exist"):
        export_checkpoint(tmp_path / "nowhere", tmp_path / "g.onnx")
    assert not (tmp_path / "g.onnx").exists()


def test_safetensors_export_is_a_slim_generator_that_draws_the_same_faces(runs, tmp_path, capsys):
    run = runs["seed-dcgan-cls"]
    full, half = tmp_path / "g.safetensors", tmp_path / "g16.safetensors"
    assert main(["export", "--checkpoint", str(run), "--format", "safetensors", "--out", str(full)]) == 0
    assert main(["export", "--checkpoint", str(run), "--format", "safetensors", "--half", "--out", str(half)]) == 0
    assert "float16" in capsys.readouterr().err
    assert half.stat().st_size < 0.6 * full.stat().st_size
    source, a, b = FaceGenerator.load(run), FaceGenerator.load(full), FaceGenerator.load(half)
    assert (a.step, b.step) == (source.step, source.step) and a.freq.hair == source.freq.hair
    z, labels = source.noise(3, seed=5), _tags(3, 5)
    with torch.no_grad():
        want = source.G(z, labels.onehot)
        assert torch.equal(a.G(z, labels.onehot), want)
        assert (b.G(z, labels.onehot) - want).abs().max() < 2e-2
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "--half", "--out", str(tmp_path / "g.onnx")]) == 2
    assert "--half" in capsys.readouterr().err


def test_export_can_recompute_standing_statistics(runs, tmp_path, capsys):
    run = runs["seed-dcgan-cls"]
    out = tmp_path / "g.safetensors"
    assert main(["export", "--checkpoint", str(run), "--format", "safetensors", "--standing-stats", "3",
                 "--out", str(out)]) == 0
    source, got = FaceGenerator.load(run), FaceGenerator.load(out)
    want = standing_batchnorm(source.G, source.freq, source.z_dim, 3)  # the default: the data's frequencies
    stats = [k for k in want.state_dict() if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(got.G.state_dict()[k], want.state_dict()[k]) for k in stats)
    assert not all(torch.equal(got.G.state_dict()[k], source.G.state_dict()[k]) for k in stats)
    # --standing-uniform 1: every pair alike, and the written recipe says so
    assert main(["export", "--checkpoint", str(run), "--format", "safetensors", "--standing-stats", "3",
                 "--standing-uniform", "1", "--out", str(out)]) == 0
    got, want = FaceGenerator.load(out), standing_batchnorm(source.G, TagFrequencies.uniform(), source.z_dim, 3)
    assert all(torch.equal(got.G.state_dict()[k], want.state_dict()[k]) for k in stats)
    assert got.recipe.sample.standing_uniform == 1 and source.freq != TagFrequencies.uniform()
    capsys.readouterr()
    before = out.read_bytes()
    assert main(["export", "--checkpoint", str(run), "--format", "safetensors", "--standing-uniform", "0.5",
                 "--out", str(out)]) == 2  # no statistics to gather
    err = capsys.readouterr().err
    assert "--standing-uniform" in err and "\n" not in err.strip() and out.read_bytes() == before
    for bad in ("1.5", "-0.1", "nan", "half"):
        with pytest.raises(SystemExit) as exit_:
            main(["export", "--checkpoint", str(run), "--format", "safetensors", "--standing-stats", "3",
                  "--standing-uniform", bad, "--out", str(out)])
        assert exit_.value.code == 2 and "--standing-uniform" in capsys.readouterr().err
    assert out.read_bytes() == before
    with pytest.raises(SystemExit) as exit_:  # a count of batches must be positive: argparse's one-line error
        main(["export", "--checkpoint", str(run), "--format", "safetensors", "--standing-stats", "0", "--out", str(out)])
    assert exit_.value.code == 2 and "--standing-stats" in capsys.readouterr().err
