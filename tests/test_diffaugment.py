"""DiffAugment: each transform does what the paper's does, stays differentiable and seeded; the trainer uses it
for real and fake alike and still resumes exactly."""
import pytest
import torch

from tagface.diffaugment import DiffAugmented, TRANSFORMS, color, cutout, diff_augment, parse_policy, translation
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
