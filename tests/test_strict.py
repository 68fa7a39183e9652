"""Strict tags: exactly the faces a tagger misreads are drawn again, each from a seed that draws it again, the closest
draw is kept when none is read right, colours the model never saw are not checked; and the command line's guards."""
import numpy as np
import torch

from tagface.cli import main
from tagface.strict import RedrawMisread, redraw_seed, redraw_until_read
from tagface.tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, N_TAGS, TagFrequencies, Tags

from test_guidance import _generator, _generator_and_tagger_files


def brightness_reader(threshold: float):
    """Reads bright faces as orange hair, dark ones as white hair, and every face as black eyes."""
    def read(images: np.ndarray) -> np.ndarray:
        bright = np.asarray(images, np.float64).mean((1, 2, 3)) > threshold
        logits = np.zeros((len(images), N_TAGS))
        logits[:, HAIR_COLOURS.index("orange")], logits[:, HAIR_COLOURS.index("white")] = bright, ~bright
        logits[:, N_HAIR + EYE_COLOURS.index("black")] = 1.0
        return logits
    return read


def test_redraw_replaces_exactly_the_misread_faces_with_ones_read_right():
    gen, tags = _generator(), Tags("orange", "black")
    plain = gen.generate(tags, 32, seed=0).numpy()
    read = brightness_reader(float(np.median(plain.astype(np.float64).mean((1, 2, 3)))))  # about half read orange
    first_right = read(plain).argmax(1) == 0
    assert 0 < int(first_right.sum()) < 32
    strict = RedrawMisread(gen, read, tries=8)
    faces = strict.generate(tags, 32, seed=0)
    assert np.array_equal(faces[first_right], plain[first_right])        # read right at once: the plain faces, kept
    assert not np.array_equal(faces[~first_right], plain[~first_right])  # the others drawn again
    assert (read(faces).argmax(1) == 0).all() and strict.still_misread == 0
    assert strict.misread == int((~first_right).sum())
    # each face is row i of the noise of the seed `seeds` names: the studio can hand it back as a face reference
    for i, s in enumerate(strict.seeds):
        assert np.array_equal(gen.generate(tags, 32, seed=s)[i].numpy(), faces[i])
    assert set(strict.seeds) - {0} <= {redraw_seed(0, d) for d in range(1, 8)}
    assert np.array_equal(strict.generate(tags, 32, seed=0), faces)     # the same seed, the same faces


def test_redraw_until_read_checks_each_face_against_its_own_tags():
    # draws of flat grey faces: bright ones read as orange hair, dark ones as white (brightness_reader)
    levels = np.array([[200, 50, 200, 50],    # draw 0
                       [50, 200, 200, 200],   # draw 1
                       [200, 200, 50, 50]])   # draw 2

    asked = []

    def draw(k, rows):  # torch draws, as sampling.FaceGenerator gives them
        asked.append(rows.tolist())
        return torch.from_numpy(np.broadcast_to(levels[k][rows].reshape(-1, 1, 1, 1), (len(rows), 3, 8, 8)).astype(np.uint8))
    orange, white = HAIR_COLOURS.index("orange"), HAIR_COLOURS.index("white")
    checked = (np.array([True, True, True, False]), np.zeros(4, bool))  # face 3: hair not checked
    faces, kept, misread, still = redraw_until_read(draw, brightness_reader(128), [orange, orange, white, orange],
                                                    [0, 0, 0, 0], checked, tries=3)
    assert kept.tolist() == [0, 1, 2, 0]          # each face's first draw read as its own tags
    assert misread.tolist() == [False, True, True, False] and not still.any()
    assert faces[:, 0, 0, 0].tolist() == [200, 200, 50, 50]
    assert asked == [[0, 1, 2, 3], [1, 2], [2]]   # after the first draw, only the faces not yet read right


def test_redraw_keeps_the_closest_draw_when_no_draw_is_read_right():
    gen, tags = _generator(), Tags("white", "black")
    strict = RedrawMisread(gen, brightness_reader(-1.0), tries=3)  # every face is bright: read orange, never white
    faces = strict.generate(tags, 4, seed=5)
    assert strict.misread == 4 and strict.still_misread == 4
    draws = [gen.generate(tags, 4, seed=redraw_seed(5, d)).numpy() for d in range(3)]
    for i in range(4):
        assert any(np.array_equal(faces[i], d[i]) for d in draws)


def test_redraw_does_not_check_a_colour_the_model_never_saw():
    gen = _generator()
    gen.freq = TagFrequencies([0.0] + [1 / 11] * 11, [0.0] + [0.1] * 10)  # no orange hair, no gray eyes in training
    strict = RedrawMisread(gen, brightness_reader(-1.0), tries=4)  # reads every face as orange hair, black eyes
    faces = strict.generate(Tags("orange", "gray"), 3, seed=1)  # neither colour checkable: one draw, no redraw
    assert np.array_equal(faces, gen.generate(Tags("orange", "gray"), 3, seed=1).numpy()) and strict.misread == 0
    strict.generate(Tags("white", "gray"), 3, seed=1)  # the hair is checked (and always misread), the eyes are not
    assert strict.misread == 3 and strict.still_misread == 3
    assert strict.unchecked == {"orange hair", "gray eyes"} and "not checked: gray eyes, orange hair" in strict.summary()


def test_generate_strict_tags_on_the_command_line(tmp_path, capsys):
    _, source, tagger = _generator_and_tagger_files(tmp_path)
    out = tmp_path / "faces.png"
    assert main(["generate", "blue hair red eyes", "-n", "3", "--checkpoint", str(source), "--strict-tags", "2",
                 "--tagger", str(tagger), "--out", str(out)]) == 0
    assert out.exists() and "--strict-tags: the tagger misread" in capsys.readouterr().err
    assert main(["generate", "--tag-grid", "--checkpoint", str(source), "--strict-tags", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tagface: error: --strict-tags") and "\n" not in err.strip()
