"""The weights that ship inside the package: present, within their size budgets, and working together."""
import numpy as np
import torch

from tagface.checkpoint import default_model_path, default_tagger_path, read_metadata
from tagface.export import discriminator_path
from tagface.numpy_generator import NumpyGenerator, load_generator
from tagface.sampling import FaceGenerator
from tagface.tagger import accuracy, load_tagger, predict_logits
from tagface.tags import EYE_COLOURS, HAIR_COLOURS, parse_tags


def test_shipped_files_fit_their_budgets():
    assert default_model_path().stat().st_size <= 16 * 2**20
    assert default_tagger_path().stat().st_size <= 8 * 2**20
    assert discriminator_path(default_model_path()).stat().st_size <= 16 * 2**20


def test_shipped_discriminator_belongs_to_the_shipped_generator():
    """--init default fine-tunes with it only when it holds D at the generator's own step."""
    d_meta = read_metadata(discriminator_path(default_model_path()))
    assert d_meta["tagface.kind"] == "discriminator"
    assert d_meta["tagface.step"] == str(FaceGenerator.load().step)


def test_default_generator_loads_without_a_checkpoint_and_is_deterministic():
    gen = FaceGenerator.load()
    assert gen.source == default_model_path() and gen.step > 0
    tags, _ = gen.complete(parse_tags("blue hair red eyes"), seed=0)
    a, b = gen.generate(tags, 4, seed=1), gen.generate(tags, 4, seed=1)
    assert a.shape == (4, 3, gen.resolution, gen.resolution) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    assert not torch.equal(a, gen.generate(tags, 4, seed=2))


def test_generate_draws_the_shipped_model_without_torch_and_the_same_faces():
    """`tagface generate` takes the numpy path for the shipped model; the fp16 file must draw as torch draws it."""
    npg, gen = load_generator(), FaceGenerator.load()
    assert isinstance(npg, NumpyGenerator) and npg.step == gen.step
    tags = parse_tags("pink hair aqua eyes")
    diff = np.abs(npg.generate(tags, 16, seed=4).astype(int) - gen.generate(tags, 16, seed=4).numpy().astype(int))
    assert diff.max() <= 1 and diff.mean() < 1e-3


def test_default_model_says_it_never_learnt_gray_eyes():
    """Its data (mlds) has no gray eyes; generate and the studio pass this note on to the user."""
    gen = FaceGenerator.load()
    assert gen.complete(parse_tags("blue hair red eyes"), seed=0)[1] == []
    _, notes = gen.complete(parse_tags("blue hair gray eyes"), seed=0)
    assert len(notes) == 1 and "'gray eyes' never occur" in notes[0]


def test_shipped_tagger_reads_the_shipped_models_clearest_colours():
    """Green hair and purple eyes are the colours the default model draws most reliably (docs/model-card.md);
    if the two shipped files stopped agreeing on them, one of them is broken."""
    gen, net = FaceGenerator.load(), load_tagger()
    tags = parse_tags("green hair purple eyes")
    logits = predict_logits(net, gen.generate(tags, 16, seed=0))
    n = logits.shape[0]
    acc = accuracy(logits, torch.full((n,), HAIR_COLOURS.index("green")), torch.full((n,), EYE_COLOURS.index("purple")))
    assert acc.hair >= 0.5 and acc.eyes >= 0.5
