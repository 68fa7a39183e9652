"""Tag guidance: the folded generator draws what the shifted noise drew, and the measured shifts make the tags
more legible to the tagger that measured them; `tagface export --tag-guidance` writes and guards such files."""
import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tagface.checkpoint import read_metadata
from tagface.cli import main
from tagface.errors import TagfaceError
from tagface.guidance import fold_tag_shifts, tag_shifts
from tagface.losses import Labels
from tagface.models import build_generator
from tagface.sampling import FaceGenerator, save_generator, standing_batchnorm
from tagface.tagger import TaggerNet, load_tagger, save_tagger
from tagface.tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, N_TAGS, TagFrequencies

from test_models_losses import tiny_recipe


def _generator(name: str = "seed-acgan-dcgan", *extra: str) -> FaceGenerator:
    recipe = tiny_recipe(name, *extra)
    torch.manual_seed(0)
    G = build_generator(recipe.model, recipe.train.resolution).eval().requires_grad_(False)
    return FaceGenerator(G, recipe, TagFrequencies.uniform(), 0, None)


def _labels(n: int, seed: int) -> Labels:
    g = torch.Generator().manual_seed(seed)
    return Labels(torch.randint(0, len(HAIR_COLOURS), (n,), generator=g),
                  torch.randint(0, len(EYE_COLOURS), (n,), generator=g))


@pytest.mark.parametrize("name", ["seed-acgan-dcgan", "seed-srresnet-dragan"])
def test_folded_generator_draws_what_the_shifted_noise_drew(name):
    gen = _generator(name)
    before = FaceGenerator(copy.deepcopy(gen.G), gen.recipe, gen.freq, 0, None)
    shifts = torch.randn(N_TAGS, gen.z_dim, generator=torch.Generator().manual_seed(1))
    fold_tag_shifts(gen.G, shifts, 0.7)
    z, labels = torch.randn(6, gen.z_dim), _labels(6, 2)
    want = before.G(z + 0.7 * labels.onehot @ shifts, labels.onehot)
    error = (gen.G(z, labels.onehot) - want).abs().max()
    change = (before.G(z, labels.onehot) - want).abs().max()  # untrained weights draw small values: compare to this
    assert change > 0 and error < 1e-4 * change


class BrightnessTagger(nn.Module):
    """Reads bright faces as orange hair, dark ones as white hair, and every face as black eyes."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        bright = images.float().mean((1, 2, 3)) > self.threshold
        logits = torch.zeros(images.shape[0], N_TAGS)
        logits[:, 0] = bright.float()                       # orange
        logits[:, 1] = (~bright).float()                    # white
        logits[:, N_HAIR + EYE_COLOURS.index("black")] = 1.0
        return logits


def test_measured_shifts_make_tags_more_legible_to_their_tagger():
    gen = _generator()
    z = torch.randn(400, gen.z_dim, generator=torch.Generator().manual_seed(3))
    orange = Labels(torch.zeros(400, dtype=torch.long), torch.ones(400, dtype=torch.long))
    white = Labels(torch.ones(400, dtype=torch.long), torch.ones(400, dtype=torch.long))
    threshold = float(gen.draw(z, orange).float().mean((1, 2, 3)).median())
    tagger = BrightnessTagger(threshold)
    shifts = tag_shifts(gen, tagger, per_pair=20, seed=4, min_read=5)
    assert shifts[0].norm() > 0 and shifts[1].norm() > 0
    # tags the tagger never reads right get no shift: other hair colours, every eye colour but black
    never = [c for c in range(N_TAGS) if c not in (0, 1, N_HAIR + EYE_COLOURS.index("black"))]
    assert shifts[never].abs().max() == 0

    def read_right(g: FaceGenerator, labels: Labels) -> float:
        return float((tagger(g.draw(z, labels)).argmax(1) == labels.hair).float().mean())

    orange0, white0 = read_right(gen, orange), read_right(gen, white)
    fold_tag_shifts(gen.G, shifts, 1.0)
    assert read_right(gen, orange) > orange0 + 0.05
    assert read_right(gen, white) > white0 + 0.05


def test_fold_rejects_what_it_cannot_fold():
    gen = _generator()
    with pytest.raises(TagfaceError, match="must be >= 0"):
        fold_tag_shifts(gen.G, torch.zeros(N_TAGS, gen.z_dim), float("nan"))
    with pytest.raises(TagfaceError, match="do not fit"):
        fold_tag_shifts(gen.G, torch.zeros(N_TAGS, gen.z_dim + 1), 1.0)
    learned = _generator("seed-acgan-dcgan", "model.embed_dim=8")
    with pytest.raises(TagfaceError, match="one-hot tags"):
        fold_tag_shifts(learned.G, torch.zeros(N_TAGS, learned.z_dim), 1.0)


def _generator_and_tagger_files(tmp_path) -> tuple[FaceGenerator, Path, Path]:
    """A tiny generator and an untrained tagger, saved as files the command line reads."""
    gen = _generator()
    source, tagger = tmp_path / "g.safetensors", tmp_path / "tagger.safetensors"
    save_generator(gen.G, gen.recipe, gen.freq, source)
    save_tagger(TaggerNet(width=4, resolution=32).eval(), tagger)
    return gen, source, tagger


def test_export_writes_a_guided_generator_and_refuses_to_guide_twice(tmp_path, capsys):
    gen, source, tagger = _generator_and_tagger_files(tmp_path)
    out = tmp_path / "guided.safetensors"
    args = ["export", "--format", "safetensors", "--tag-guidance", "0.5", "--guidance-tagger", str(tagger),
            "--guidance-per-pair", "4"]
    assert main(args + ["--checkpoint", str(source), "--out", str(out)]) == 0
    record = json.loads(read_metadata(out)["tagface.tag_guidance"])
    assert record["strength"] == 0.5 and record["per_pair"] == 4
    guided = FaceGenerator.load(out)
    assert guided.G.fc[0].weight[:, :gen.z_dim].equal(gen.G.fc[0].weight[:, :gen.z_dim])  # only tag columns move
    # the file is the fold of the measured shifts, with BatchNorm statistics gathered again afterwards
    source_gen = FaceGenerator.load(source)
    shifts = tag_shifts(source_gen, load_tagger(tagger), per_pair=4)
    batches = gen.recipe.sample.standing_stats or 50
    want = standing_batchnorm(fold_tag_shifts(copy.deepcopy(source_gen.G), shifts, 0.5), gen.freq, gen.z_dim, batches)
    assert record["standing_stats"] == batches
    for k, v in want.state_dict().items():
        assert torch.allclose(guided.G.state_dict()[k].float(), v.float(), atol=1e-6), k
    capsys.readouterr()
    before = out.read_bytes()
    assert main(args + ["--checkpoint", str(out), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already guided" in err and "\n" not in err.strip() and out.read_bytes() == before
    # an unguided re-export keeps the record: the file still is guided
    again = tmp_path / "again.safetensors"
    assert main(["export", "--format", "safetensors", "--checkpoint", str(out), "--out", str(again)]) == 0
    assert read_metadata(again)["tagface.tag_guidance"] == read_metadata(out)["tagface.tag_guidance"]
    capsys.readouterr()
    assert main(args[:5] + ["--guidance-tagger", str(tmp_path / "missing.safetensors"), "--checkpoint", str(source),
                             "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tagface: error: --guidance-tagger") and "\n" not in err.strip() and out.read_bytes() == before
    for bad in ("-1", "nan", "inf", "strong"):
        with pytest.raises(SystemExit):
            main(args[:4] + [bad, "--checkpoint", str(source), "--out", str(tmp_path / "x.safetensors")])
        assert "--tag-guidance" in capsys.readouterr().err
