"""DiffAugment: each transform does what the paper's does, stays differentiable and seeded; the trainer uses it
for real and fake alike and still resumes exactly."""
import pytest
import torch

from tagface.diffaugment import (DiffAugmented, TRANSFORMS, ada_adjust, color, cutout, diff_augment, parse_policy,
                                translation)
from tagface.errors import TagfaceError
from tagface.training import Trainer

from test_models_losses import random_faces, tiny_recipe


def test_translation_moves_content_and_fills_with_zero():
    x = torch.full((64, 1, 16, 16), -1.0)
    x[:, :, 8, 8] = 1.0  # one bright pixel
    out = translation(x, torch.Generator().manual_seed(0))
    where = [(img[0] == 1).nonzero().tolist() for img in out]
    assert all(len(w) == 1 for w in where)  # the pixel is moved, never duplicated or lost (shift <= 2 of 16)
    shifts = {(w[0][0] - 8, w[0][1] - 8) for w in where}
    assert len(shifts) > 5 and max(max(abs(a), abs(b)) for a, b in shifts) <= 2
    assert (out == 0).any()  # uncovered border pixels are 0


def test_cutout_zeros_a_quarter_of_the_image_at_most():
    x = torch.ones(32, 3, 16, 16)
    out = cutout(x, torch.Generator().manual_seed(0))
    zeroed = (out == 0).all(1).flatten(1).sum(1)
    assert zeroed.max() == 64 and zeroed.min() > 0  # an 8 x 8 square, clipped at the edges
    assert torch.equal(out == 0, (out == 0).all(1, keepdim=True).expand_as(out))  # all channels together


def test_color_changes_images_and_keeps_them_distinct_per_image():
    x = torch.rand(8, 3, 8, 8) * 2 - 1
    out = color(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.allclose(out, x)
    assert len({round(v, 4) for v in (out - x).mean((1, 2, 3)).tolist()}) == 8


def test_every_transform_is_differentiable_and_seeded():
    for name in TRANSFORMS:
        x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
        a = diff_augment(x, [name], torch.Generator().manual_seed(1))
        a.square().sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0, name
        assert torch.equal(a, diff_augment(x, [name], torch.Generator().manual_seed(1))), name


def test_policy_names_are_checked():
    assert parse_policy("color, translation,cutout") == ["color", "translation", "cutout"]
    assert parse_policy("") == []
    with pytest.raises(TagfaceError, match="unknown transform 'colour'; allowed: color, translation, cutout"):
        parse_policy("colour")


def test_augmented_d_sees_transformed_images():
    seen = []
    d = DiffAugmented(lambda x, labels=None: seen.append(x) or x.sum(), ["cutout"], torch.Generator().manual_seed(0))
    d(torch.ones(2, 3, 8, 8))
    assert (seen[0] == 0).any()


def test_trainer_with_diffaugment_trains_and_resumes_exactly(tmp_path):
    recipe = tiny_recipe("seed-acgan-dcgan", "train.diffaugment=color,translation,cutout",
                         "train.sample_every=1000", "train.checkpoint_every=1000")
    straight = Trainer(recipe, random_faces(), tmp_path / "a", progress=False)
    straight.fit(2)
    expected = [straight.train_step() for _ in range(2)]
    resumed = Trainer(recipe, random_faces(), tmp_path / "a", progress=False)
    resumed.resume()
    assert [resumed.train_step() for _ in range(2)] == expected
    plain = Trainer(tiny_recipe("seed-acgan-dcgan"), random_faces(), tmp_path / "b", progress=False)
    plain.fit(2)
    assert plain.train_step() != expected[0]  # the augmentation changes what D sees
    with pytest.raises(TagfaceError, match="train.diffaugment"):
        Trainer(tiny_recipe("seed-acgan-dcgan", "train.diffaugment=zoom"), random_faces(), tmp_path / "c")


def test_ada_applies_each_transform_to_about_p_of_the_images():
    x = torch.ones(400, 3, 8, 8)
    rng = torch.Generator().manual_seed(0)
    assert torch.equal(diff_augment(x, ["cutout"], rng, p=0.0), x)
    cut = (diff_augment(x, ["cutout"], rng, p=0.25) == 0).flatten(1).any(1).float().mean().item()
    assert 0.18 < cut < 0.32
    assert (diff_augment(x, ["cutout"], rng, p=1.0) == 0).flatten(1).any(1).all()
    d = DiffAugmented(lambda x, labels=None: x, ["cutout"], torch.Generator().manual_seed(0), p=0.5)
    assert 0.4 < (d(x) == 0).flatten(1).any(1).float().mean().item() < 0.6


def test_ada_controller_follows_ds_overfitting_towards_the_target():
    # 64 images per step, 4 steps between adjustments, 100 kimg from 0 to 1: each adjustment moves p by 0.00256
    assert ada_adjust(0.0, 0.9, 0.6, 256, 100) == pytest.approx(0.00256)
    assert ada_adjust(0.5, 0.2, 0.6, 256, 100) == pytest.approx(0.5 - 0.00256)
    assert ada_adjust(0.5, 0.6, 0.6, 256, 100) == 0.5
    assert ada_adjust(0.0, -1.0, 0.6, 256, 100) == 0.0 and ada_adjust(1.0, 1.0, 0.6, 256, 100) == 1.0
    p = 0.0
    for _ in range(391):  # 391 x 256 images is just past 100 kimg: an always-overfitting D takes p to 1
        p = ada_adjust(p, 1.0, 0.6, 256, 100)
    assert p == 1.0


def test_trainer_with_ada_adapts_p_and_resumes_it_exactly(tmp_path):
    recipe = tiny_recipe("seed-acgan-dcgan", "train.diffaugment=color,translation,cutout", "train.ada_target=0.1",
                         "train.ada_kimg=0.05", "train.ada_interval=2", "train.sample_every=1000",
                         "train.checkpoint_every=1000")
    straight = Trainer(recipe, random_faces(), tmp_path / "a", progress=False)
    with torch.no_grad():
        straight.D.head.adv.bias.fill_(1e3)  # a D sure that every face is real: p must rise
    logs = [straight.train_step() for _ in range(6)]
    assert logs[0]["ada_overfit"] == 1.0 and logs[0]["ada_p"] > 0
    # every second step (0, 2, 4) D's mean sign on real faces moves p by 2 batches / 50 images, up or down
    p = 0.0
    for i, log in enumerate(logs):
        assert ("ada_overfit" in log) == (i % 2 == 0)
        if i % 2 == 0:
            p = ada_adjust(p, log["ada_overfit"], 0.1, 2 * recipe.train.batch_size, 0.05)
        assert log["ada_p"] == p
    assert straight.ada_p == p > 0 and straight.D_loss.p == p
    straight.save()
    expected = [straight.train_step() for _ in range(2)]
    resumed = Trainer(recipe, random_faces(), tmp_path / "a", progress=False)
    resumed.resume()
    assert resumed.ada_p == p and resumed.D_loss.p == p
    assert [resumed.train_step() for _ in range(2)] == expected


@pytest.mark.parametrize("settings, message", [
    (["train.ada_target=0.6"], "name them too"),
    (["train.diffaugment=color", "train.ada_target=1.5"], r"must lie in \(0, 1\)"),
    (["train.diffaugment=color", "train.ada_target=-0.5"], r"must lie in \(0, 1\)"),
    (["train.diffaugment=color", "train.ada_target=0.6", "train.ada_kimg=0"], "ada_kimg 0.0 above 0"),
])
def test_ada_settings_are_checked_when_the_recipe_is_built(settings, message, tmp_path):
    with pytest.raises(TagfaceError, match=message):
        tiny_recipe("seed-acgan-dcgan", *settings)  # before any data is read or any Trainer is built
    recipe = tiny_recipe("seed-acgan-dcgan")
    for item in settings:  # the same values set in place, past the recipe's own check: the Trainer refuses them
        section, rest = item.split(".", 1)
        key, value = rest.split("=")
        setattr(getattr(recipe, section), key, type(getattr(getattr(recipe, section), key))(value))
    with pytest.raises(TagfaceError, match=message):
        Trainer(recipe, random_faces(), tmp_path / "run", progress=False)
