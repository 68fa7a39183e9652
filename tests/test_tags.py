import pytest
import torch

from tagface.errors import TagfaceError
from tagface.tags import (
    EYE_COLOURS, HAIR_COLOURS, N_HAIR, N_TAGS, TagFrequencies, Tags, eye_index, hair_index, one_hot, parse_tags,
)


@pytest.mark.parametrize("text", [
    "blue hair red eyes",
    "Red eyes, blue hair",
    "BLUE HAIR RED EYES",
    "  red eyes ;; blue hair!! ",
    "blue-haired red-eyed",
    "red-eyed, blue-haired girl",
    "hair: blue, eyes: red",
    "eyes: red / hair: blue",
    "a girl with blue hair and red eyes",
])
def test_parse_any_order_case_and_punctuation(text):
    assert parse_tags(text) == Tags("blue", "red")


@pytest.mark.parametrize("text, expected", [
    ("blond hair grey eyes", Tags("blonde", "gray")),
    ("golden hair silver eyes", Tags("blonde", "gray")),
    ("Cyan hair, amber eyes", Tags("aqua", "yellow")),
    ("ginger hair violet eyes", Tags("orange", "purple")),
])
def test_synonyms_map_onto_the_vocabulary(text, expected):
    assert parse_tags(text) == expected


def test_repeated_same_colour_is_not_several():
    assert parse_tags("blond hair, blonde hair, red eyes") == Tags("blonde", "red")


def test_missing_colour_is_none():
    assert parse_tags("pink hair") == Tags("pink", None)
    assert parse_tags("green eyes") == Tags(None, "green")
    assert parse_tags("") == Tags(None, None)
    assert str(Tags("pink", None)) == "pink hair ? eyes"


def test_allow_missing_false_requires_both():
    with pytest.raises(TagfaceError, match="both"):
        parse_tags("pink hair", allow_missing=False)
    assert parse_tags("pink hair green eyes", allow_missing=False) == Tags("pink", "green")


def test_complete_fills_missing_from_frequencies_deterministically():
    hair = torch.tensor([HAIR_COLOURS.index("purple")] * 5)
    eyes = torch.tensor([EYE_COLOURS.index("yellow")] * 3 + [EYE_COLOURS.index("green")])
    freq = TagFrequencies.from_labels(hair, eyes)
    assert freq.hair[HAIR_COLOURS.index("purple")] == pytest.approx(1.0)
    assert freq.eyes[EYE_COLOURS.index("yellow")] == pytest.approx(0.75)

    # all training hair is purple, so a missing hair colour can only become purple
    tags, notes = freq.complete(Tags(None, "green"), 0)
    assert tags == Tags("purple", "green")
    assert len(notes) == 1 and "hair" in notes[0] and "purple" in notes[0]

    # given colours are left alone; a note only says when training never had one
    tags, notes = freq.complete(Tags("purple", "green"), 0)
    assert tags == Tags("purple", "green") and notes == []
    tags, notes = freq.complete(Tags("blue", "green"), 0)
    assert tags == Tags("blue", "green") and len(notes) == 1 and "'blue hair' never occurs" in notes[0]
    tags, notes = freq.complete(Tags("purple", "gray"), 0)
    assert tags == Tags("purple", "gray") and len(notes) == 1 and "'gray eyes' never occur" in notes[0]

    # a sampled eye colour is one seen in training, and the same seed gives the same answer
    runs = [freq.complete(Tags(None, None), s) for s in (3, 3, 4)]
    assert runs[0] == runs[1]
    for tags, notes in runs:
        assert tags.hair == "purple" and tags.eyes in ("yellow", "green")
        assert len(notes) == 2


def test_complete_follows_frequencies_roughly():
    eyes = [0.0] * len(EYE_COLOURS)
    eyes[EYE_COLOURS.index("blue")], eyes[EYE_COLOURS.index("red")] = 0.8, 0.2
    freq = TagFrequencies(TagFrequencies.uniform().hair, eyes)
    draws = [freq.complete(Tags("red", None), seed)[0].eyes for seed in range(400)]
    assert set(draws) == {"blue", "red"}
    assert 0.7 < draws.count("blue") / len(draws) < 0.9


def test_toward_uniform_mixes_the_data_frequencies_with_even_ones():
    eyes = [0.0] * len(EYE_COLOURS)
    eyes[EYE_COLOURS.index("blue")] = 1.0
    hair = [0.0] * len(HAIR_COLOURS)
    hair[HAIR_COLOURS.index("black")] = 1.0
    data, even = TagFrequencies(hair, eyes), TagFrequencies.uniform()
    assert data.toward_uniform(0) == data and data.toward_uniform(1) == even
    half = data.toward_uniform(0.5)
    assert half.eyes[EYE_COLOURS.index("blue")] == pytest.approx(0.5 + 0.5 / len(EYE_COLOURS))
    assert half.hair[HAIR_COLOURS.index("red")] == pytest.approx(0.5 / len(HAIR_COLOURS))
    assert sum(half.hair) == pytest.approx(1) and sum(half.eyes) == pytest.approx(1)


def test_unknown_colour_error_is_one_line_with_hint_and_allowed_list():
    with pytest.raises(TagfaceError) as info:
        parse_tags("bleu hair red eyes")
    msg = str(info.value)
    assert "\n" not in msg
    assert "'bleu'" in msg
    assert "did you mean 'blue'" in msg
    for colour in HAIR_COLOURS:
        assert colour in msg


def test_unknown_eye_colour_lists_eye_colours():
    with pytest.raises(TagfaceError) as info:
        parse_tags("blue hair purpel eyes")
    msg = str(info.value)
    assert "\n" not in msg and "'purple'" in msg
    assert "yellow" in msg  # an eye-only colour: the list shown is the eye list


def test_several_hair_colours_is_an_error():
    with pytest.raises(TagfaceError, match="several hair colours"):
        parse_tags("blue hair red hair green eyes")
    with pytest.raises(TagfaceError, match="several eye"):
        parse_tags("blue hair red eyes green eyes")


@pytest.mark.parametrize("text", ["yellow hair", "amber hair blue eyes"])
def test_eye_only_colour_for_hair_is_an_error(text):
    assert "yellow" not in HAIR_COLOURS and "yellow" in EYE_COLOURS
    with pytest.raises(TagfaceError, match="hair colour"):
        parse_tags(text)
    assert parse_tags("yellow eyes") == Tags(None, "yellow")


@pytest.mark.parametrize("text", ["blue", "blue hair red", "hair", "girl", "blue red hair", "bl.ue hair"])
def test_unreadable_phrases_are_errors(text):
    with pytest.raises(TagfaceError):
        parse_tags(text)


def test_index_helpers_accept_synonyms_and_reject_unknown():
    assert hair_index("Blond") == HAIR_COLOURS.index("blonde")
    assert eye_index("grey") == EYE_COLOURS.index("gray")
    with pytest.raises(TagfaceError):
        hair_index("yellow")


def test_one_hot_shape_and_positions():
    hair = torch.tensor([0, 5, N_HAIR - 1])
    eyes = torch.tensor([3, 0, len(EYE_COLOURS) - 1])
    out = one_hot(hair, eyes)
    assert out.shape == (3, N_TAGS) and N_TAGS == 23
    assert out.dtype == torch.float32
    assert out.sum(1).tolist() == [2.0, 2.0, 2.0]
    for row, (h, e) in enumerate(zip(hair.tolist(), eyes.tolist())):
        assert out[row, h] == 1.0
        assert out[row, N_HAIR + e] == 1.0
        assert out[row, :N_HAIR].sum() == 1.0 and out[row, N_HAIR:].sum() == 1.0
    assert one_hot(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)).shape == (0, N_TAGS)


def test_an_error_quotes_a_long_input_cut_short():
    text = "blue hair " + "z" * 5000 + " eyes"
    with pytest.raises(TagfaceError) as err:
        parse_tags(text)
    message = str(err.value)
    assert len(message) < 400 and "(5000 characters)" in message and "allowed eye colours" in message
    with pytest.raises(TagfaceError, match=r"unknown hair colour 'bleu'; did you mean 'blue'\?"):
        parse_tags("bleu hair")  # short inputs are quoted whole, as before
