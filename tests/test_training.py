"""Training state: exact resume, replay, checkpoints; generation: seeds, course files; one end-to-end run."""
import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tagface.cli import main
from tagface.config import load_recipe, parse_stages
from tagface.errors import TagfaceError
from tagface.losses import Labels
from tagface.checkpoint import load_state, load_tensors
from tagface.images import write_course_samples
from tagface.sampling import FaceGenerator, standing_batchnorm
from tagface.tags import TagFrequencies, read_tags_file
from tagface.training import ReplayBuffer, Trainer

from test_models_losses import random_faces, tiny_recipe, TINY


@pytest.mark.parametrize("name, switch", [("seed-acgan-dcgan", "train.replay_size=8"),
                                          ("seed-dcgan-cls", "train.replay_size=8"),
                                          ("seed-dcgan-cls", "train.reuse_fakes=true")])
def test_resume_continues_exactly(name, switch, tmp_path):
    recipe = tiny_recipe(name, switch, "train.sample_every=1000", "train.checkpoint_every=1000")
    straight = Trainer(recipe, random_faces(), tmp_path / "a", progress=False)
    straight.fit(2)
    expected = [straight.train_step() for _ in range(2)]

    first = Trainer(recipe, random_faces(), tmp_path / "b", progress=False)
    first.fit(2)  # writes checkpoint.safetensors at its last step
    resumed = Trainer(recipe, random_faces(), tmp_path / "b", progress=False)
    resumed.resume()
    assert resumed.step == 2
    got = [resumed.train_step() for _ in range(2)]
    assert got == expected
    for a, b in zip(straight.G_ema.state_dict().values(), resumed.G_ema.state_dict().values()):
        assert torch.equal(a, b)


def test_a_staged_recipe_is_the_same_run_as_resuming_with_set(tmp_path):
    """Stages (train.stages) do in one command what a run resumed with --set at the stage's step does."""
    switches = ("train.sample_every=1000", "train.checkpoint_every=1000")
    change = {"loss.mode_seeking": 1.0, "train.lr_g": 5e-5, "train.lr_d": 1e-4}
    staged = tiny_recipe("seed-acgan-dcgan", *switches)
    staged.stages = parse_stages([{"start": 2, "set": change}], "test")

    by_hand = Trainer(tiny_recipe("seed-acgan-dcgan", *switches), random_faces(), tmp_path / "a", progress=False)
    by_hand.fit(2)
    by_hand = Trainer(tiny_recipe("seed-acgan-dcgan", *switches, *(f"{k}={v}" for k, v in change.items())),
                      random_faces(), tmp_path / "a", progress=False)
    by_hand.resume()  # the optimizers' state comes from the checkpoint, their learning rates from the recipe
    by_hand.fit(4)

    straight = Trainer(staged, random_faces(), tmp_path / "b", progress=False)
    straight.fit(4)
    assert straight.recipe.loss.mode_seeking == 1.0 and straight.opt_g.param_groups[0]["lr"] == 5e-5
    chunked = Trainer(staged, random_faces(), tmp_path / "c", progress=False)
    chunked.fit(1)
    chunked = Trainer(load_recipe(tmp_path / "c" / "config.yaml"), random_faces(), tmp_path / "c", progress=False)
    chunked.resume()  # before the stage starts, from the run's own config.yaml
    chunked.fit(4)
    for a, b, c in zip(by_hand.G_ema.state_dict().values(), straight.G_ema.state_dict().values(),
                       chunked.G_ema.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)
    plain = Trainer(tiny_recipe("seed-acgan-dcgan", *switches), random_faces(), tmp_path / "d", progress=False)
    plain.fit(4)  # and the stage did change the run
    assert not all(torch.equal(a, b) for a, b in zip(plain.G_ema.state_dict().values(),
                                                    straight.G_ema.state_dict().values()))


def test_a_stage_with_a_new_discriminator_replaces_d_and_resumes_to_the_same_run(tmp_path):
    """new_discriminator: at the stage's step D and its optimiser start afresh, D trains alone first (G frozen),
    and a run resumed at that step draws the same new D as one that ran straight through."""
    switches = ("train.sample_every=1000", "train.checkpoint_every=1000")
    staged = tiny_recipe("seed-acgan-dcgan", *switches)
    staged.stages = parse_stages([{"start": 2, "new_discriminator": 3}], "test")
    straight = Trainer(staged, random_faces(), tmp_path / "a", progress=False)
    straight.fit(2)
    g_before = [p.detach().clone() for p in straight.G.parameters()]
    d_before = [p.detach().clone() for p in straight.D.parameters()]
    straight.new_discriminator(0)
    fresh = [p.detach().clone() for p in straight.D.parameters()]
    assert not any(torch.equal(a, b) for a, b in zip(d_before, fresh))  # every layer re-drawn
    assert not straight.opt_d.state  # Adam's moments of the old D are gone
    straight.new_discriminator(3)
    assert all(torch.equal(a, b) for a, b in zip(g_before, straight.G.parameters()))  # G waits while D learns
    assert not any(torch.equal(a, b) for a, b in zip(fresh, straight.D.parameters()))
    straight = Trainer(staged, random_faces(), tmp_path / "b", progress=False)
    straight.fit(4)
    chunked = Trainer(staged, random_faces(), tmp_path / "c", progress=False)
    chunked.fit(2)  # the checkpoint at the stage's step, saved before the new D
    chunked = Trainer(load_recipe(tmp_path / "c" / "config.yaml"), random_faces(), tmp_path / "c", progress=False)
    chunked.resume()
    chunked.fit(4)
    plain = Trainer(tiny_recipe("seed-acgan-dcgan", *switches), random_faces(), tmp_path / "d", progress=False)
    plain.fit(4)
    for a, b in zip(straight.state_dict()["D"].values(), chunked.state_dict()["D"].values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.G_ema.state_dict().values(), chunked.G_ema.state_dict().values()):
        assert torch.equal(a, b)
    assert not any(torch.equal(a, b) for a, b in zip(plain.D.parameters(), straight.D.parameters()))


def test_a_stage_naming_a_missing_tagger_fails_before_training(tmp_path):
    recipe = tiny_recipe("seed-acgan-dcgan")
    recipe.stages = parse_stages([{"start": 400, "set": {"loss.frozen_classifier": str(tmp_path / "no.safetensors")}}], "t")
    with pytest.raises(TagfaceError, match="stage from step 400: loss.frozen_classifier .*no.safetensors does not exist"):
        Trainer(recipe, random_faces(), tmp_path / "run", progress=False)


def test_standing_batchnorm_makes_eval_mode_match_batch_statistics(tmp_path):
    trainer = Trainer(tiny_recipe("seed-acgan-dcgan"), random_faces(), tmp_path, progress=False)
    G = trainer.G_ema
    norms = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:  # statistics that belong to some other network
        m.running_mean.fill_(3.0)
        m.running_var.fill_(50.0)
    before = [b.clone() for b in G.buffers()]
    freq = TagFrequencies.uniform()
    zd = trainer.recipe.model.z_dim
    z = torch.randn(512, zd, generator=torch.Generator().manual_seed(1))
    labels = Labels(torch.randint(0, 12, (512,)), torch.randint(0, 11, (512,)))
    with torch.no_grad():
        batch_stats = copy.deepcopy(G).train()(z, labels.onehot)  # G normalising with its own batch statistics
        stale = G.eval()(z, labels.onehot)
        fixed = standing_batchnorm(G, freq, zd, batches=40, batch_size=64)
        standing = fixed(z, labels.onehot)
    assert not fixed.training and (standing - batch_stats).abs().mean() < 0.1 * (stale - batch_stats).abs().mean()
    assert all(torch.equal(a, b) for a, b in zip(before, G.buffers()))  # G itself is left as it was
    assert [m.momentum for m in fixed.modules() if isinstance(m, torch.nn.BatchNorm2d)] == [m.momentum for m in norms]
    off = standing_batchnorm(G, freq, zd, batches=0)
    assert all(torch.equal(a, b) for a, b in zip(before, off.buffers()))


class _NormedTags(torch.nn.Module):
    """A 'generator' that batch-normalises its one-hot tags: its running mean is how often each tag was drawn."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(TINY_TAGS)

    def forward(self, z, onehot):
        return self.norm(onehot)


TINY_TAGS = len(TagFrequencies.uniform().hair) + len(TagFrequencies.uniform().eyes)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_standing_statistics_are_gathered_over_the_tags_the_recipe_names(share):
    """sample.standing_uniform: 1 gathers BatchNorm's statistics over every hair x eye pair alike, 0 over the
    data's frequencies (here one hair and one eye colour only), in between a mix."""
    recipe = tiny_recipe("seed-acgan-dcgan", f"sample.standing_uniform={share}")
    data = TagFrequencies.from_labels([2] * 10, [4] * 10)
    G = standing_batchnorm(_NormedTags(), recipe.sample.standing_tags(data), 3, batches=200, batch_size=64)
    seen = G.norm.running_mean
    n_hair = len(data.hair)
    assert seen[:n_hair].sum().item() == pytest.approx(1) and seen[n_hair:].sum().item() == pytest.approx(1)
    assert seen[2].item() == pytest.approx(1 - share + share / n_hair, abs=0.02)
    assert seen[n_hair + 4].item() == pytest.approx(1 - share + share / len(data.eyes), abs=0.02)
    assert seen[0].item() == pytest.approx(share / n_hair, abs=0.02)


@pytest.mark.parametrize("share", ["-0.1", "1.5", "nan"])
def test_a_standing_share_outside_0_to_1_is_refused_before_training(share, tmp_path):
    with pytest.raises(TagfaceError, match=r"^sample.standing_uniform .*: allowed range is \[0, 1\]"):
        Trainer(tiny_recipe("seed-acgan-dcgan", f"sample.standing_uniform={share}"), random_faces(),
                tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


@pytest.mark.parametrize("batches", [0, 5])
def test_saved_generator_has_standing_statistics_and_the_checkpoint_keeps_the_live_ones(batches, tmp_path):
    recipe = tiny_recipe("seed-acgan-dcgan", f"sample.standing_stats={batches}")
    Trainer(recipe, random_faces(), tmp_path, progress=False).fit(2)
    saved = load_tensors(tmp_path / "generator.safetensors")
    ema = load_state(tmp_path / "checkpoint.safetensors")[0]["G_ema"]
    stats = [k for k in saved if k.endswith("running_mean")]
    assert stats and all(torch.equal(saved[k], ema[k]) for k in saved if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert all(torch.equal(saved[k], ema[k]) for k in stats) == (batches == 0)


@pytest.mark.parametrize("name", ["seed-acgan-dcgan", "seed-wgan-gp"])
def test_g_step_leaves_d_gradients_alone(name, tmp_path):
    """G's update backpropagates through D but must not compute (or add to) D's own gradients."""
    trainer = Trainer(tiny_recipe(name), random_faces(), tmp_path, progress=False)
    after_d_step = []
    step_d = trainer.opt_d.step

    def record_then_step(*args, **kwargs):
        after_d_step.append([p.grad.clone() for p in trainer.D.parameters()])
        return step_d(*args, **kwargs)

    trainer.opt_d.step = record_then_step
    g_before = [p.detach().clone() for p in trainer.G.parameters()]
    trainer.train_step()
    assert all(p.grad is not None for p in trainer.G.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(g_before, trainer.G.parameters()))  # G did learn
    for recorded, p in zip(after_d_step[-1], trainer.D.parameters()):
        assert torch.equal(recorded, p.grad)  # untouched by G's backward pass
    trainer.train_step()  # and D learns again in the next iteration
    assert len(after_d_step) == 2 * trainer.recipe.train.d_steps


@pytest.mark.parametrize("name", ["seed-acgan-dcgan", "seed-wgan-gp"])
def test_reuse_fakes_trains_g_on_the_fakes_d_just_judged(name, tmp_path):
    """train.reuse_fakes: one G forward per iteration instead of two, and G's step learns from those fakes."""
    counts = {}
    for reuse in (False, True):
        trainer = Trainer(tiny_recipe(name, f"train.reuse_fakes={reuse}"), random_faces(), tmp_path, progress=False)
        calls, g_forward = [], trainer.G_train.forward
        trainer.G_train.forward = lambda z, y: calls.append(torch.is_grad_enabled()) or g_forward(z, y)
        g_before = [p.detach().clone() for p in trainer.G.parameters()]
        logs = trainer.train_step()
        assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
        assert any(not torch.equal(a, p) for a, p in zip(g_before, trainer.G.parameters()))  # G did learn
        counts[reuse] = calls
    d_steps = trainer.recipe.train.d_steps
    assert counts[False] == [False] * d_steps + [True]          # D's fakes without a graph, then G's own
    assert counts[True] == [False] * (d_steps - 1) + [True]     # the last D step's fakes serve G's step


def test_resume_without_checkpoint_is_an_error(tmp_path):
    from tagface.errors import TagfaceError
    trainer = Trainer(tiny_recipe("seed-acgan-dcgan"), random_faces(), tmp_path, progress=False)
    with pytest.raises(TagfaceError, match="does not exist"):
        trainer.resume()


def test_replay_buffer_mixes_old_fakes_and_keeps_labels_paired():
    buf = ReplayBuffer(size=4, prob=1.0)
    rng = torch.Generator().manual_seed(0)
    old = torch.full((4, 3, 2, 2), 0.5)
    buf.mix(old, Labels(torch.full((4,), 7), torch.full((4,), 3)), rng)
    new = torch.full((4, 3, 2, 2), -0.5)
    mixed, labels = buf.mix(new, Labels(torch.full((4,), 1), torch.full((4,), 1)), rng)
    # every row came from the buffer (prob 1), which holds old and new fakes; labels travel with images
    for img, h in zip(mixed, labels.hair):
        assert (img.mean().item() > 0) == (h.item() == 7)
    assert buf.count == 8


def test_training_writes_grids_curve_and_generator(tmp_path):
    recipe = tiny_recipe("seed-acgan-dcgan", "train.sample_every=2", "train.checkpoint_every=2", "train.log_every=1")
    Trainer(recipe, random_faces(), tmp_path, progress=False).fit(4)
    assert (tmp_path / "samples" / "step-000002.png").exists() and (tmp_path / "samples" / "step-000004.png").exists()
    assert (tmp_path / "losses.png").exists()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all("img_per_s" in r for r in rows)
    assert not list(tmp_path.glob(".*.tmp"))
    gen = FaceGenerator.load(tmp_path)
    assert gen.step == 4 and gen.resolution == 32


def test_same_seed_same_faces_and_truncation_changes_them(tmp_path):
    Trainer(tiny_recipe("seed-acgan-dcgan"), random_faces(), tmp_path, progress=False).fit(1)
    gen = FaceGenerator.load(tmp_path / "checkpoint.safetensors")  # a full checkpoint works too
    from tagface.tags import Tags
    tags = Tags("blue", "red")
    a, b = gen.generate(tags, 3, seed=5), gen.generate(tags, 3, seed=5)
    assert a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, gen.generate(tags, 3, seed=6))
    assert not torch.equal(a, gen.generate(tags, 3, seed=5, truncation=0.3))


def test_course_format_files(tmp_path):
    Trainer(tiny_recipe("seed-acgan-dcgan"), random_faces(), tmp_path / "run", progress=False).fit(1)
    tags_file = tmp_path / "testing_text.txt"
    tags_file.write_text("1,blue hair red eyes\n2,Green eyes, blonde hair\n\n3,black hair\n")
    gen = FaceGenerator.load(tmp_path / "run")
    said = []
    written = write_course_samples(gen, read_tags_file(tags_file), tmp_path / "samples", n=5, seed=0, say=said.append)
    sampled = [line for line in said if "sampled" in line]
    assert len(sampled) == 1 and sampled[0].startswith("id 3: no eye colour given: sampled")  # only line 3 lacks one
    names = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert names == sorted(f"sample_{i}_{k}.jpg" for i in (1, 2, 3) for k in range(1, 6))
    assert len(written) == 15
    with Image.open(tmp_path / "samples" / "sample_1_1.jpg") as im:
        assert im.size == (32, 32) and im.format == "JPEG"
    again = write_course_samples(gen, read_tags_file(tags_file), tmp_path / "again", n=5, seed=0)
    assert all(np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(q))) for p, q in zip(written, again))


def _write_tiny_folder(root: Path, n: int = 12, size: int = 40) -> Path:
    (root / "images").mkdir(parents=True)
    hair, eyes = ["blue", "red", "blonde"], ["green", "red", "blue"]
    lines, rng = [], np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"{i}.jpg")
        lines.append(f"{i},{hair[i % 3]} hair {eyes[i % 3]} eyes")
    (root / "tags.csv").write_text("\n".join(lines) + "\n")
    return root


def test_end_to_end_train_then_generate(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TAGFACE_CACHE", str(tmp_path / "cache"))
    data = _write_tiny_folder(tmp_path / "data")
    run = tmp_path / "run"
    overrides = [a for item in TINY for a in ("--set", item)]
    assert main(["train", "--config", "seed-acgan-dcgan", "--data", str(data), "--out", str(run), "--steps", "2",
                 "--no-progress", *overrides]) == 0
    assert main(["train", "--out", str(run), "--resume", "--steps", "3", "--no-progress"]) == 0
    assert FaceGenerator.load(run).step == 3
    # refusing to overwrite a run keeps what it holds
    assert main(["train", "--config", "seed-acgan-dcgan", "--data", str(data), "--out", str(run), "--steps", "1"]) == 2
    grid = tmp_path / "grid.png"
    assert main(["generate", "blue hair red eyes", "-n", "4", "--seed", "0", "--checkpoint", str(run),
                 "--out", str(grid)]) == 0
    with Image.open(grid) as im:
        assert im.size == (4 * 34 + 2, 34 + 2)
    assert main(["generate", "blue hair", "-n", "2", "--checkpoint", str(run), "--out", str(grid)]) == 0
    assert "no eye colour given: sampled" in capsys.readouterr().err
    assert main(["generate", "--tag-grid", "--checkpoint", str(run), "--out", str(tmp_path / "all.png")]) == 0
    with Image.open(tmp_path / "all.png") as im:
        assert im.size == (11 * 34 + 2, 12 * 34 + 2)


@pytest.mark.parametrize("name", ["seed-acgan-dcgan", "seed-wgan-gp", "seed-srresnet-dragan"])
def test_bf16_channels_last_step_trains_in_fp32_weights(name, tmp_path):
    """bf16 autocast and NHWC change the arithmetic, not the state: fp32 weights move, losses are finite."""
    trainer = Trainer(tiny_recipe(name, "train.precision=bf16", "train.channels_last=true"), random_faces(), tmp_path,
                      progress=False)
    before = [p.detach().clone() for p in trainer.G.parameters()]
    logs = trainer.train_step()
    assert all(np.isfinite(v) for v in logs.values())
    assert all(p.dtype == torch.float32 for p in trainer.G.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.G.parameters()))
    conv = next(m for m in trainer.D.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_bf16_losses_stay_close_to_fp32(tmp_path):
    fp32 = Trainer(tiny_recipe("seed-acgan-dcgan"), random_faces(), tmp_path / "a", progress=False).train_step()
    bf16 = Trainer(tiny_recipe("seed-acgan-dcgan", "train.precision=bf16"), random_faces(), tmp_path / "b",
                   progress=False).train_step()
    assert fp32 != bf16  # it did run in lower precision
    for k in fp32:
        assert bf16[k] == pytest.approx(fp32[k], rel=0.05, abs=0.05)


@pytest.mark.parametrize("setting, message", [("train.precision=fp16", "allowed: fp32, bf16"),
                                              ("train.compile=true", "no double backward")])
def test_bad_speed_settings_are_one_line_errors(setting, message, tmp_path):
    from tagface.errors import TagfaceError
    with pytest.raises(TagfaceError, match=message):
        Trainer(tiny_recipe("seed-wgan-gp", setting), random_faces(), tmp_path, progress=False)


def test_compiled_training_matches_eager_and_saves_plain_weights(tmp_path):
    """torch.compile (about a minute of compiling on 2 cores) gives the eager losses and eager-loadable weights."""
    eager = Trainer(tiny_recipe("seed-acgan-dcgan"), random_faces(), tmp_path / "a", progress=False)
    compiled = Trainer(tiny_recipe("seed-acgan-dcgan", "train.compile=true"), random_faces(), tmp_path / "b",
                       progress=False)
    want, got = eager.train_step(), compiled.train_step()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-3, abs=1e-4)
    compiled.save()
    gen = FaceGenerator.load(tmp_path / "b")  # keys of the plain module, no "_orig_mod." prefix
    assert gen.step == 1


def test_bf16_on_a_cpu_without_native_bf16_warns(tmp_path, monkeypatch):
    import tagface.training as training
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16"):
        Trainer(tiny_recipe("seed-acgan-dcgan", "train.precision=bf16"), random_faces(), tmp_path, progress=False)
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(tiny_recipe("seed-acgan-dcgan", "train.precision=bf16"), random_faces(), tmp_path, progress=False)


def test_init_from_a_generator_file_warms_a_new_d_against_the_frozen_g(tmp_path):
    switches = ("train.sample_every=1000", "train.checkpoint_every=1000")
    source = Trainer(tiny_recipe("seed-acgan-dcgan", *switches), random_faces(), tmp_path / "a", progress=False)
    source.fit(3)
    shipped = load_tensors(tmp_path / "a" / "generator.safetensors")

    fresh = Trainer(tiny_recipe("seed-acgan-dcgan", *switches), random_faces(), tmp_path / "b", progress=False)
    d_fresh = [p.detach().clone() for p in fresh.D.parameters()]
    line = fresh.init_from(tmp_path / "a" / "generator.safetensors", d_warmup=2)
    assert "a new D trained alone for 2 steps" in line and fresh.step == 3
    for k, v in fresh.G_ema.state_dict().items():
        assert torch.equal(v, shipped[k]), k
    for k, v in fresh.G.named_parameters():  # G did not move while D warmed up (its batch statistics may)
        assert torch.equal(v, shipped[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(d_fresh, fresh.D.parameters()))  # D did
    fresh.fit(5)
    assert fresh.step == 5 and FaceGenerator.load(tmp_path / "b").step == 5
    assert any(not torch.equal(v, shipped[k]) for k, v in fresh.G.state_dict().items())


def test_init_from_a_run_takes_its_d_and_skips_the_warm_up(tmp_path):
    switches = ("train.sample_every=1000", "train.checkpoint_every=1000")
    source = Trainer(tiny_recipe("seed-dcgan-cls", *switches), random_faces(), tmp_path / "a", progress=False)
    source.fit(2)
    child = Trainer(tiny_recipe("seed-dcgan-cls", *switches), random_faces(), tmp_path / "b", progress=False)
    assert "G, D and EMA weights" in child.init_from(tmp_path / "a", d_warmup=50)
    assert child.step == 2
    for name in ("G", "D", "G_ema"):
        for a, b in zip(getattr(source, name).state_dict().values(), getattr(child, name).state_dict().values()):
            assert torch.equal(a, b), name


def test_init_grows_conditional_batchnorm_on_a_generator_trained_without_it(tmp_path):
    """model.g_condition=batchnorm adds per-tag gains that start at zero: a generator trained without them
    loads into it and draws the same faces, and training then moves the gains."""
    switches = ("train.sample_every=1000", "train.checkpoint_every=1000")
    source = Trainer(tiny_recipe("seed-acgan-dcgan", *switches), random_faces(), tmp_path / "a", progress=False)
    source.fit(2)
    grown = Trainer(tiny_recipe("seed-acgan-dcgan", *switches, "model.g_condition=batchnorm"), random_faces(),
                    tmp_path / "b", progress=False)
    assert "G, D and EMA weights" in grown.init_from(tmp_path / "a")
    z, labels = torch.randn(4, source.G.z_dim), torch.eye(23)[[0, 5, 11, 3]] + torch.eye(23)[[12, 14, 20, 22]]
    with torch.no_grad():
        assert torch.equal(grown.G_ema(z, labels), source.G_ema(z, labels))
    gains = [p.detach().clone() for p in grown.G.cond.parameters()]
    assert all(not g.any() for g in gains)
    grown.fit(4)
    assert all(g.abs().sum() > 0 for g in grown.G.cond.parameters())
    faster = Trainer(tiny_recipe("seed-acgan-dcgan", *switches, "model.g_condition=batchnorm", "train.lr_grown=10"),
                     random_faces(), tmp_path / "d", progress=False)
    assert [g["lr"] for g in faster.opt_g.param_groups] == [2e-4, 2e-3]  # the gains learn at lr_g x lr_grown
    assert [len(g["params"]) for g in faster.opt_g.param_groups][1] == len(list(faster.G.cond.parameters()))
    again = Trainer(tiny_recipe("seed-acgan-dcgan", *switches), random_faces(), tmp_path / "c", progress=False)
    with pytest.raises(TagfaceError, match="its G does not fit"):  # the gains cannot be dropped on the way back
        again.init_from(tmp_path / "b")


def test_init_errors_are_one_line(tmp_path, capsys):
    switches = ("train.sample_every=1000", "train.checkpoint_every=1000")
    Trainer(tiny_recipe("seed-acgan-dcgan", *switches), random_faces(), tmp_path / "a", progress=False).fit(1)
    wider = Trainer(tiny_recipe("seed-acgan-dcgan", "model.g_channels=16"), random_faces(), tmp_path / "b",
                    progress=False)
    with pytest.raises(TagfaceError, match="its G does not fit this recipe's"):
        wider.init_from(tmp_path / "a")
    with pytest.raises(TagfaceError, match="does not exist"):
        wider.init_from(tmp_path / "missing.safetensors")
    assert main(["train", "--config", "seed-acgan-dcgan", "--out", str(tmp_path / "c"), "--resume",
                 "--init", str(tmp_path / "a")]) == 2
    with pytest.raises(SystemExit):  # argparse's own one-line usage error
        main(["train", "--config", "seed-acgan-dcgan", "--out", str(tmp_path / "c"), "--init", "x", "--d-warmup", "-1"])
    err = capsys.readouterr().err
    assert "give one of them" in err and "expected an integer >= 0" in err


def _tiny_generator_file(tmp_path, monkeypatch) -> tuple[Path, Path, list[str]]:
    """A 2-step seed-acgan-dcgan run on tiny data, exported as a generator file: (data, file, overrides)."""
    monkeypatch.setenv("TAGFACE_CACHE", str(tmp_path / "cache"))
    data = _write_tiny_folder(tmp_path / "data")
    overrides = [a for item in TINY for a in ("--set", item)]
    assert main(["train", "--config", "seed-acgan-dcgan", "--data", str(data), "--out", str(tmp_path / "a"),
                 "--steps", "2", "--no-progress", *overrides]) == 0
    export = tmp_path / "g.safetensors"
    assert main(["export", "--checkpoint", str(tmp_path / "a"), "--format", "safetensors", "--out", str(export)]) == 0
    return data, export, overrides


def test_cli_fine_tunes_a_run_on_other_faces(tmp_path, capsys, monkeypatch):
    data, export, overrides = _tiny_generator_file(tmp_path, monkeypatch)
    assert main(["train", "--config", "seed-acgan-dcgan", "--data", str(data), "--out", str(tmp_path / "b"),
                 "--init", str(export), "--d-warmup", "1", "--steps", "4", "--no-progress", *overrides]) == 0
    assert "a new D trained alone for 1 steps" in capsys.readouterr().err
    assert FaceGenerator.load(tmp_path / "b").step == 4


def test_init_to_its_own_step_warms_a_discriminator_for_a_generator_file(tmp_path, capsys, monkeypatch):
    """--steps equal to the generator's step trains no G step but still writes the run: G as given, a D warmed
    against it, at that step (how a generator without its D gets one to ship beside it)."""
    data, gen, overrides = _tiny_generator_file(tmp_path, monkeypatch)
    assert main(["train", "--config", "seed-acgan-dcgan", "--data", str(data), "--out", str(tmp_path / "b"),
                 "--init", str(gen), "--d-warmup", "3", "--steps", "2", "--no-progress", *overrides]) == 0
    assert "--steps 2 is not past the start (step 2): no G step" in capsys.readouterr().err
    source, warmed = FaceGenerator.load(gen), FaceGenerator.load(tmp_path / "b")
    assert warmed.step == 2
    for a, b in zip(source.G.state_dict().values(), warmed.G.state_dict().values()):
        assert torch.equal(a, b)
    disc = tmp_path / "g-discriminator.safetensors"
    assert main(["export", "--checkpoint", str(tmp_path / "b"), "--discriminator", "--out", str(disc)]) == 0
    assert "D at step 2" in capsys.readouterr().err
    child = Trainer(tiny_recipe("seed-acgan-dcgan"), random_faces(), tmp_path / "c", progress=False)
    assert "D from g-discriminator.safetensors" in child.init_from(gen)


def test_the_shipped_model_fine_tunes_from_its_own_step(tmp_path, capsys, monkeypatch):
    from tagface.checkpoint import default_model_path
    if not default_model_path().exists():
        pytest.skip("no default model in this install")
    monkeypatch.setenv("TAGFACE_CACHE", str(tmp_path / "cache"))
    data = _write_tiny_folder(tmp_path / "data", n=8, size=64)
    shipped = FaceGenerator.load(None)
    run = tmp_path / "ft"
    assert main(["train", "--config", "seed-acgan-dcgan", "--init", "default", "--d-warmup", "1", "--data", str(data),
                 "--out", str(run), "--steps", str(shipped.step + 1), "--no-progress", "--set", "train.batch_size=4",
                 "--set", "sample.standing_stats=1"]) == 0
    err = capsys.readouterr().err
    assert f"at step {shipped.step}" in err and "not past the start" not in err
    tuned = FaceGenerator.load(run)
    assert tuned.step == shipped.step + 1
    z, labels = torch.randn(2, shipped.z_dim), torch.zeros(2, 23)
    labels[:, 0] = labels[:, 12] = 1
    with torch.no_grad():  # one step away: close to the shipped faces, not equal to them
        gap = (tuned.G(z, labels) - shipped.G(z, labels)).abs().mean().item()
    assert 0 < gap < 0.1


@pytest.mark.parametrize("native, flags, hinted", [(True, [], True), (True, ["--precision", "bf16"], False),
                                                   (False, [], False)])
def test_train_suggests_bf16_only_where_the_cpu_has_it(native, flags, hinted, tmp_path, capsys, monkeypatch):
    import tagface.training as training
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setenv("TAGFACE_CACHE", str(tmp_path / "cache"))
    data = _write_tiny_folder(tmp_path / "data")
    overrides = [a for item in TINY for a in ("--set", item)]
    assert main(["train", "--config", "seed-acgan-dcgan", "--data", str(data), "--out", str(tmp_path / "run"),
                 "--steps", "1", "--no-progress", "--device", "cpu", *flags, *overrides]) == 0
    assert ("this CPU has native bf16" in capsys.readouterr().err) == hinted


def test_a_discriminator_beside_the_generator_file_comes_with_it(tmp_path, capsys):
    switches = ("train.sample_every=1000", "train.checkpoint_every=1000")
    source = Trainer(tiny_recipe("seed-acgan-dcgan", *switches), random_faces(), tmp_path / "a", progress=False)
    source.fit(2)
    gen, disc = tmp_path / "g.safetensors", tmp_path / "g-discriminator.safetensors"
    assert main(["export", "--checkpoint", str(tmp_path / "a"), "--format", "safetensors", "--out", str(gen)]) == 0
    assert main(["export", "--checkpoint", str(tmp_path / "a"), "--discriminator", "--out", str(disc)]) == 0
    assert "D at step 2" in capsys.readouterr().err
    child = Trainer(tiny_recipe("seed-acgan-dcgan", *switches), random_faces(), tmp_path / "b", progress=False)
    assert "D from g-discriminator.safetensors" in child.init_from(gen, d_warmup=5)
    for a, b in zip(source.D.state_dict().values(), child.D.state_dict().values()):
        assert torch.equal(a, b)
    source.fit(3)  # a D of another step is not this generator's: warm a new one up instead
    assert main(["export", "--checkpoint", str(tmp_path / "a"), "--discriminator", "--out", str(disc)]) == 0
    other = Trainer(tiny_recipe("seed-acgan-dcgan", *switches), random_faces(), tmp_path / "c", progress=False)
    assert "a new D trained alone for 1 steps" in other.init_from(gen, d_warmup=1)
    # D lives only in a training checkpoint
    assert main(["export", "--checkpoint", str(gen), "--discriminator", "--out", str(tmp_path / "d.safetensors")]) == 2
    assert "only those hold a discriminator" in capsys.readouterr().err
