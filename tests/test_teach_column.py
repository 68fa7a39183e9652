"""benchmarks/teach_column.py (gray eyes after training): only that tag's input column moves, so every other tag
draws the same faces; the column is a blend of the trained ones plus a bounded free part; the teacher reads the
colour more often afterwards. And the tagger's --balance, which made a teacher that reads gray eyes possible."""
import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tagface.checkpoint import atomic_save_tensors
from tagface.cli import main
from tagface.errors import TagfaceError
from tagface.losses import GANObjective, Labels
from tagface.models import build_discriminator
from tagface.sampling import standing_batchnorm
from tagface.tagger import class_weights
from tagface.tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, N_TAGS, TagFrequencies

from test_guidance import _generator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from teach_column import TeachSettings, load_discriminator, parse_one_tag, teach_tag  # noqa: E402

GRAY = EYE_COLOURS.index("gray")
NO_GRAY = TagFrequencies(TagFrequencies.uniform().hair, [0.0] + [0.1] * 10)  # the mlds data: no gray eyes


class BrightGrayTagger(nn.Module):
    """Reads a face as gray-eyed the brighter it is, every hair colour alike: brightness is a colour G can draw."""

    def __init__(self, threshold: float, scale: float):
        super().__init__()
        self.threshold, self.scale = threshold, scale

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], N_TAGS)
        logits[:, N_HAIR + GRAY] = self.scale * (x.mean((1, 2, 3)) - self.threshold)
        return logits


def _coloured_generator():
    """The tiny untrained generator with eye columns strong enough for eye colours to draw visibly different
    faces (untrained, z outvotes them), and standing statistics so that eval mode draws varied faces."""
    gen = _generator()
    with torch.no_grad():
        gen.G.fc[0].weight[:, gen.z_dim + N_HAIR:] *= 30
    gen.G = standing_batchnorm(gen.G, TagFrequencies.uniform(), gen.z_dim, 5).eval().requires_grad_(False)
    return gen


def _brightness(gen, eyes: int) -> torch.Tensor:
    z = torch.randn(256, gen.z_dim, generator=torch.Generator().manual_seed(7))
    labels = Labels(torch.randint(0, N_HAIR, (256,), generator=torch.Generator().manual_seed(8)),
                    torch.full((256,), eyes))
    with torch.no_grad():
        return gen.G(z, labels.onehot).mean((1, 2, 3))


def _teacher(gen) -> tuple[BrightGrayTagger, str]:
    """A teacher that reads the faces of the brightest known eye colour as gray-eyed, and the colour."""
    means = [_brightness(gen, c).mean().item() for c in range(1, len(EYE_COLOURS))]
    brightest = 1 + max(range(len(means)), key=means.__getitem__)
    gray = _brightness(gen, GRAY)
    threshold = (gray.mean().item() + means[brightest - 1]) / 2
    return BrightGrayTagger(threshold, 4 / gray.std().item()), EYE_COLOURS[brightest]


def _discriminator(recipe) -> nn.Module:
    objective = GANObjective(recipe.loss)
    torch.manual_seed(1)
    D = build_discriminator(recipe.model, recipe.train.resolution, objective.conditioning.reads_labels,
                            objective.conditioning.heads)
    D.reads_labels, D.adv_gen = objective.conditioning.reads_labels, objective.adv.gen
    return D.eval().requires_grad_(False)


def test_teaching_moves_one_column_and_every_other_tag_draws_the_same_faces():
    gen = _coloured_generator()
    before = copy.deepcopy(gen.G)
    teacher, brightest = _teacher(gen)
    report = teach_tag(gen.G, "grey eyes", teacher, _discriminator(gen.recipe), NO_GRAY,
                       TeachSettings(steps=60, batch_size=16))
    assert report["tag"] == "gray eyes"
    assert report["read_after"]["taught"] > report["read_before"]["taught"] + 0.3
    assert max(report["blend"], key=report["blend"].get) == brightest  # the colour the teacher reads as gray
    col = gen.z_dim + N_HAIR + GRAY
    for name, value in gen.G.state_dict().items():
        if name == "fc.0.weight":
            keep = torch.ones(value.shape[1], dtype=torch.bool)
            keep[col] = False
            assert value[:, keep].equal(before.state_dict()[name][:, keep])
            assert not value[:, col].equal(before.state_dict()[name][:, col])
        else:
            assert value.equal(before.state_dict()[name]), name
    z = torch.randn(40, gen.z_dim, generator=torch.Generator().manual_seed(3))
    hair, eyes = torch.randint(0, N_HAIR, (40,)), torch.randint(1, len(EYE_COLOURS), (40,))  # no gray eyes
    with torch.no_grad():
        assert gen.G(z, Labels(hair, eyes).onehot).equal(before(z, Labels(hair, eyes).onehot))
        gray = Labels(hair, torch.full((40,), GRAY))
        assert not gen.G(z, gray.onehot).equal(before(z, gray.onehot))


def test_the_column_is_a_blend_of_trained_columns_plus_a_bounded_free_part():
    gen = _coloured_generator()
    eyes = gen.G.fc[0].weight[:, gen.z_dim + N_HAIR:gen.z_dim + N_TAGS].clone()
    largest = eyes[:, 1:].norm(dim=0).max().item()
    report = teach_tag(gen.G, "gray eyes", _teacher(gen)[0], None, NO_GRAY, TeachSettings(steps=15, batch_size=8))
    blend = torch.tensor([report["blend"].get(c, 0.0) for c in EYE_COLOURS[1:]])
    assert report["free_norm"] == 0 and abs(blend.sum().item() - 1) < 0.02 and "gray" not in report["blend"]
    column = gen.G.fc[0].weight[:, gen.z_dim + N_HAIR + GRAY]
    assert torch.allclose(column, eyes[:, 1:] @ blend, atol=0.02 * largest)
    gen = _coloured_generator()
    report = teach_tag(gen.G, "gray eyes", _teacher(gen)[0], None, NO_GRAY,
                       TeachSettings(steps=15, batch_size=8, lr=5.0, free=0.1))
    assert 0 < report["free_norm"] <= 0.1 * largest * (1 + 1e-5)
    assert gen.G.fc[0].weight[:, gen.z_dim + N_HAIR + GRAY].norm().item() <= 1.1 * largest * (1 + 1e-5)


class ColourFeatures(nn.Module):
    """Features: each channel's mean, scaled up; logits: constant, so only the matching term can move the column."""

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return 1000 * x.float().mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], N_TAGS) + 0 * x.sum()


def test_matching_pulls_the_faces_towards_the_real_faces_features():
    """Real 'gray-eyed' faces here are faces G draws for blue eyes; with constant logits only matching moves the
    column (the batches' own spread keeps it from closing the gap on these 3 features entirely)."""
    gen = _coloured_generator()
    tagger = ColourFeatures()
    z = torch.randn(128, gen.z_dim, generator=torch.Generator().manual_seed(4))
    hair = torch.randint(0, N_HAIR, (128,), generator=torch.Generator().manual_seed(5))
    blue = EYE_COLOURS.index("blue")
    with torch.no_grad():
        real = gen.G(z, Labels(hair, torch.full((128,), blue)).onehot)

    def gap() -> float:
        with torch.no_grad():
            gray = gen.G(z, Labels(hair, torch.full((128,), GRAY)).onehot)
            return (tagger.features(gray).mean(0) - tagger.features(real).mean(0)).norm().item()

    report = teach_tag(gen.G, "gray eyes", tagger, None, NO_GRAY, TeachSettings(steps=60, batch_size=16), real=real)
    assert report["blend"] == {c: round(f, 3) for c, f in zip(EYE_COLOURS[1:], NO_GRAY.eyes[1:])}  # nothing pulled
    unpulled = gap()
    gen.G = _coloured_generator().G
    teach_tag(gen.G, "gray eyes", tagger, None, NO_GRAY, TeachSettings(steps=60, batch_size=16, matching=1.0),
              real=real)
    assert gap() < 0.8 * unpulled


def test_a_colour_the_data_has_is_not_taught():
    gen = _coloured_generator()
    with pytest.raises(TagfaceError, match="training data has it"):
        teach_tag(gen.G, "blue eyes", _teacher(gen)[0], None, NO_GRAY, TeachSettings(steps=1))


@pytest.mark.parametrize("text, message", [
    ("blue hair red eyes", "one colour of one kind"), ("", "one colour of one kind"),
    ("blue", "not followed by 'hair' or 'eyes'")])
def test_teach_takes_exactly_one_tag(text, message):
    with pytest.raises(TagfaceError, match=f"^teach '{text}': .*{message}"):
        parse_one_tag(text)
    assert parse_one_tag("White hair") == ("hair", HAIR_COLOURS.index("white"))


def test_a_learned_embedding_cannot_be_taught_a_column():
    gen = _generator("seed-acgan-dcgan", "model.embed_dim=8")
    with pytest.raises(TagfaceError, match="one-hot tags"):
        teach_tag(gen.G, "gray eyes", _teacher(_generator())[0], None, NO_GRAY, TeachSettings(steps=1))


def test_a_discriminator_file_is_checked_against_the_recipe(tmp_path):
    gen = _generator()
    path = tmp_path / "d.safetensors"
    atomic_save_tensors(_discriminator(gen.recipe).state_dict(), path, {"tagface.kind": "discriminator"})
    assert load_discriminator(path, gen.recipe).reads_labels == GANObjective(gen.recipe.loss).conditioning.reads_labels
    other = _generator("seed-acgan-dcgan", "model.d_channels=12").recipe
    with pytest.raises(TagfaceError, match="does not fit"):
        load_discriminator(path, other)


def test_balanced_class_weights_favour_rare_colours():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2])
    assert class_weights(labels, 3, 0.0) is None
    w = class_weights(labels, 3, 0.5)
    assert w[2] > w[1] > w[0]
    assert torch.isclose(w[labels].mean(), torch.tensor(1.0))
    assert torch.isclose(w[2] / w[0], torch.tensor(90 ** 0.5))
    full = class_weights(labels, 3, 1.0)
    assert torch.isclose(full[2] / full[0], torch.tensor(90.0))


def test_tagger_balance_outside_0_to_1_is_refused(tmp_path, capsys):
    for bad in ("-0.5", "1.5", "nan"):
        with pytest.raises(SystemExit):
            main(["tagger", "train", "--data", str(tmp_path), "--out", str(tmp_path / "t.safetensors"),
                  "--balance", bad])
        assert "--balance" in capsys.readouterr().err
