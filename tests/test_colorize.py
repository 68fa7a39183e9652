"""Report 000's two-stage pipeline: hair darkness, its statistics, the colorizer losses, exact resume and the
`pipeline train` / `generate --pipeline gray-colorize` / `pipeline colorize` commands on tiny data."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from tagface.cli import main
from tagface.colorize import (COLORIZER_LOSSES, ColorizePipeline, ColorizerDiscriminator, DarknessStats,
                              PipelineConfig, PipelineFaces, PipelineTrainer, apply_overrides, build_colorizer, build_gray_generator,
                              colorizer_d_loss, colorizer_terms, hair_box, hair_darkness)
from tagface.config import ModelConfig
from tagface.errors import TagfaceError
from tagface.losses import Labels
from tagface.models import build_discriminator, build_generator
from tagface.tags import N_HAIR, N_TAGS, Tags

TINY = ["resolution=32", "batch_size=4", "gray.z_dim=8", "gray.g_channels=4", "gray.d_channels=4",
        "gray.embed_dim=4", "colorizer.channels=4", "colorizer.depth=2", "colorizer.d_channels=4",
        "sample_every=1000", "checkpoint_every=1000"]
TINY_ARGS = [a for item in TINY[:-2] for a in ("--set", item)]
ROWS = [(i, hair, eyes) for i, (hair, eyes) in enumerate(
    [("blue", "red"), ("black", "green"), ("blonde", "blue"), ("red", "red"), ("white", "aqua"), ("blue", "green")])]


@pytest.fixture(autouse=True)
def _restore_formatwarning(monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)


def tiny_config(*extra: str) -> PipelineConfig:
    return PipelineConfig.from_dict(apply_overrides(PipelineConfig().to_dict(), TINY + list(extra)))


def tiny_faces(n: int = 8):
    from tagface.data import FaceSet
    g = torch.Generator().manual_seed(0)
    return FaceSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                   torch.randint(0, N_HAIR, (n,), generator=g), torch.randint(0, 11, (n,), generator=g))


def run_error(capsys, argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("tagface: error: ") and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------- hair darkness
@pytest.mark.parametrize("res", [64, 32])
def test_hair_darkness_reads_only_the_hair_box(res):
    rows, cols = hair_box(res)
    if res == 64:
        assert (rows, cols) == (slice(8, 24), slice(16, 48))
    dark_hair = torch.full((1, 3, res, res), 255, dtype=torch.uint8)
    dark_hair[:, :, rows, cols] = 0
    light_hair = 255 - dark_hair
    d = hair_darkness(torch.cat([dark_hair, light_hair]))
    assert d[0].item() == pytest.approx(1.0) and d[1].item() == pytest.approx(0.0)
    # what lies outside the box does not matter; a few odd pixels inside do not move the median
    noisy = torch.randint(0, 256, (1, 3, res, res), dtype=torch.uint8)
    noisy[:, :, rows, cols] = 0
    noisy[:, :, rows.start, cols.start] = 255
    assert hair_darkness(noisy).item() == pytest.approx(1.0)
    # luminance, not the mean of the channels: pure blue is darker than pure green
    blue = torch.zeros(1, 3, res, res, dtype=torch.uint8)
    blue[:, 2] = 255
    green = torch.zeros(1, 3, res, res, dtype=torch.uint8)
    green[:, 1] = 255
    assert hair_darkness(blue).item() == pytest.approx(1 - 0.114, abs=1e-3)
    assert hair_darkness(blue) > hair_darkness(green)


def test_darkness_stats_per_hair_colour():
    darkness = torch.tensor([0.9, 0.7, 0.2, 0.4, 0.5])
    hair = torch.tensor([9, 9, 11, 11, 0])  # black, black, blonde, blonde, orange
    stats = DarknessStats.measure(darkness, hair)
    assert stats.mean[9] == pytest.approx(0.8) and stats.std[9] == pytest.approx(0.1)
    assert stats.mean[11] == pytest.approx(0.3) and stats.count[11] == 2
    assert stats.mean[0] == pytest.approx(0.5) and stats.std[0] == 0 and stats.count[0] == 1
    # a colour the data lacks gets the statistics of all faces
    assert stats.count[8] == 0 and stats.mean[8] == pytest.approx(darkness.mean().item())
    assert DarknessStats.from_json(stats.to_json()) == stats
    request = torch.full((500,), 9)
    a = stats.sample(request, torch.Generator().manual_seed(3))
    assert torch.equal(a, stats.sample(request, torch.Generator().manual_seed(3)))
    assert a.min() >= 0 and a.max() <= 1 and a.mean().item() == pytest.approx(0.8, abs=0.02)
    assert torch.equal(a[:5], stats.sample(request[:5], torch.Generator().manual_seed(3)))  # face i keeps its value
    wide = DarknessStats([0.95] * N_HAIR, [0.5] * N_HAIR, [1] * N_HAIR)
    assert wide.sample(request, torch.Generator().manual_seed(0)).max() == 1.0  # clipped


def test_trainer_measures_darkness_and_stores_it(tmp_path):
    faces = tiny_faces()
    faces.images[:] = 255
    faces.images[faces.hair == faces.hair[0]] = 0  # every face with the first face's hair colour is black
    trainer = PipelineTrainer(tiny_config(), faces, tmp_path, progress=False)
    h = int(faces.hair[0])
    assert trainer.stats.mean[h] == pytest.approx(1.0) and trainer.stats.std[h] == pytest.approx(0.0)
    trainer.fit(1)
    pipe = ColorizePipeline.load(tmp_path)
    assert pipe.stats == trainer.stats and pipe.step == 1 and pipe.resolution == 32
    # colorize takes one Tags for every face or Labels with one per face, and they agree where they ask the same
    per_face = pipe.colorize(faces.images[:4], Labels(torch.tensor([8, 8, 0, 8]), torch.tensor([9, 9, 1, 9])))
    same = pipe.colorize(faces.images[:4], Tags("blue", "red"))
    assert torch.equal(per_face[[0, 1, 3]], same[[0, 1, 3]]) and not torch.equal(per_face[2], same[2])


# --------------------------------------------------------------------------- networks and losses
def test_networks_shapes_and_default_dcgan_unchanged():
    cfg = tiny_config()
    G, C = build_gray_generator(cfg), build_colorizer(cfg)
    gray = G(torch.randn(2, 8), torch.tensor([0.1, 0.9]))
    assert gray.shape == (2, 1, 32, 32) and gray.abs().max() <= 1
    rgb = C(gray, torch.zeros(2, N_TAGS))
    assert rgb.shape == (2, 3, 32, 32) and rgb.abs().max() <= 1
    # the shared DCGAN classes keep their default RGB, tag-conditioned shapes
    default_g = build_generator(ModelConfig(g_channels=4), 32)
    assert default_g.body[-2].out_channels == 3 and "embed.proj.0.weight" in default_g.state_dict()
    assert build_discriminator(ModelConfig(d_channels=4), 32, False, True).features[0].in_channels == 3


@pytest.mark.parametrize("name", list(COLORIZER_LOSSES))
def test_each_colorizer_loss_is_nonzero_and_differentiable(name):
    cfg = tiny_config(f"colorizer.loss={name}")
    torch.manual_seed(0)
    C = build_colorizer(cfg)
    D = ColorizerDiscriminator(cfg) if COLORIZER_LOSSES[name].adversarial else None
    gray, real = torch.rand(4, 1, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    tags = torch.zeros(4, N_TAGS)
    tags[:, 8], tags[:, N_HAIR + 9] = 1, 1
    other = tags.roll(1, 1)
    terms = colorizer_terms(COLORIZER_LOSSES[name], C, D, gray, real, tags, other, cfg.colorizer.adv_weight)
    assert set(terms) == ({"pixel", "adv"} if D is not None else {"pixel"})
    loss = sum(terms.values())
    assert loss.item() > 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in C.parameters() if p.requires_grad)
    if D is not None:
        D.zero_grad()
        d_loss = colorizer_d_loss(C, D, gray, real, tags, other)
        assert d_loss.item() > 0
        d_loss.backward()
        assert all(p.grad is not None for p in D.parameters())


def test_bad_config_values_are_one_line_errors():
    with pytest.raises(TagfaceError, match="unknown colorizer loss 'wgan'; allowed: mse l1 gan"):
        tiny_config("colorizer.loss=wgan")
    with pytest.raises(TagfaceError, match="multiple of 16"):
        tiny_config("resolution=40")
    with pytest.raises(TagfaceError, match="too deep"):
        tiny_config("colorizer.depth=5")
    with pytest.raises(TagfaceError, match="unknown key"):
        tiny_config("colorizer.width=5")


@pytest.mark.parametrize("override, message", [
    ("ema=5", r"ema 5: allowed range is \[0, 1\)"),
    ("rotate=nan", r"rotate nan: allowed range is \[0, 180\]"),
    ("colorizer.adv_weight=nan", "colorizer.adv_weight nan: must be a finite number >= 0"),
    ("lr=nan", "lr nan: must be a finite number > 0"),
    ("lr=-1", "lr -1: must be a finite number > 0"),
    ("betas=2,2", r"betas 2,2: allowed range is \[0, 1\) \(each number\)"),
    ("batch_size=0", "batch_size 0: must be an integer >= 1"),
    ("gray.z_dim=-3", "gray.z_dim -3: must be an integer >= 1"),
    ("resolution=1024", "resolution 1024: must be a multiple of 16 from 32 to 512"),
    ("seed=-1", "seed -1: must be an integer from 0"),
])
def test_config_numbers_out_of_range_are_one_line_errors(override, message):
    with pytest.raises(TagfaceError, match=f"^{message}") as info:
        tiny_config(override)
    assert "\n" not in str(info.value)


def test_every_numeric_pipeline_field_has_a_rule():
    from dataclasses import fields
    from tagface.colorize import PIPELINE_NUMBERS
    cfg = PipelineConfig()

    def numbers(obj, prefix=""):
        for f in fields(obj):
            value = getattr(obj, f.name)
            if hasattr(value, "__dataclass_fields__"):
                yield from numbers(value, f"{f.name}.")
            elif isinstance(value, (int, float, tuple)) and not isinstance(value, bool):
                yield prefix + f.name
    assert set(numbers(cfg)) == set(PIPELINE_NUMBERS)


def test_too_few_faces_for_the_batch_names_the_pipelines_own_key(tmp_path):
    with pytest.raises(TagfaceError, match="fewer than the batch size 100; lower it with --set batch_size=N$"):
        PipelineTrainer(tiny_config("batch_size=100"), tiny_faces(), tmp_path / "run", progress=False)


@pytest.mark.parametrize("name, text, message", [
    ("config.json", "{bad", "config.json is not valid JSON"),
    ("config.json", "[1]", "config.json: expected a JSON object, got list"),
    ("run.json", "{bad", "run.json is not valid JSON"),
    ("run.json", "[1]", "run.json: expected a JSON object, got list"),
    ("run.json", '{"data": 3}', "run.json names no data folders; pass --data DIR"),
])
def test_resume_with_a_damaged_run_file_is_one_line_error(name, text, message, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(tiny_config().to_dict()))
    (run / "run.json").write_text(json.dumps({"data": ["somewhere"]}))
    (run / name).write_text(text)
    assert message in run_error(capsys, ["pipeline", "train", "--out", run, "--resume", "--set", "lr=1e-4"])


# --------------------------------------------------------------------------- training state
def test_resume_continues_exactly(tmp_path):
    cfg = tiny_config("colorizer.loss=gan")
    straight = PipelineTrainer(cfg, tiny_faces(), tmp_path / "a", progress=False)
    straight.fit(2)
    expected = [straight.train_step() for _ in range(2)]
    first = PipelineTrainer(cfg, tiny_faces(), tmp_path / "b", progress=False)
    first.fit(2)
    resumed = PipelineTrainer(cfg, tiny_faces(), tmp_path / "b", progress=False)
    resumed.resume()
    assert resumed.step == 2
    assert [resumed.train_step() for _ in range(2)] == expected
    for net in ("G_ema", "C_ema", "Dc"):
        for a, b in zip(getattr(straight, net).state_dict().values(), getattr(resumed, net).state_dict().values()):
            assert torch.equal(a, b)
    # a checkpoint trained with another colorizer loss is refused, not half-loaded
    other = PipelineTrainer(tiny_config("colorizer.loss=mse"), tiny_faces(), tmp_path / "b", progress=False)
    with pytest.raises(TagfaceError, match="discriminator"):
        other.resume()


# --------------------------------------------------------------------------- commands
def test_cli_train_generate_colorize(tmp_path, capsys, make_dataset):
    ds = make_dataset(ROWS, size=32)
    run = tmp_path / "run"
    assert main(["pipeline", "train", "--data", str(ds.path), "--out", str(run), "--steps", "2", "--resolution", "32",
                 "--colorizer-loss", "l1", "--no-progress", "--device", "cpu", *TINY_ARGS]) == 0
    assert main(["pipeline", "train", "--out", str(run), "--resume", "--steps", "3", "--no-progress",
                 "--device", "cpu"]) == 0
    with Image.open(run / "samples" / "step-000003.png") as im:  # 48 faces: 6 gray rows + 6 colour rows of 8
        assert im.size == (8 * 34 + 2, 12 * 34 + 2)
    pipe = ColorizePipeline.load(run / "pipeline.safetensors")
    assert pipe.step == 3 and pipe.cfg.colorizer.loss == "l1"
    assert pipe.stats.count[9] == 1 and pipe.freq.hair[8] == pytest.approx(2 / 6)
    capsys.readouterr()

    grids = [tmp_path / "a.png", tmp_path / "b.png"]
    for grid in grids:
        assert main(["generate", "--pipeline", "gray-colorize", "blue hair red eyes", "--checkpoint", str(run),
                     "-n", "4", "--seed", "0", "--out", str(grid)]) == 0
    with Image.open(grids[0]) as im:
        assert im.size == (4 * 34 + 2, 34 + 2)
    assert grids[0].read_bytes() == grids[1].read_bytes()
    # (3 steps leave eval-mode batch norm nearly untouched, so faces of other seeds differ by far less than one
    # grey level; check instead that the seed reaches both stage-1 inputs, noise and darkness)
    assert not torch.equal(pipe.noise(4, 0), pipe.noise(4, 1))
    assert torch.equal(pipe.noise(3, 0), pipe.noise(4, 0)[:3])
    assert main(["generate", "--pipeline", "gray-colorize", "blue hair", "--checkpoint", str(run / "checkpoint.safetensors"),
                 "-n", "2", "--out", str(tmp_path / "d.png")]) == 0
    assert "no eye colour given: sampled" in capsys.readouterr().err
    assert main(["generate", "--pipeline", "gray-colorize", "--tag-grid", "--checkpoint", str(run),
                 "--out", str(tmp_path / "all.png")]) == 0
    with Image.open(tmp_path / "all.png") as im:
        assert im.size == (11 * 34 + 2, 12 * 34 + 2)

    capsys.readouterr()
    # `tagface evaluate --pipeline gray-colorize` judges the pipeline like any generator
    real = make_dataset([(i, hair, eyes) for i, (_, hair, eyes) in enumerate(ROWS * 3)], size=32, name="real")
    assert main(["evaluate", "--pipeline", "gray-colorize", "--checkpoint", str(run), "--real", str(real.path),
                 "--samples-per-tag", "1", "--out", str(tmp_path / "eval")]) == 0  # evaluate needs 16 real faces
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["recipe"] == "gray-colorize (l1 colorizer)" and report["step"] == 3
    assert report["generated"]["n"] == 12 * 11 and 0 <= report["generated"]["both"] <= 1
    faces = PipelineFaces(pipe)
    labels = Labels(torch.tensor([8, 8, 0]), torch.tensor([9, 9, 0]))
    drawn = faces.draw(faces.noise(3, 0), labels)
    assert drawn.shape == (3, 3, 32, 32) and drawn.dtype == torch.uint8
    assert torch.equal(drawn, faces.draw(faces.noise(3, 0), labels))  # darkness has its own fixed seed
    assert "--checkpoint" in run_error(capsys, ["evaluate", "--pipeline", "gray-colorize", "--real", str(ds.path),
                                                "--out", str(tmp_path / "e2")])

    out = tmp_path / "coloured"
    images = [ds.image_dir / "0.jpg", ds.image_dir / "1.jpg"]
    assert main(["pipeline", "colorize", "--checkpoint", str(run), *map(str, images), "--tags", "pink hair green eyes",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png"]
    with Image.open(out / "0.png") as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    # colouring ignores the input's colours: a gray copy gives the same result
    gray_copy = tmp_path / "gray" / "0.png"
    gray_copy.parent.mkdir()
    Image.open(images[0]).convert("L").convert("RGB").save(gray_copy)
    assert main(["pipeline", "colorize", "--checkpoint", str(run), str(gray_copy), "--tags", "pink hair green eyes",
                 "--out", str(tmp_path / "again")]) == 0
    a, b = (np.asarray(Image.open(p), dtype=int) for p in (out / "0.png", tmp_path / "again" / "0.png"))
    assert np.abs(a - b).max() <= 8  # only JPEG/rounding differences in the gray input


def test_cli_bad_inputs(tmp_path, capsys, make_dataset):
    ds = make_dataset(ROWS, size=32)
    run = tmp_path / "run"
    base = ["pipeline", "train", "--data", ds.path, "--out", run, "--steps", "1", "--no-progress", "--device", "cpu",
            *TINY_ARGS]
    assert "unknown colorizer loss 'wgan'" in run_error(capsys, base + ["--colorizer-loss", "wgan"])
    assert "resolution 40" in run_error(capsys, base + ["--resolution", "40"])
    assert "--set 'lr=@x': value is not valid YAML" in run_error(capsys, base + ["--set", "lr=@x"])
    assert "lr nan: must be a finite number > 0" in run_error(capsys, base + ["--set", "lr=nan"])
    assert "--data is required" in run_error(capsys, ["pipeline", "train", "--out", run])
    assert "no config.json" in run_error(capsys, ["pipeline", "train", "--out", tmp_path / "empty", "--resume"])
    assert "needs a pipeline run" in run_error(capsys, ["generate", "--pipeline", "gray-colorize", "blue hair red eyes"])
    missing = tmp_path / "nope.safetensors"
    assert "does not exist" in run_error(capsys, ["generate", "--pipeline", "gray-colorize", "blue hair",
                                                  "--checkpoint", missing])
    assert "'bleu'" in run_error(capsys, ["generate", "--pipeline", "gray-colorize", "bleu hair", "--checkpoint", missing])
    assert main([str(a) for a in base]) == 0
    capsys.readouterr()
    assert "already holds a checkpoint" in run_error(capsys, base)
    assert "was trained with mse" in run_error(capsys, ["pipeline", "train", "--out", run, "--resume",
                                                        "--colorizer-loss", "gan", "--no-progress"])
    (run / "checkpoint.safetensors").unlink()  # the finished pipeline kept, its large checkpoint deleted
    before = (run / "pipeline.safetensors").read_bytes()
    assert "already holds pipeline.safetensors" in run_error(capsys, base)
    assert (run / "pipeline.safetensors").read_bytes() == before
    # a plain GAN generator file is not a pipeline
    from tagface.config import Recipe
    from tagface.sampling import save_generator
    from tagface.tags import TagFrequencies
    recipe = Recipe()
    recipe.model.z_dim, recipe.model.embed_dim, recipe.model.g_channels, recipe.train.resolution = 4, 0, 2, 32
    save_generator(build_generator(recipe.model, 32), recipe, TagFrequencies.uniform(), tmp_path / "g.safetensors")
    assert "not a gray-colorize pipeline" in run_error(capsys, ["generate", "--pipeline", "gray-colorize", "blue hair",
                                                                "--checkpoint", tmp_path / "g.safetensors"])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert "cannot be read" in run_error(capsys, ["pipeline", "colorize", "--checkpoint", run, str(bad),
                                                  "--tags", "blue hair", "--out", tmp_path / "o"])
    assert "does not exist" in run_error(capsys, ["pipeline", "colorize", "--checkpoint", run,
                                                  str(tmp_path / "none.png"), "--tags", "blue hair", "--out", tmp_path / "o"])
    assert "does not exist" in run_error(capsys, ["pipeline", "colorize", "--checkpoint", tmp_path / "nothing",
                                                  str(bad), "--tags", "blue hair", "--out", tmp_path / "o"])
    assert not (tmp_path / "o").exists()
