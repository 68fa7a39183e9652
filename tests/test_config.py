import dataclasses

import pytest
import yaml

from tagface.config import Recipe, list_recipes, load_recipe, parse_stages, recipe_dir
from tagface.errors import TagfaceError

SEEDS = ["seed-acgan-dcgan", "seed-dcgan-cls", "seed-srresnet-dragan", "seed-wgan-gp"]


def test_list_recipes_has_the_four_seeds_and_the_default_model():
    assert list_recipes() == ["default-model", "default-model-gpu"] + SEEDS


def test_the_gpu_recipe_is_the_default_models_last_stage_at_batch_256():
    """default-model-gpu continues default-model's weights: the same networks and losses as its last stage."""
    last, gpu = load_recipe("default-model").at_step(10 ** 9), load_recipe("default-model-gpu")
    assert gpu.model == last.model and gpu.loss == last.loss and not gpu.stages
    assert (gpu.train.batch_size, gpu.train.lr_g, gpu.train.lr_d) == (256, 1e-4, 1e-4)
    assert (gpu.train.rotate, gpu.train.ema, gpu.train.betas) == (last.train.rotate, last.train.ema, last.train.betas)


def test_stages_add_up_in_order():
    recipe = load_recipe("seed-acgan-dcgan")
    recipe.stages = parse_stages([{"start": 10, "set": {"loss.mode_seeking": 1, "train.lr_g": "1e-4"}},
                                  {"start": 20, "set": {"loss.mode_seeking": 2.0}}], "test")
    assert recipe.at_step(9) == dataclasses.replace(recipe, stages=[])
    at10, at25 = recipe.at_step(10), recipe.at_step(25)
    assert (at10.loss.mode_seeking, at10.train.lr_g) == (1.0, 1e-4) and isinstance(at10.loss.mode_seeking, float)
    assert (at25.loss.mode_seeking, at25.train.lr_g) == (2.0, 1e-4)  # the first stage's lr still holds
    assert at25.stages == [] and at25.model == recipe.model


def test_stages_survive_the_run_directory_config(tmp_path):
    recipe = load_recipe("default-model")
    assert [s.start for s in recipe.stages] == [400, 800, 1300, 10300, 12050, 14300, 15300, 15550]
    assert [s.new_discriminator for s in recipe.stages][-3:] == [1000, 1000, 1000]
    assert (recipe.at_step(12049).train.rotate, recipe.at_step(12050).train.rotate) == (5.0, 0.0)
    (tmp_path / "config.yaml").write_text(recipe.to_yaml())
    assert load_recipe(tmp_path / "config.yaml") == recipe
    assert "stages" not in load_recipe("seed-acgan-dcgan").to_yaml()


def test_a_new_discriminator_stage_round_trips_and_needs_no_set(tmp_path):
    recipe = load_recipe("seed-acgan-dcgan")
    recipe.stages = parse_stages([{"start": 10, "new_discriminator": 500},
                                  {"start": 20, "set": {"train.lr_d": 1e-5}}], "test")
    assert [(s.set, s.new_discriminator) for s in recipe.stages] == [({}, 500), ({"train.lr_d": 1e-5}, None)]
    assert "null" not in recipe.to_yaml()  # stages without a new D say nothing about it
    (tmp_path / "config.yaml").write_text(recipe.to_yaml())
    assert load_recipe(tmp_path / "config.yaml") == recipe


@pytest.mark.parametrize("stages, message", [
    ({"start": 5}, "expected a list"),
    ([{"start": 5}], r"stages\[0\]: expected \{start"),
    ([{"start": 5, "set": {"train.lr_g": 1e-4}}, {"start": 5, "set": {"train.lr_d": 1e-4}}], r"\[1\].start: expected a step after 5"),
    ([{"start": 0, "set": {"train.lr_g": 1e-4}}], "expected a step after 0"),
    ([{"start": 5, "set": {"model.z_dim": 64}}], "model.z_dim cannot change mid-run; allowed: loss.cls_weight"),
    ([{"start": 5, "set": {"train.batch_size": 8}}], "train.batch_size cannot change mid-run"),
    ([{"start": 5, "set": {"train.lr_g": "fast"}}], r"at step 5.train.lr_g: expected float, got 'fast'"),
    ([{"start": 5, "new_discriminator": -1}], r"\[0\].new_discriminator: expected the new D's steps alone \(0 or more\)"),
    ([{"start": 5, "new_discriminator": "many"}], "new_discriminator: expected"),
    ([{"start": 5, "new_discriminator": True}], "new_discriminator: expected"),
    ([{"start": 5, "new_discriminator": 2, "new_generator": 1}], r"stages\[0\]: expected \{start"),
])
def test_bad_stages_are_one_line_errors(stages, message, tmp_path):
    raw = yaml.safe_load((recipe_dir() / "seed-acgan-dcgan.yaml").read_text())
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**raw, "stages": stages}))
    with pytest.raises(TagfaceError, match=message) as err:
        load_recipe(tmp_path / "r.yaml")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", SEEDS)
def test_every_seed_recipe_loads(name):
    recipe = load_recipe(name)
    assert isinstance(recipe, Recipe)
    assert recipe.name == name
    assert recipe.description
    raw = yaml.safe_load((recipe_dir() / f"{name}.yaml").read_text())
    # every value written in the file arrives in the recipe (betas as a tuple of floats)
    for section in ("model", "loss", "train", "sample"):
        for key, value in raw.get(section, {}).items():
            got = getattr(getattr(recipe, section), key)
            assert got == (tuple(value) if isinstance(value, list) else value), f"{section}.{key}"
    assert isinstance(recipe.train.betas, tuple) and all(isinstance(b, float) for b in recipe.train.betas)


def test_seed_recipes_differ_where_the_reports_say():
    wgan, dcgan = load_recipe("seed-wgan-gp"), load_recipe("seed-dcgan-cls")
    assert wgan.loss.penalty == "wgan-gp" and wgan.train.betas == (0.0, 0.9) and wgan.train.d_steps == 5
    assert dcgan.loss.conditioning == "matching" and dcgan.train.g_steps == 2
    assert load_recipe("seed-srresnet-dragan").model.generator == "srresnet"


def test_overrides_apply():
    base = load_recipe("seed-dcgan-cls")
    recipe = load_recipe("seed-dcgan-cls", ["train.lr_g=1e-4", "train.batch_size=8", "model.spectral_norm=true",
                                            "train.betas=0.1,0.2", "loss.adversarial=hinge", "name=mine"])
    assert recipe.train.lr_g == 1e-4 and isinstance(recipe.train.lr_g, float)
    assert recipe.train.batch_size == 8 and isinstance(recipe.train.batch_size, int)
    assert recipe.model.spectral_norm is True
    assert recipe.train.betas == (0.1, 0.2)
    assert recipe.loss.adversarial == "hinge"
    assert recipe.name == "mine"
    # untouched values stay as they were
    assert recipe.train.lr_d == base.train.lr_d and recipe.model == dataclasses.replace(base.model, spectral_norm=True)


def test_override_integral_float_for_int_is_accepted():
    assert load_recipe("seed-dcgan-cls", ["train.steps=2e3"]).train.steps == 2000


def test_empty_override_clears_a_string_switch():
    on = load_recipe("seed-acgan-dcgan", ["loss.frozen_classifier=default", "train.diffaugment=color"])
    off = load_recipe("seed-acgan-dcgan", ["loss.frozen_classifier=default", "loss.frozen_classifier=",
                                           "train.diffaugment=color", "train.diffaugment="])
    assert (on.loss.frozen_classifier, on.train.diffaugment) == ("default", "color")
    assert (off.loss.frozen_classifier, off.train.diffaugment) == ("", "")


@pytest.mark.parametrize("override, fragment", [
    ("train.lr_gg=1e-4", "lr_gg"),
    ("trian.lr_g=1e-4", "trian"),
    ("model.nonsense=1", "nonsense"),
])
def test_unknown_key_is_an_error(override, fragment):
    with pytest.raises(TagfaceError, match=fragment) as info:
        load_recipe("seed-dcgan-cls", [override])
    assert "unknown key" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("override", [
    "train.batch_size=abc",
    "train.steps=1.5",
    "train.lr_g=fast",
    "model.spectral_norm=maybe",
    "model.generator=5",
    "train.lr_g=",
    "train.betas=a,b",
])
def test_bad_type_is_an_error(override):
    with pytest.raises(TagfaceError) as info:
        load_recipe("seed-dcgan-cls", [override])
    assert override.split("=")[0] in str(info.value)


@pytest.mark.parametrize("override", ["train.lr_g", "=3"])
def test_malformed_override_is_an_error(override):
    with pytest.raises(TagfaceError, match="SECTION.KEY=VALUE"):
        load_recipe("seed-dcgan-cls", [override])


def test_override_below_a_scalar_is_a_tagface_error():
    with pytest.raises(TagfaceError):
        load_recipe("seed-dcgan-cls", ["train.lr_g.x=1"])


def test_unknown_config_name_lists_the_seeds(tmp_path):
    with pytest.raises(TagfaceError) as info:
        load_recipe("seed-nope")
    msg = str(info.value)
    assert "seed-nope" in msg and all(name in msg for name in SEEDS)
    with pytest.raises(TagfaceError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_load_by_name_and_by_path_agree():
    for name in SEEDS:
        by_name = load_recipe(name)
        by_yaml_name = load_recipe(f"{name}.yaml")
        by_path = load_recipe(recipe_dir() / f"{name}.yaml")
        assert by_name == by_path == by_yaml_name


def test_to_yaml_round_trips(tmp_path):
    for name in SEEDS:
        recipe = load_recipe(name, ["train.lr_g=3e-4", "sample.truncation=0.7"])
        text = recipe.to_yaml()
        assert Recipe.from_dict(yaml.safe_load(text)) == recipe
        path = tmp_path / f"{name}-copy.yaml"
        path.write_text(text)
        assert load_recipe(path) == recipe  # the stored name wins over the file name


def test_from_dict_errors():
    with pytest.raises(TagfaceError, match="expected a mapping"):
        Recipe.from_dict({"train": None})
    with pytest.raises(TagfaceError, match="expected a mapping"):
        Recipe.from_dict(["train"])
    assert Recipe.from_dict({}) == Recipe()


def test_invalid_yaml_is_one_line_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [1, 2\nmodel: {\n")
    with pytest.raises(TagfaceError, match="invalid YAML") as info:
        load_recipe(path)
    assert "\n" not in str(info.value)


def test_recipe_file_that_is_not_utf8_is_one_line_error_and_a_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes("train: {steps: 7}\n".encode("utf-16"))
    with pytest.raises(TagfaceError, match=r"bad.yaml is not UTF-8 text"):
        load_recipe(path)
    path.write_bytes(b"\xef\xbb\xbf" + b"train: {steps: 7}\n")
    assert load_recipe(path).train.steps == 7


def test_non_mapping_yaml_file_is_a_tagface_error(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- train\n- model\n")
    with pytest.raises(TagfaceError, match="expected a mapping"):
        load_recipe(path)


# --------------------------------------------------------------------------- numbers in range
@pytest.mark.parametrize("override, message", [
    ("train.lr_g=-1", "train.lr_g -1: must be a finite number > 0"),
    ("train.lr_g=nan", "train.lr_g nan: must be a finite number > 0"),
    ("train.lr_d=.inf", "train.lr_d inf: must be a finite number > 0"),
    ("train.ema=2", r"train.ema 2: allowed range is \[0, 1\)"),
    ("train.ema=-1", r"train.ema -1: allowed range is \[0, 1\)"),
    ("train.d_steps=-1", "train.d_steps -1: must be an integer >= 1"),
    ("train.g_steps=0", "train.g_steps 0: must be an integer >= 1"),
    ("train.replay_prob=3", r"train.replay_prob 3: allowed range is \[0, 1\]"),
    ("train.replay_size=-3", "train.replay_size -3: must be an integer >= 0"),
    ("train.rotate=.nan", r"train.rotate nan: allowed range is \[0, 180\]"),
    ("loss.cls_weight=.nan", "loss.cls_weight nan: must be a finite number >= 0"),
    ("loss.penalty_weight=-1", "loss.penalty_weight -1: must be a finite number >= 0"),
    ("train.sample_every=-1", "train.sample_every -1: must be an integer >= 1"),
    ("train.log_every=0", "train.log_every 0: must be an integer >= 1"),
    ("train.checkpoint_every=0", "train.checkpoint_every 0: must be an integer >= 1"),
    ("sample.standing_stats=-5", "sample.standing_stats -5: must be an integer >= 0"),
    ("sample.standing_uniform=2", r"sample.standing_uniform 2: allowed range is \[0, 1\]"),
    ("sample.truncation=5", r"sample.truncation 5: allowed range is \(0, 2\]"),
    ("train.batch_size=0", "train.batch_size 0: must be an integer >= 1"),
    ("train.batch_size=-4", "train.batch_size -4: must be an integer >= 1"),
    ("train.betas=2,3", r"train.betas 2,3: allowed range is \[0, 1\) \(each number\)"),
    ("train.betas=[0.5]", "train.betas: expected 2 numbers"),
    ("model.g_channels=0", "model.g_channels 0: must be an integer >= 1"),
    ("model.embed_dim=-1", "model.embed_dim -1: must be an integer >= 0"),
    ("train.resolution=63", "train.resolution 63: must be a multiple of 16 from 32 to 512"),
    ("train.resolution=1024", "train.resolution 1024: must be a multiple of 16 from 32 to 512"),
    ("train.seed=-1", "train.seed -1: must be an integer from 0"),
    ("train.ada_target=-0.5", r"train.ada_target -0.5: must lie in \(0, 1\)"),
])
def test_numbers_out_of_range_are_one_line_errors(override, message):
    with pytest.raises(TagfaceError, match=message) as info:
        load_recipe("seed-acgan-dcgan", [override])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("override", ["train.ema=0", "train.rotate=0", "model.embed_dim=0", "model.g_blocks=0",
                                      "sample.standing_stats=0", "sample.truncation=2", "train.replay_prob=1",
                                      "train.betas=0,0.9", "loss.cls_weight=0", "train.resolution=32",
                                      "train.resolution=512"])
def test_numbers_at_the_edge_of_their_range_are_accepted(override):
    load_recipe("seed-acgan-dcgan", [override])


def test_every_numeric_recipe_field_has_a_rule():
    """A new number in a config section must say what it allows (config.RECIPE_NUMBERS)."""
    from tagface.config import RECIPE_NUMBERS
    recipe = Recipe()
    numeric = {f"{section}.{f.name}" for section in ("model", "loss", "train", "sample")
               for f in dataclasses.fields(getattr(recipe, section))
               if isinstance(getattr(getattr(recipe, section), f.name), (int, float, tuple))
               and not isinstance(getattr(getattr(recipe, section), f.name), bool)}
    assert numeric == set(RECIPE_NUMBERS)


def test_mode_seeking_needs_a_batch_with_twins():
    with pytest.raises(TagfaceError, match="loss.mode_seeking 1 needs train.batch_size 2 or more"):
        load_recipe("seed-acgan-dcgan", ["train.batch_size=1", "loss.mode_seeking=1"])


@pytest.mark.parametrize("value, message", [
    ({"train.ema": 2}, r"stages\[0\] \(from step 5\): train.ema 2: allowed range is \[0, 1\)"),
    ({"train.lr_g": float("nan")}, r"stages\[0\] \(from step 5\): train.lr_g nan: must be a finite number > 0"),
    ({"train.rotate": -5}, r"stages\[0\] \(from step 5\): train.rotate -5"),
    ({"loss.mode_seeking": -1}, "loss.mode_seeking -1: must be a finite number >= 0"),
])
def test_stage_values_get_the_same_checks(value, message, tmp_path):
    raw = yaml.safe_load((recipe_dir() / "seed-acgan-dcgan.yaml").read_text())
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**raw, "stages": [{"start": 5, "set": value}]}))
    with pytest.raises(TagfaceError, match=message) as info:
        load_recipe(tmp_path / "r.yaml")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("override", ["train.lr_g=[1", "train.lr_g=@x", "train.diffaugment={a", "name=`x"])
def test_override_that_is_not_yaml_is_one_line_error(override):
    with pytest.raises(TagfaceError) as info:
        load_recipe("seed-acgan-dcgan", [override])
    assert str(info.value).startswith(f"--set {override!r}: value is not valid YAML (") and "\n" not in str(info.value)


@pytest.mark.parametrize("text, message", [
    (None, "does not exist; do this"),
    ("{bad", "is not valid JSON .*; do this"),
    ("[1]", "expected a JSON object, got list; do this"),
])
def test_read_json_mapping_names_the_file_and_the_fix(text, message, tmp_path):
    from tagface.config import read_json_mapping
    path = tmp_path / "run.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(TagfaceError, match=f"run.json {message}" if text != "[1]" else message) as info:
        read_json_mapping(path, "do this")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
