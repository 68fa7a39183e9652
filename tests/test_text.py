"""Text encoders: one-hot, learned projection and word vectors (report 001), with GloVe-format files."""
import pytest
import torch

from tagface.cli import main
from tagface.config import ModelConfig
from tagface.errors import TagfaceError
from tagface.models import build_generator
from tagface.sampling import FaceGenerator
from tagface.tags import N_TAGS, one_hot
from tagface.text import WORDS, WordVectors, build_text_encoder, load_word_vectors, read_word_vectors
from tagface.training import Trainer

from test_models_losses import random_faces, tiny_recipe


def write_vectors(path, dim=4, header=False, skip=(), spell=None):
    """A GloVe-style file: every vocabulary word (optionally misspelt as `spell`), plus unrelated words."""
    spell = spell or {}
    lines = [f"{len(WORDS) + 1} {dim}"] if header else []
    lines.append("the " + " ".join(["0.5"] * dim))
    for i, w in enumerate(WORDS):
        if w not in skip:
            lines.append(" ".join([spell.get(w, w)] + [str(i + k / 10) for k in range(dim)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_auto_encoder_keeps_the_seed_recipes_behaviour():
    assert build_text_encoder(ModelConfig(embed_dim=0)).dim == N_TAGS
    learned = build_text_encoder(ModelConfig(embed_dim=16))
    assert learned.dim == 16 and [k for k, _ in learned.named_parameters()] == ["proj.0.weight", "proj.0.bias"]
    with pytest.raises(TagfaceError, match="allowed: auto onehot learned words"):
        build_text_encoder(ModelConfig(text_encoder="glove"))


def test_word_encoder_is_the_mean_of_each_phrase_words():
    enc = WordVectors(ModelConfig(text_encoder="words", word_dim=3, embed_dim=0))
    labels = one_hot(torch.tensor([8]), torch.tensor([9]))  # blue hair, red eyes
    out = enc(labels)
    v = lambda w: enc.vectors.weight[WORDS.index(w)]  # noqa: E731
    assert out.shape == (1, 6)
    torch.testing.assert_close(out[0, :3], (v("blue") + v("hair")) / 2)
    torch.testing.assert_close(out[0, 3:], (v("red") + v("eyes")) / 2)
    # blended tags (a label-input penalty's interpolates) get gradients
    blend = (0.5 * labels + 0.5 * one_hot(torch.tensor([0]), torch.tensor([0]))).requires_grad_(True)
    enc(blend).sum().backward()
    assert blend.grad.abs().sum() > 0


def test_read_word_vectors_formats_and_spellings(tmp_path):
    table = read_word_vectors(write_vectors(tmp_path / "v.txt", header=True, spell={"gray": "grey", "blonde": "blond"}))
    assert table.shape == (len(WORDS), 4)
    assert table[WORDS.index("gray"), 0] == WORDS.index("gray")
    with pytest.raises(TagfaceError, match="no vectors for aqua"):
        read_word_vectors(write_vectors(tmp_path / "w.txt", skip=("aqua",)))
    bad = tmp_path / "bad.txt"
    bad.write_text("blue 1 2 3\nred 1 2\n")
    with pytest.raises(TagfaceError, match="line 2 has 2 values"):
        read_word_vectors(bad)
    with pytest.raises(TagfaceError, match="no such file"):
        read_word_vectors(tmp_path / "missing.txt")


def test_word_vectors_fill_g_and_d_and_stay_frozen(tmp_path):
    vectors = write_vectors(tmp_path / "v.txt", dim=4)
    recipe = tiny_recipe("seed-dcgan-cls", "model.text_encoder=words", "model.word_dim=4",
                         f"model.word_vectors={vectors}")
    trainer = Trainer(recipe, random_faces(), tmp_path / "run", progress=False)
    table = read_word_vectors(vectors)
    encoders = [m for net in (trainer.G, trainer.D, trainer.G_ema) for m in net.modules() if isinstance(m, WordVectors)]
    assert len(encoders) == 3  # G, the matching-aware D, and the EMA copy
    for enc in encoders:
        torch.testing.assert_close(enc.vectors.weight, table)
    trainer.fit(2)
    torch.testing.assert_close(trainer.G.embed.vectors.weight, table)  # frozen: report 001's pretrained vectors
    vectors.unlink()  # drawing needs the weights only, never the file
    gen = FaceGenerator.load(tmp_path / "run")
    torch.testing.assert_close(gen.G.embed.vectors.weight, table)


def test_trainable_vectors_move(tmp_path):
    vectors = write_vectors(tmp_path / "v.txt", dim=4)
    recipe = tiny_recipe("seed-acgan-dcgan", "model.text_encoder=words", "model.word_dim=4",
                         f"model.word_vectors={vectors}", "model.word_vectors_trainable=true")
    trainer = Trainer(recipe, random_faces(), tmp_path / "run", progress=False)
    trainer.train_step()
    assert not torch.equal(trainer.G.embed.vectors.weight, read_word_vectors(vectors))


def test_load_word_vectors_checks_the_dimension(tmp_path):
    G = build_generator(ModelConfig(text_encoder="words", word_dim=3, g_channels=4), 32)
    with pytest.raises(TagfaceError, match="4-d vectors, but model.word_dim is 3"):
        load_word_vectors(G, write_vectors(tmp_path / "v.txt", dim=4))


def test_cli_word_vectors_sets_encoder_and_dimension(tmp_path, monkeypatch):
    from test_training import _write_tiny_folder, TINY
    monkeypatch.setenv("TAGFACE_CACHE", str(tmp_path / "cache"))
    vectors = write_vectors(tmp_path / "v.txt", dim=6)
    overrides = [a for item in TINY for a in ("--set", item)]
    assert main(["train", "--config", "seed-dcgan-cls", "--data", str(_write_tiny_folder(tmp_path / "data")),
                 "--out", str(tmp_path / "run"), "--steps", "1", "--no-progress", "--word-vectors", str(vectors),
                 *overrides]) == 0
    gen = FaceGenerator.load(tmp_path / "run")
    assert gen.recipe.model.text_encoder == "words" and gen.recipe.model.word_dim == 6
    assert main(["train", "--config", "seed-dcgan-cls", "--data", str(tmp_path / "data"), "--out",
                 str(tmp_path / "run2"), "--word-vectors", str(tmp_path / "nope.txt")]) == 2
