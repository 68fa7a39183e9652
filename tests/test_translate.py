"""`tagface translate`: CycleGAN between two image folders: data, networks, losses, pool, exact resume, CLI."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from tagface.cli import main
from tagface.errors import TagfaceError
from tagface.translate import (CycleGANTrainer, ImagePool, PatchDiscriminator, ResnetGenerator, TranslateConfig,
                               Translator, build_discriminator, build_generator, evaluate_translation,
                               generator_losses, load_image_folder, patch_size)

TINY = dict(resolution=16, g_channels=4, g_blocks=1, d_channels=4, batch_size=2, pool_size=3)
TINY_FLAGS = ["--resolution", "16", "--g-channels", "4", "--g-blocks", "1", "--d-channels", "4", "--batch-size", "2",
              "--pool-size", "3", "--no-progress"]


def write_images(folder, n, colour, size=16, nested=True, seed=0):
    """n noisy PNGs around one colour, half of them in a subfolder; sizes vary to exercise the resize."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        d = folder / "sub" if nested and i % 2 else folder
        d.mkdir(parents=True, exist_ok=True)
        side = size + 4 * (i % 3)
        arr = np.clip(np.array(colour) + rng.integers(-30, 30, (side, side, 3)), 0, 255).astype(np.uint8)
        p = d / f"img{i}.{'png' if i % 3 else 'PNG'}"
        Image.fromarray(arr).save(p, format="PNG")
        paths.append(p)
    return paths


@pytest.fixture
def folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_images(a, 6, (200, 60, 60), seed=1)
    write_images(b, 6, (60, 60, 200), seed=2)
    return a, b


def tiny_images(n, colour, seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(colour, dtype=torch.float32)[None, :, None, None]
    return (base + torch.randint(-30, 30, (n, 3, 16, 16), generator=g)).clamp(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- data
def test_folders_are_read_recursively_and_bad_files_skipped(folders, tmp_path):
    a, _ = folders
    (a / "notes.txt").write_text("not an image")
    (a / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        images = load_image_folder(a, 16, verbose=False)
    assert images.shape == (6, 3, 16, 16) and images.dtype == torch.uint8
    assert images[:, 0].float().mean() > images[:, 2].float().mean() + 80  # red, as written
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):  # the cache remembers the skip
        assert torch.equal(load_image_folder(a, 16, verbose=False), images)


def test_missing_empty_and_unreadable_folders_are_one_line_errors(tmp_path):
    with pytest.raises(TagfaceError, match="nowhere does not exist"):
        load_image_folder(tmp_path / "nowhere", 16, name="--a")
    empty = tmp_path / "empty"
    (empty / "deeper").mkdir(parents=True)
    (empty / "readme.txt").write_text("x")
    with pytest.raises(TagfaceError, match="empty holds no images"):
        load_image_folder(empty, 16)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.png").write_bytes(b"nope")
    with pytest.raises(TagfaceError, match="none of its 1 images"):
        load_image_folder(junk, 16)


# --------------------------------------------------------------------------- networks and losses
@pytest.mark.parametrize("resolution", [16, 20, 64])
def test_generator_keeps_the_shape_and_discriminator_scores_patches(resolution):
    cfg = TranslateConfig(**{**TINY, "resolution": resolution})
    x = torch.rand(2, 3, resolution, resolution) * 2 - 1
    y = build_generator(cfg)(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    p = patch_size(cfg)
    assert build_discriminator(cfg)(x).shape == (2, 1, p, p)
    assert patch_size(TranslateConfig()) == 14  # 64 px: C64 s2 -> 32, C128 s2 -> 16, C256 s1 -> 15, 1 -> 14


def test_default_sizes_are_the_cpu_ones():
    cfg = TranslateConfig()
    assert (cfg.resolution, cfg.g_channels, cfg.g_blocks, cfg.cycle_weight, cfg.identity, cfg.pool_size, cfg.lr,
            cfg.beta1, cfg.beta2) == (64, 32, 6, 10.0, 0.5, 50, 2e-4, 0.5, 0.999)
    g = ResnetGenerator(32, 6)
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in g.modules()) == 2
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in PatchDiscriminator(64, 3).modules()) == 2


@pytest.mark.parametrize("resolution", [18, 8, 0])
def test_bad_resolution_is_an_error(resolution):
    with pytest.raises(TagfaceError, match="multiple of 4"):
        TranslateConfig(resolution=resolution)


def test_cycle_and_identity_losses_vanish_for_the_identity_map():
    cfg = TranslateConfig(**TINY)
    D_a, D_b = build_discriminator(cfg), build_discriminator(cfg)
    a, b = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    _, logs, fake_a, fake_b = generator_losses(nn.Identity(), nn.Identity(), D_a, D_b, a, b, cfg)
    assert logs["cycle"] == 0 and logs["identity"] == 0 and torch.equal(fake_b, a)
    _, logs, _, _ = generator_losses(build_generator(cfg), build_generator(cfg), D_a, D_b, a, b, cfg)
    assert logs["cycle"] > 0 and logs["identity"] > 0
    cfg.identity = 0.0  # off: not computed, and the total is adversarial + cycle only
    total, logs, _, _ = generator_losses(build_generator(cfg), build_generator(cfg), D_a, D_b, a, b, cfg)
    assert logs["identity"] == 0
    assert total.item() == pytest.approx(logs["g_adv"] + cfg.cycle_weight * logs["cycle"], rel=1e-5)


def test_pool_fills_then_mixes_old_fakes():
    pool, rng = ImagePool(2), torch.Generator().manual_seed(0)
    old = torch.full((2, 3, 4, 4), 0.5)
    assert torch.equal(pool.query(old, rng), old)  # filling: the new fakes go through
    out = pool.query(torch.full((16, 3, 4, 4), -0.5), rng)
    assert (out.mean((1, 2, 3)) > 0).any() and (out.mean((1, 2, 3)) < 0).any()
    assert pool.count == 2 and torch.equal(ImagePool(0).query(old, rng), old)


# --------------------------------------------------------------------------- training
def test_resume_continues_exactly(tmp_path):
    cfg = TranslateConfig(**TINY, sample_every=1000, checkpoint_every=1000)
    a, b = tiny_images(6, (200, 60, 60), 1), tiny_images(5, (60, 60, 200), 2)
    straight = CycleGANTrainer(cfg, a, b, tmp_path / "s", progress=False)
    straight.fit(2)
    expected = [straight.train_step() for _ in range(2)]

    first = CycleGANTrainer(cfg, a, b, tmp_path / "r", progress=False)
    first.fit(2)  # checkpoint at its last step (pools already full: 2 steps x 2 fakes > 3)
    resumed = CycleGANTrainer(cfg, a, b, tmp_path / "r", progress=False)
    resumed.resume()
    assert resumed.step == 2 and resumed.pool_a.count == 3
    assert [resumed.train_step() for _ in range(2)] == expected
    for x, y in zip(straight.G_ab.state_dict().values(), resumed.G_ab.state_dict().values()):
        assert torch.equal(x, y)


def test_train_then_run_through_the_cli(folders, tmp_path, capsys):
    a, b = folders
    run = tmp_path / "run"
    assert main(["translate", "train", "--a", str(a), "--b", str(b), "--out", str(run), "--steps", "2",
                 "--sample-every", "2", "--log-every", "1", *TINY_FLAGS]) == 0
    for name in ("checkpoint.safetensors", "translator.safetensors", "config.json", "run.json", "losses.png",
                 "samples/step-000002.png"):
        assert (run / name).exists(), name
    assert not list(run.glob(".*.tmp"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and {"g_adv", "cycle", "identity", "d_a", "d_b"} <= set(rows[0])
    with Image.open(run / "samples" / "step-000002.png") as grid:  # 6 rows x 6 columns of 16 px, 2 px padding
        assert grid.size == (6 * 18 + 2, 6 * 18 + 2)
    assert (run / "translator.safetensors").stat().st_size < (run / "checkpoint.safetensors").stat().st_size / 2

    capsys.readouterr()
    assert main(["translate", "train", "--a", str(a), "--b", str(b), "--out", str(run), *TINY_FLAGS]) == 2
    err = capsys.readouterr().err
    assert "already holds a checkpoint" in err and err.count("\n") == 1
    assert main(["translate", "train", "--out", str(run), "--resume", "--steps", "3", "--no-progress"]) == 0
    assert Translator.load(run).step == 3

    inputs = [a / "img0.PNG", a / "sub" / "img1.png"]
    out = tmp_path / "translated"
    capsys.readouterr()
    assert main(["translate", "run", "--checkpoint", str(run / "translator.safetensors"), *map(str, inputs),
                 "--out", str(out), "--direction", "b2a"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].endswith("img1.png")
    for stem in ("img0", "img1"):
        with Image.open(out / f"{stem}.png") as im:
            assert im.size == (16, 16) and im.mode == "RGB"
    # the full checkpoint works too and gives the same pixels
    assert main(["translate", "run", "--checkpoint", str(run / "checkpoint.safetensors"), str(inputs[0]),
                 "--out", str(tmp_path / "again")]) == 0
    assert main(["translate", "run", "--checkpoint", str(run), str(inputs[0]), "--out", str(tmp_path / "dir")]) == 0
    assert (np.asarray(Image.open(tmp_path / "again" / "img0.png")) ==
            np.asarray(Image.open(tmp_path / "dir" / "img0.png"))).all()


@pytest.mark.parametrize("argv, message", [
    (["train", "--a", "A", "--b", "B", "--out", "R", "--resolution", "30"], "--resolution 30: must be a multiple of 4"),
    (["train", "--a", "nowhere", "--b", "B", "--out", "R"], "--a folder nowhere does not exist"),
    (["train", "--out", "R", "--resume"], "checkpoint.safetensors does not exist"),
    (["run", "--checkpoint", "missing-run", "x.png", "--out", "o"], "checkpoint missing-run does not exist"),
    (["train", "--a", "A", "--b", "B", "--out", "R", "--lr", "nan"], "--lr nan: must be a finite number > 0"),
    (["train", "--a", "A", "--b", "B", "--out", "R", "--lr", "-1"], "--lr -1: must be a finite number > 0"),
    (["train", "--a", "A", "--b", "B", "--out", "R", "--cycle-weight", "nan"],
     "--cycle-weight nan: must be a finite number >= 0"),
    (["train", "--a", "A", "--b", "B", "--out", "R", "--identity", "inf"], "--identity inf: must be a finite number >= 0"),
    (["train", "--a", "A", "--b", "B", "--out", "R", "--pool-size", "-1"], "--pool-size -1: must be an integer >= 0"),
    (["train", "--a", "A", "--b", "B", "--out", "R", "--resolution", "1024"], "--resolution 1024: must be a multiple of 4"),
    (["evaluate", "--checkpoint", "missing-run", "--out", "o", "--n", "1"], "--n 1: at least 8 images per set"),
])
def test_cli_errors_are_one_line_with_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["translate", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("tagface: error:")


def test_run_names_a_missing_or_unreadable_image(folders, tmp_path, capsys):
    a, b = folders
    cfg = TranslateConfig(**TINY)
    from tagface.translate import save_translator
    save_translator(build_generator(cfg), build_generator(cfg), cfg, tmp_path / "t.safetensors")
    assert main(["translate", "run", "--checkpoint", str(tmp_path / "t.safetensors"), str(a / "gone.png"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "image" in (err := capsys.readouterr().err) and "gone.png does not exist" in err and err.count("\n") == 1
    (tmp_path / "bad.png").write_bytes(b"nope")
    assert main(["translate", "run", "--checkpoint", str(tmp_path / "t.safetensors"), str(tmp_path / "bad.png"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "bad.png cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written when an input is bad


class _Shift(nn.Module):
    """A stand-in generator that adds a fixed colour offset (in [-1, 1] units)."""

    def __init__(self, offset):
        super().__init__()
        self.offset = nn.Parameter(torch.tensor(offset, dtype=torch.float32)[None, :, None, None], requires_grad=False)

    def forward(self, x):
        return (x + self.offset).clamp(-1, 1)


def test_evaluate_translation_scores_a_good_map_closer_than_doing_nothing(tmp_path):
    from tagface.tagger import TaggerNet
    torch.manual_seed(0)
    tagger = TaggerNet(width=4, resolution=16).eval().requires_grad_(False)
    a, b = tiny_images(40, (200, 60, 60), seed=1), tiny_images(40, (60, 60, 200), seed=2)
    cfg = TranslateConfig(**TINY)
    shift = 140 / 127.5  # red -> blue and back, in [-1, 1] units
    good = Translator(_Shift([-shift, 0, shift]), _Shift([shift, 0, -shift]), cfg, 7, tmp_path)
    idle = Translator(_Shift([0, 0, 0]), _Shift([0, 0, 0]), cfg, 0, tmp_path)
    r_good, r_idle = (evaluate_translation(t, a, b, tagger, n=16) for t in (good, idle))
    f = r_good["frechet_tagger"]
    assert r_good["n_per_set"] == 16 and r_good["step"] == 7
    assert f["a2b_vs_b"] < 0.2 * f["a_vs_b"] and f["b2a_vs_a"] < 0.2 * f["a_vs_b"]
    assert f["b_vs_b"] < 0.5 * f["a_vs_b"] and f["a_vs_a"] < 0.5 * f["a_vs_b"]
    # doing nothing scores exactly the untranslated distance and keeps every tag the tagger reads
    fi = r_idle["frechet_tagger"]
    assert fi["a2b_vs_b"] == pytest.approx(fi["a_vs_b"]) and fi["b2a_vs_a"] == pytest.approx(fi["a_vs_b"])
    assert r_idle["tags_kept"]["a2b"] == {"hair": 1.0, "eyes": 1.0, "both": 1.0}
    with pytest.raises(TagfaceError, match="too few images"):
        evaluate_translation(idle, a[:10], b, tagger)


def test_evaluate_through_the_cli(folders, tmp_path, capsys):
    a, b = folders
    run = tmp_path / "run"
    more = tmp_path / "more"
    write_images(more / "a", 20, (200, 60, 60), seed=3)
    write_images(more / "b", 20, (60, 60, 200), seed=4)
    assert main(["translate", "train", "--a", str(more / "a"), "--b", str(more / "b"), "--out", str(run),
                 "--steps", "1", *TINY_FLAGS]) == 0
    out = tmp_path / "eval"
    assert main(["translate", "evaluate", "--checkpoint", str(run), "--out", str(out), "--n", "8"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_per_set"] == 8 and set(report["tags_kept"]) == {"a2b", "b2a"}
    assert "| A -> B |" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["translate", "evaluate", "--checkpoint", str(run), "--a", str(a), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("tagface: error:")]
    assert len(errors) == 1 and "too few images" in errors[0] and "Traceback" not in err


def test_every_numeric_translate_field_has_a_rule():
    from dataclasses import fields
    from tagface.translate import TRANSLATE_NUMBERS
    cfg = TranslateConfig()
    numeric = {f.name for f in fields(cfg)
               if isinstance(getattr(cfg, f.name), (int, float)) and not isinstance(getattr(cfg, f.name), bool)}
    assert numeric == set(TRANSLATE_NUMBERS)


@pytest.mark.parametrize("field, value, message", [
    ("beta1", 1.0, r"beta1 1: allowed range is \[0, 1\)"),
    ("beta2", float("nan"), "beta2 nan"),
    ("seed", -1, "--seed -1: must be an integer from 0"),
    ("g_blocks", 0, "--g-blocks 0: must be an integer >= 1"),
])
def test_config_numbers_out_of_range_are_errors(field, value, message):
    with pytest.raises(TagfaceError, match=message):
        TranslateConfig(**{**TINY, field: value})
    with pytest.raises(TagfaceError, match=message):  # a config read back from a file gets the same checks
        TranslateConfig.from_dict({**TINY, field: value})


def test_a_config_that_is_not_a_mapping_is_an_error():
    with pytest.raises(TagfaceError, match="expected a mapping, got list"):
        TranslateConfig.from_dict([1])


@pytest.mark.parametrize("text, message", [
    ("{bad", "run.json is not valid JSON"),
    ("[1]", "run.json: expected a JSON object, got list"),
    ('{"a": 5, "b": "B"}', "run.json: 'a' is not a folder"),
])
def test_a_damaged_run_json_is_one_line_error_on_resume_and_evaluate(text, message, tmp_path, capsys):
    run = tmp_path / "run"
    CycleGANTrainer(TranslateConfig(**TINY), tiny_images(2, (200, 60, 60), 1), tiny_images(2, (60, 60, 200), 2), run,
                    progress=False).save()
    (run / "run.json").write_text(text)
    for argv in (["train", "--out", str(run), "--resume", "--no-progress"],
                 ["evaluate", "--checkpoint", str(run), "--out", str(tmp_path / "eval")]):
        assert main(["translate", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "pass --a DIR and --b DIR" in err and err.count("\n") == 1, err
