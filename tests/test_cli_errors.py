"""Bad input to the CLI ends in exit code 2 and one line 'tagface: error: ...' on stderr, never a traceback."""
import warnings

import pytest
import torch

from tagface.cli import main
from tagface.config import Recipe
from tagface.models import build_generator
from tagface.sampling import save_generator
from tagface.tags import TagFrequencies


@pytest.fixture(autouse=True)
def _restore_formatwarning(monkeypatch):
    # main() replaces warnings.formatwarning process-wide; put it back after each test
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)


@pytest.fixture
def tiny_generator(tmp_path):
    """A real (untrained) generator file, as small as the DCGAN generator allows."""
    recipe = Recipe()
    recipe.model.z_dim, recipe.model.embed_dim, recipe.model.g_channels = 4, 0, 2
    recipe.train.resolution = 32
    torch.manual_seed(0)
    G = build_generator(recipe.model, recipe.train.resolution)
    path = tmp_path / "generator.safetensors"
    save_generator(G, recipe, TagFrequencies.uniform(), path)
    return path


def run_error(capsys, argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tagface: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_generate_valid_tags_work(capsys, tiny_generator, tmp_path):
    # the control for the error tests below: the same call with good tags succeeds
    out = tmp_path / "ok.png"
    assert main(["generate", "blue hair red eyes", "-n", "2", "--checkpoint", str(tiny_generator),
                 "--out", str(out)]) == 0
    assert out.exists()
    assert "error" not in capsys.readouterr().err


def test_generate_unknown_colour(capsys, tiny_generator, tmp_path):
    out = tmp_path / "grid.png"
    line = run_error(capsys, ["generate", "bleu hair red eyes", "-n", "1", "--checkpoint", tiny_generator,
                              "--out", out])
    assert "'bleu'" in line and "did you mean 'blue'" in line
    assert not out.exists()


def test_generate_missing_checkpoint(capsys, tmp_path):
    missing = tmp_path / "nope.safetensors"
    line = run_error(capsys, ["generate", "blue hair red eyes", "--checkpoint", missing, "--out", tmp_path / "g.png"])
    assert str(missing) in line and "does not exist" in line


def test_generate_reports_a_tag_typo_before_loading_any_model(capsys, tmp_path):
    line = run_error(capsys, ["generate", "bleu hair", "--checkpoint", tmp_path / "nope.safetensors"])
    assert "unknown hair colour 'bleu'" in line and "did you mean 'blue'" in line


def test_generate_corrupt_checkpoint(capsys, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage" * 10)
    line = run_error(capsys, ["generate", "blue hair red eyes", "--checkpoint", bad, "--out", tmp_path / "g.png"])
    assert str(bad) in line


def test_generate_with_a_discriminator_file_says_what_it_holds(capsys, tiny_generator, tmp_path):
    from safetensors.torch import load_file, save_file
    from tagface.checkpoint import read_metadata
    other = tmp_path / "default-discriminator.safetensors"
    save_file(load_file(tiny_generator), other, {**read_metadata(tiny_generator), "tagface.kind": "discriminator"})
    line = run_error(capsys, ["generate", "blue hair red eyes", "--checkpoint", other, "--out", tmp_path / "g.png"])
    assert f"{other} holds a discriminator, not a generator" in line


def test_generate_needs_exactly_one_source_of_tags(capsys, tiny_generator, tmp_path):
    line = run_error(capsys, ["generate", "blue hair", "--tag-grid", "--checkpoint", tiny_generator])
    assert "exactly one" in line
    run_error(capsys, ["generate", "--checkpoint", tiny_generator])


def test_generate_into_a_folder_it_cannot_make_names_the_output(capsys, tiny_generator, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "faces" / "grid.png"
    line = run_error(capsys, ["generate", "blue hair red eyes", "-n", "1", "--checkpoint", tiny_generator,
                              "--out", out])
    assert str(out) in line and ".tmp" not in line
    assert blocker.read_text() == "not a folder"


# a number out of range is argparse's one-line error, before any model loads (so not "does not exist"); -n is
# capped because 100,000 faces would be minutes of drawing and a grid image no viewer opens
@pytest.mark.parametrize("flag, value, message", [
    *[("--truncation", v, "--truncation: expected a number in (0, 2]") for v in ("0", "-1", "2.5", "nan", "abc")],
    *[("-n", v, "-n: expected a positive int up to 4096") for v in ("0", "4097", "100000")],
    *[("--strict-tags", v, "--strict-tags: expected a positive int up to 64") for v in ("0", "65")],
])
def test_generate_number_outside_its_range_fails_before_any_model_loads(capsys, tmp_path, flag, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "blue hair", flag, value, "--checkpoint", str(tmp_path / "nope.safetensors")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and repr(value) in err
    assert "does not exist" not in err and "Traceback" not in err


def test_generate_more_columns_than_faces_gives_one_row_not_blank_canvas(tiny_generator, tmp_path):
    from PIL import Image
    out, one_col = tmp_path / "wide.png", tmp_path / "narrow.png"
    assert main(["generate", "blue hair red eyes", "-n", "3", "--ncol", "1000", "--checkpoint", str(tiny_generator),
                 "--out", str(out)]) == 0
    assert main(["generate", "blue hair red eyes", "-n", "3", "--ncol", "1", "--checkpoint", str(tiny_generator),
                 "--out", str(one_col)]) == 0
    wide, narrow = Image.open(out).size, Image.open(one_col).size
    assert wide == (narrow[1], narrow[0])  # three faces side by side: the one-column grid turned on its side


def test_checkpoint_named_default_is_the_shipped_model_unless_such_a_path_exists(tmp_path, monkeypatch):
    from tagface.checkpoint import default_model_path, resolve_checkpoint
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("default") == default_model_path()  # as `tagface train --init default` reads it
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "generator.safetensors").write_bytes(b"")
    assert resolve_checkpoint("default").resolve() == tmp_path / "default" / "generator.safetensors"  # a run named so wins


def test_generate_tags_file_that_is_not_text(capsys, tiny_generator, tmp_path):
    tags_file = tmp_path / "testing_text.txt"
    tags_file.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    line = run_error(capsys, ["generate", "--tags-file", tags_file, "--checkpoint", tiny_generator,
                              "--out", tmp_path / "samples"])
    assert str(tags_file) in line and "not UTF-8 text" in line
    assert not (tmp_path / "samples").exists()


def test_generate_bad_tags_file_line(capsys, tiny_generator, tmp_path):
    tags_file = tmp_path / "testing_text.txt"
    tags_file.write_text("1,blue hair red eyes\n2,yellow hair blue eyes\n")
    line = run_error(capsys, ["generate", "--tags-file", tags_file, "--checkpoint", tiny_generator,
                              "--out", tmp_path / "samples"])
    assert f"{tags_file}:2" in line


def test_train_nonexistent_data(capsys, tmp_path):
    missing = tmp_path / "no-such-data"
    line = run_error(capsys, ["train", "--config", "seed-dcgan-cls", "--data", missing, "--out", tmp_path / "run",
                              "--device", "cpu", "--no-progress"])
    assert str(missing) in line and "does not exist" in line


def test_train_unknown_config(capsys, make_dataset, tmp_path):
    ds = make_dataset([(0, "blue", "red")])
    line = run_error(capsys, ["train", "--config", "seed-nope", "--data", ds.path, "--out", tmp_path / "run",
                              "--device", "cpu"])
    assert "seed-nope" in line and "seed-dcgan-cls" in line


def test_train_bad_override(capsys, make_dataset, tmp_path):
    ds = make_dataset([(0, "blue", "red")])
    line = run_error(capsys, ["train", "--config", "seed-dcgan-cls", "--set", "train.lr_gg=1", "--data", ds.path,
                              "--out", tmp_path / "run", "--device", "cpu"])
    assert "lr_gg" in line


def test_train_resume_into_empty_dir(capsys, tmp_path):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    line = run_error(capsys, ["train", "--resume", "--out", empty, "--device", "cpu"])
    assert "--resume" in line and str(empty) in line


def test_train_without_config_or_data(capsys, make_dataset, tmp_path):
    ds = make_dataset([(0, "blue", "red")])
    assert "--config" in run_error(capsys, ["train", "--data", ds.path, "--out", tmp_path / "run"])
    assert "--data" in run_error(capsys, ["train", "--config", "seed-dcgan-cls", "--out", tmp_path / "run"])


def test_train_data_with_unknown_colour(capsys, make_dataset, tmp_path):
    ds = make_dataset([(0, "blue", "red"), (1, "bleu", "red")])
    line = run_error(capsys, ["train", "--config", "seed-dcgan-cls", "--data", ds.path, "--out", tmp_path / "run",
                              "--device", "cpu"])
    assert str(ds.path / "tags.csv") in line


def test_train_with_a_stage_naming_a_missing_tagger_fails_before_reading_data(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default-model's stage names runs/tagger-indep.safetensors, relative to here
    line = run_error(capsys, ["train", "--config", "default-model", "--data", tmp_path / "no-such-data",
                             "--out", tmp_path / "run"])
    assert "stage from step 400: loss.frozen_classifier runs/tagger-indep.safetensors does not exist" in line
    assert not (tmp_path / "run").exists()


def test_train_with_a_recipe_naming_a_missing_tagger_fails_before_reading_data(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default-model-gpu names runs/tagger-indep.safetensors from step one
    line = run_error(capsys, ["train", "--config", "default-model-gpu", "--init", "default",
                              "--data", tmp_path / "no-such-data", "--out", tmp_path / "run"])
    assert "recipe: loss.frozen_classifier runs/tagger-indep.safetensors does not exist" in line
    assert not (tmp_path / "run").exists()


# found by a bad-input sweep of every command (2026-12-01)
@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--real", "x", "--out", "y", "--seed", "99999999999999999999"], "--seed: expected an integer from 0"),
    (["generate", "blue hair", "--seed", "-1"], "--seed: expected an integer from 0 to 2**63 - 1"),
    (["serve", "--wait", "inf"], "--wait: expected a number >= 0"),
    (["serve", "--wait", "nan"], "--wait: expected a number >= 0"),
    (["serve", "--queue", "-1"], "--queue: expected an integer >= 0"),
])
def test_numbers_no_generator_or_server_takes_are_argparse_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_an_unknown_device_is_a_one_line_error(capsys, tiny_generator, tmp_path):
    for device in ("foo", "cuda:x", "gpu"):
        line = run_error(capsys, ["generate", "blue hair red eyes", "--checkpoint", tiny_generator, "--device", device,
                                  "--out", tmp_path / "x.png"])
        assert f"--device {device}: allowed: cpu, cuda, cuda:N" in line


def test_an_output_file_that_is_a_folder_is_refused_before_any_work(capsys, make_dataset, tmp_path):
    ds = make_dataset([(0, "blue", "red")])
    line = run_error(capsys, ["tagger", "relabel", "--data", ds.path, "--out", ds.path,
                              "--tagger", tmp_path / "no-tagger-needed-yet.safetensors"])
    assert line == f"tagface: error: --out {ds.path} is a folder; give a file path"
    from tagface.checkpoint import atomic_write_text
    from tagface.errors import TagfaceError
    with pytest.raises(TagfaceError, match="is a folder"):
        atomic_write_text(ds.path, "x")


def test_evaluate_against_too_few_real_faces_says_how_many_it_needs(capsys, make_dataset, tiny_generator, tmp_path):
    ds = make_dataset([(i, "blue", "red") for i in range(3)])
    line = run_error(capsys, ["evaluate", "--checkpoint", tiny_generator, "--real", ds.path, "--out", tmp_path / "r",
                              "--samples-per-tag", "1", "--cache-dir", tmp_path / "cache"])
    assert "3 usable faces; evaluate compares against at least 16" in line and not (tmp_path / "r").exists()


def test_tagger_predict_top_past_the_colour_count_lists_them_all(capsys, tmp_path):
    from PIL import Image

    from tagface.tagger import TaggerNet, save_tagger
    save_tagger(TaggerNet(width=4, resolution=32).eval(), tmp_path / "t.safetensors")
    Image.new("RGB", (40, 40), (0, 0, 255)).save(tmp_path / "face.png")
    assert main(["tagger", "predict", str(tmp_path / "face.png"), "--top", "100", "--json",
                 "--tagger", str(tmp_path / "t.safetensors")]) == 0
    import json
    row = json.loads(capsys.readouterr().out)
    assert len(row["hair_top"]) == 12 and len(row["eyes_top"]) == 11


def _tiny_run(make_dataset, tmp_path):
    ds = make_dataset([(i, "blue", "red") for i in range(8)], size=32)
    run = tmp_path / "run"
    args = ["train", "--config", "seed-acgan-dcgan", "--data", ds.path, "--out", run, "--steps", "1", "--no-progress",
            "--device", "cpu", "--cache-dir", tmp_path / "cache", "--set", "train.batch_size=4",
            "--set", "train.resolution=32", "--set", "model.g_channels=4", "--set", "model.d_channels=4",
            "--set", "sample.standing_stats=0"]
    assert main([str(a) for a in args]) == 0
    return ds, run, args


def test_train_guards_an_earlier_run_and_its_resume(capsys, make_dataset, tmp_path):
    ds, run, args = _tiny_run(make_dataset, tmp_path)
    capsys.readouterr()
    resume = ["train", "--out", run, "--resume", "--steps", "2", "--no-progress", "--device", "cpu",
              "--cache-dir", tmp_path / "cache"]
    # a model value changed on --resume: the networks cannot change
    line = run_error(capsys, resume + ["--set", "model.g_channels=8"])
    assert "--resume: the checkpoint's G does not fit this recipe" in line
    # run.json damaged: it records the data folders
    (run / "run.json").write_text("{bad")
    assert "cannot tell the run's data folders" in run_error(capsys, resume)
    # the checkpoint deleted, the generator kept: a new run there would overwrite it
    (run / "checkpoint.safetensors").unlink()
    before = (run / "generator.safetensors").read_bytes()
    line = run_error(capsys, args)
    assert "already holds generator.safetensors" in line and (run / "generator.safetensors").read_bytes() == before


@pytest.mark.parametrize("extra, message", [
    (["--discriminator", "--format", "onnx"], "--discriminator writes safetensors only"),
    (["--format", "safetensors", "--opset", "17"], "--opset 17: only the onnx format has an opset"),
    (["--format", "safetensors", "--guidance-tagger", "t.safetensors"], "--guidance-tagger: only with --tag-guidance"),
])
def test_export_refuses_flags_it_would_ignore(capsys, tiny_generator, tmp_path, extra, message):
    out = tmp_path / "x.safetensors"
    line = run_error(capsys, ["export", "--checkpoint", tiny_generator, "--out", out, *extra])
    assert message in line and not out.exists()


def test_a_folder_given_where_a_file_belongs_is_named_as_a_folder(capsys, tmp_path):
    (tmp_path / "pics").mkdir()
    line = run_error(capsys, ["generate", "blue hair", "--strict-tags", "--tagger", tmp_path, "--out", tmp_path / "x.png"])
    assert line == f"tagface: error: --tagger {tmp_path} is a folder; give a tagger .safetensors file"
    line = run_error(capsys, ["crop", tmp_path / "pics", "--out", tmp_path / "faces", "--cascade", tmp_path])
    assert line == f"tagface: error: --cascade {tmp_path} is a folder; give the .xml file"


def test_crop_into_the_folder_of_its_own_pictures_says_they_are_skipped(capsys, tmp_path, monkeypatch):
    from PIL import Image

    import tagface.crop
    monkeypatch.setattr(tagface.crop, "CascadeDetector", lambda *args: None)  # no picture gets as far as detection
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "pics" / "a.png")
    line = run_error(capsys, ["crop", tmp_path / "pics", "--out", tmp_path / "pics", "--cascade", "unused.xml"])
    assert "outside --out" in line and "whose own faces are skipped" in line


def test_a_file_where_an_output_folder_belongs_is_named_as_such(capsys, tiny_generator, tmp_path):
    (tmp_path / "tags.txt").write_text("1,blue hair red eyes\n")
    (tmp_path / "afile").write_text("keep me")
    line = run_error(capsys, ["generate", "--tags-file", tmp_path / "tags.txt", "--checkpoint", tiny_generator,
                              "--out", tmp_path / "afile"])
    assert line == f"tagface: error: {tmp_path / 'afile'}: is a file where a folder is needed; choose another path"
    assert (tmp_path / "afile").read_text() == "keep me"
