"""Recipes: typed configs read from YAML, and the registry of seed recipes shipped in configs/.

A recipe names its parts (generator, discriminator, conditioning, adversarial loss, penalty) by registry
key; this module only checks and stores the choices, models.py and losses.py own the registries.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import TagfaceError, read_user_text
from .tags import TagFrequencies


@dataclass
class ModelConfig:
    generator: str = "dcgan"          # registry key in models.GENERATORS
    discriminator: str = "dcgan"      # registry key in models.DISCRIMINATORS
    z_dim: int = 100
    embed_dim: int = 64               # learned projection of the one-hot tags fed to G (0: raw one-hot)
    text_encoder: str = "auto"        # auto | onehot | learned | words (text.TEXT_ENCODERS); auto: by embed_dim
    word_dim: int = 50                # words: size of each word vector
    word_vectors: str = ""            # words: GloVe-format text file to start the word vectors from
    word_vectors_trainable: bool = False  # words: fine-tune vectors read from word_vectors (else frozen)
    g_channels: int = 64              # width of G's first (DCGAN) or every (SRResNet) layer
    d_channels: int = 64
    g_blocks: int = 16                # SRResNet residual blocks
    d_blocks: int = 2                 # residual blocks per ResNet-D stage
    spectral_norm: bool = False       # on every D layer
    d_norm: str = "auto"              # batch | layer | none | auto (batch for DCGAN-D, none for ResNet-D or with spectral norm)
    d_condition: str = "concat"       # how a tag-reading D takes the tags: concat (Reed et al.) | projection (Miyato & Koyama)
    g_condition: str = "input"        # how the DCGAN G takes the tags: input (joined to z) | batchnorm (BigGAN)


@dataclass
class LossConfig:
    conditioning: str = "auxiliary"   # matching | auxiliary | critic: how D learns the tags
    adversarial: str = "nonsaturating"  # nonsaturating | hinge | wasserstein
    classification: str = "softmax"   # softmax (cross-entropy per attribute) | multilabel (BCE over 23 tags)
    cls_weight: float = 1.0
    fake_cls: bool = True             # D also classifies fakes (false: make.girls.moe's choice)
    penalty: str = "none"             # none | wgan-gp | dragan | r1
    penalty_weight: float = 10.0
    penalty_on_labels: bool = False   # report 003: the gradient penalty also takes d/d(label input)
    drift: float = 0.0                # WGAN critic drift term, keeps real scores near 0
    frozen_classifier: str = ""       # report 003: a frozen tagger as extra G loss ("default": the shipped one)
    frozen_classifier_weight: float = 1.0
    feature_matching: float = 0.0     # G matches the frozen tagger's feature mean and covariance on real faces
    mode_seeking: float = 0.0         # MSGAN (Mao et al.): weight of G's reward for different faces per tag


@dataclass
class TrainConfig:
    resolution: int = 64
    batch_size: int = 64
    steps: int = 10000
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    lr_grown: float = 1.0             # lr_g multiplier for G's grown layers (g_condition=batchnorm's gains)
    betas: tuple[float, float] = (0.5, 0.999)
    g_steps: int = 1                  # G updates per iteration (2G1D: g_steps=2, d_steps=1)
    d_steps: int = 1
    ema: float = 0.999                # EMA decay of G's weights (0: off)
    replay_size: int = 0              # experience replay of old fakes for D (0: off)
    replay_prob: float = 0.5          # share of each fake batch drawn from the replay buffer
    flip: bool = True
    rotate: float = 5.0               # max rotation in degrees (the reports); it resamples, so it blurs what D sees
    diffaugment: str = ""             # DiffAugment on every D input, e.g. "color,translation,cutout" ("": off)
    ada_target: float = 0.0           # ADA: adapt those transforms' chance p so D's mean sign on reals is this (0.6)
    ada_kimg: float = 100.0           # ADA: thousand images in which p can go from 0 to 1
    ada_interval: int = 4             # ADA: steps between adjustments of p
    seed: int = 0
    precision: str = "fp32"           # fp32, or bf16 autocast (weights and optimizer stay fp32)
    channels_last: bool = False       # NHWC activations, for CUDA convolutions (far slower on a CPU: docs/performance.md)
    compile: bool = False             # torch.compile G and D (not with penalties: no double backward)
    reuse_fakes: bool = False         # G's step trains on the fakes D just judged: one G forward per step, not two
    log_every: int = 10
    sample_every: int = 250
    checkpoint_every: int = 250


@dataclass
class SampleConfig:
    truncation: float = 1.0           # noise intensity: z ~ N(0, T^2); lower is safer, less varied
    standing_stats: int = 50          # batches of 64 that recompute the saved generator's BatchNorm statistics; 0: off
    standing_uniform: float = 0.0     # share of those batches' tags drawn evenly over every pair; 0: the data's mix

    def truncation_or_default(self, truncation: float | None) -> float:
        """The truncation to draw with: the one asked for, checked, else this recipe's."""
        t = self.truncation if truncation is None else truncation
        if not 0 < t <= 2:
            raise TagfaceError(f"--truncation {t}: allowed range is (0, 2]; 1 is the training distribution")
        return t

    def standing_tags(self, freq: TagFrequencies) -> TagFrequencies:
        """The tag frequencies the standing statistics are gathered over: the data's (0, the default) or every hair
        x eye pair alike (1, as the tag grid asks). Even tags bring the grid's mix of faces nearer the real one but
        each tag's faces further from real (docs/ablations.md, "Standing statistics over every tag pair")."""
        s = self.standing_uniform
        if not 0 <= s <= 1:
            raise TagfaceError(f"sample.standing_uniform {s}: allowed range is [0, 1] (1: every hair x eye pair "
                               "alike, 0: the training data's frequencies)")
        return freq.toward_uniform(s)


# --------------------------------------------------------------------------- allowed numbers
# A rule is (test, what is allowed); every numeric config field has one, checked when the config is built, so a
# value the code cannot use fails in one line before any data is decoded, not as NaN weights hours later.
Rule = tuple[Callable[[float], bool], str]
MAX_SEED = 2**63 - 1  # torch's generators take at most a signed 64-bit seed


def at_least(lo: int, strict: bool = False) -> Rule:
    return (lambda x: x > lo) if strict else (lambda x: x >= lo), f"must be {{kind}} {'>' if strict else '>='} {lo}"


def within(lo: float, hi: float, ends: str = "[]", note: str = "") -> Rule:
    """lo..hi; ends says which are open, as in "[)"."""
    def ok(x: float) -> bool:
        return (lo < x if ends[0] == "(" else lo <= x) and (x < hi if ends[1] == ")" else x <= hi)
    return ok, f"allowed range is {ends[0]}{lo:g}, {hi:g}{ends[1]}{note}"


def multiple_of(step: int, lo: int, hi: int, note: str = "") -> Rule:
    return lambda x: x % step == 0 and lo <= x <= hi, f"must be a multiple of {step} from {lo} to {hi}{note}"


POSITIVE, NON_NEGATIVE, ONE_OR_MORE = at_least(0, strict=True), at_least(0), at_least(1)
SHARE, DECAY = within(0, 1), within(0, 1, "[)")  # DECAY: Adam's betas, EMA decays
SEED: Rule = (lambda x: 0 <= x <= MAX_SEED, "must be an integer from 0 to 2**63 - 1")

RECIPE_NUMBERS: dict[str, Rule] = {
    "model.z_dim": ONE_OR_MORE, "model.embed_dim": NON_NEGATIVE, "model.word_dim": ONE_OR_MORE,
    "model.g_channels": ONE_OR_MORE, "model.d_channels": ONE_OR_MORE,
    "model.g_blocks": NON_NEGATIVE, "model.d_blocks": NON_NEGATIVE,
    "loss.cls_weight": NON_NEGATIVE, "loss.penalty_weight": NON_NEGATIVE, "loss.drift": NON_NEGATIVE,
    "loss.frozen_classifier_weight": NON_NEGATIVE, "loss.feature_matching": NON_NEGATIVE,
    "loss.mode_seeking": NON_NEGATIVE,
    "train.resolution": multiple_of(16, 32, 512, " (64 is the default)"),  # D halves it 4 times down to 2 px or more
    "train.batch_size": ONE_OR_MORE, "train.steps": ONE_OR_MORE,
    "train.lr_g": POSITIVE, "train.lr_d": POSITIVE, "train.lr_grown": POSITIVE, "train.betas": DECAY,
    "train.g_steps": ONE_OR_MORE, "train.d_steps": ONE_OR_MORE,
    "train.ema": within(0, 1, "[)", "; 0 turns it off"),
    "train.replay_size": NON_NEGATIVE, "train.replay_prob": SHARE,
    "train.rotate": within(0, 180, note=" degrees; 0 turns it off"),
    "train.ada_target": (lambda x: 0 <= x < 1, "must lie in (0, 1) (D's mean sign on real faces), or be 0 (off)"),
    "train.ada_kimg": NON_NEGATIVE, "train.ada_interval": ONE_OR_MORE,  # ada_kimg > 0 with ADA on: Trainer checks
    "train.seed": SEED,
    "train.log_every": ONE_OR_MORE, "train.sample_every": ONE_OR_MORE, "train.checkpoint_every": ONE_OR_MORE,
    "sample.truncation": within(0, 2, "(]", "; 1 is the training distribution"),
    "sample.standing_stats": NON_NEGATIVE, "sample.standing_uniform": SHARE,
}


def check_numbers(config: Any, rules: dict[str, Rule], label: Callable[[str], str] = str) -> None:
    """Each dotted field of `config` against its rule (a tuple field: each of its numbers); NaN and infinity never
    pass. `label` turns a field into what the user typed (a --set key, a flag)."""
    for key, (ok, allowed) in rules.items():
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        values = value if isinstance(value, tuple) else (value,)
        if not all(math.isfinite(v) and ok(v) for v in values):
            shown = ",".join(str(v) if isinstance(v, int) else f"{v:g}" for v in values)
            kind = "an integer" if isinstance(values[0], int) else "a finite number"
            each = " (each number)" if isinstance(value, tuple) else ""
            raise TagfaceError(f"{label(key)} {shown}: {allowed.format(kind=kind)}{each}")


def check_ada(t: TrainConfig) -> None:
    """ADA adapts how often DiffAugment's transforms apply, so it needs some, and a positive adjustment speed."""
    if not t.ada_target:
        return
    if not t.diffaugment.strip():
        raise TagfaceError(f"train.ada_target {t.ada_target}: ADA adapts how often DiffAugment's transforms "
                           "apply; name them too, e.g. --set train.diffaugment=color,translation,cutout")
    if not (0 < t.ada_target < 1 and t.ada_kimg > 0 and t.ada_interval >= 1):
        raise TagfaceError(f"ADA: train.ada_target {t.ada_target} must lie in (0, 1) (D's mean sign on real "
                           f"faces; 0.6 in the paper; 0 turns ADA off), train.ada_kimg {t.ada_kimg} above 0 and "
                           f"train.ada_interval {t.ada_interval} at least 1")


# what a stage may change mid-run: loss weights and optimiser settings, never the networks, the data or the batch
STAGE_KEYS = {
    "loss": ("cls_weight", "fake_cls", "penalty_weight", "penalty_on_labels", "drift", "frozen_classifier",
             "frozen_classifier_weight", "feature_matching", "mode_seeking"),
    "train": ("lr_g", "lr_d", "lr_grown", "betas", "ema", "replay_prob", "flip", "rotate", "diffaugment", "ada_target",
              "ada_kimg", "ada_interval", "reuse_fakes"),
}


@dataclass
class Stage:
    """From step `start` on, `set` ({'section.key': value}, as --set takes them) changes the recipe. Stages add
    up: a schedule such as "a frozen tagger from step 400, mode seeking from 800" is one recipe, one command.
    `new_discriminator: N` also replaces D at that step with a fresh one that trains alone for N steps first
    (a long-trained D stops punishing what G does; a new one sees it again: docs/ablations.md)."""
    start: int
    set: dict[str, Any]
    new_discriminator: int | None = None


@dataclass
class Recipe:
    name: str = "custom"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    stages: list[Stage] = field(default_factory=list)

    def __post_init__(self):
        check_numbers(self, RECIPE_NUMBERS)
        check_ada(self.train)
        if self.loss.mode_seeking and self.train.batch_size < 2:
            raise TagfaceError(f"loss.mode_seeking {self.loss.mode_seeking:g} needs train.batch_size 2 or more "
                               f"(each fake face gets a twin to differ from), got {self.train.batch_size}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = [{k: v for k, v in stage.items() if v is not None} for stage in d["stages"]]
        return d

    def to_yaml(self) -> str:
        d = self.to_dict()
        d["train"]["betas"] = list(d["train"]["betas"])
        if not d["stages"]:
            del d["stages"]
        return yaml.safe_dump(d, sort_keys=False)

    def at_step(self, step: int) -> "Recipe":
        """The recipe in force after `step` steps: every stage started by then applied, no stages left."""
        data = self.to_dict()
        data.pop("stages")
        for stage in self.stages:
            if stage.start <= step:
                for key, value in stage.set.items():
                    section, leaf = key.split(".")
                    data[section][leaf] = value
        return Recipe.from_dict(data, f"{self.name} at step {step}")

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "Recipe":
        if not isinstance(data, dict):
            raise TagfaceError(f"{source}: expected a mapping, got {type(data).__name__}")
        data = dict(data)
        stages = parse_stages(data.pop("stages", None) or [], f"{source}: stages")
        recipe = build_dataclass(cls, data, source)
        recipe.stages = stages
        for i, stage in enumerate(stages):  # a wrong value fails now, not hours into the run
            try:
                recipe.at_step(stage.start)
            except TagfaceError as err:
                raise TagfaceError(f"{source}: stages[{i}] (from step {stage.start}): {err}") from None
        return recipe


def parse_stages(items: Any, where: str) -> list[Stage]:
    form = "{start: STEP, set: {SECTION.KEY: VALUE}, new_discriminator: WARMUP_STEPS}"
    if not isinstance(items, list):
        raise TagfaceError(f"{where}: expected a list of {form}")
    stages, last = [], 0
    for i, item in enumerate(items):
        if (not isinstance(item, dict) or "start" not in item or not set(item) - {"start"}
                or not set(item) <= {"start", "set", "new_discriminator"} or not isinstance(item.get("set", {}), dict)):
            raise TagfaceError(f"{where}[{i}]: expected {form} (set or new_discriminator or both), got {item!r}")
        start = item["start"]
        if isinstance(start, bool) or not isinstance(start, int) or start <= last:
            raise TagfaceError(f"{where}[{i}].start: expected a step after {last} (stages in order), got {start!r}")
        for key in item.get("set", {}):
            section, _, leaf = str(key).partition(".")
            if leaf not in STAGE_KEYS.get(section, ()):
                allowed = ", ".join(f"{s}.{k}" for s, keys in STAGE_KEYS.items() for k in keys)
                raise TagfaceError(f"{where}[{i}].set: {key} cannot change mid-run; allowed: {allowed}")
        warmup = item.get("new_discriminator")
        if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
            raise TagfaceError(f"{where}[{i}].new_discriminator: expected the new D's steps alone (0 or more), "
                               f"got {warmup!r}")
        stages.append(Stage(start, dict(item.get("set", {})), warmup))
        last = start
    return stages


def build_dataclass(cls, data: Any, where: str):
    """A (nested) config dataclass from a mapping, with one-line errors for unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise TagfaceError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise TagfaceError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = build_dataclass(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, default, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise TagfaceError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(value, bool) and not isinstance(default, str):
        raise TagfaceError(f"{where}: expected {type(default).__name__}, got {value!r}")
    try:
        if isinstance(default, tuple):
            numbers = tuple(float(v) for v in (value.split(",") if isinstance(value, str) else value))
            if len(numbers) != len(default):
                raise TagfaceError(f"{where}: expected {len(default)} numbers, e.g. "
                                   f"{','.join(map(str, default))}, got {value!r}")
            return numbers
        if isinstance(default, float):
            return float(value)
        if isinstance(default, int):
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if isinstance(default, str) and not isinstance(value, str):
            raise ValueError
    except (TypeError, ValueError):
        raise TagfaceError(f"{where}: expected {type(default).__name__}, got {value!r}") from None
    return value


def apply_overrides(data: dict, items: list[str]) -> dict:
    """'section.key=value' overrides (values read as YAML; an empty value is the empty string, which turns off
    string switches such as loss.frozen_classifier) onto a config mapping, as `--set` gives them."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TagfaceError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.lr_g=1e-4")
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise TagfaceError(f"--set {item!r}: {p} is not a section")
        try:
            node[leaf] = yaml.safe_load(value) if value.strip() else ""  # KEY= clears a string switch
        except yaml.YAMLError as err:
            raise TagfaceError(f"--set {item!r}: value is not valid YAML ({str(err).splitlines()[0]})") from None
    return data


def read_json_mapping(path: str | Path, fix: str) -> dict:
    """A JSON object a run wrote (config.json, run.json) and a user may have edited or truncated: one line naming
    the file and `fix` (what to do) when it is unreadable, not JSON or not an object."""
    try:
        data = json.loads(read_user_text(path))
    except FileNotFoundError:
        raise TagfaceError(f"{path} does not exist; {fix}") from None
    except OSError as err:
        raise TagfaceError(f"{path} cannot be read ({err.strerror}); {fix}") from None
    except json.JSONDecodeError as err:
        raise TagfaceError(f"{path} is not valid JSON ({err}); {fix}") from None
    if not isinstance(data, dict):
        raise TagfaceError(f"{path}: expected a JSON object, got {type(data).__name__}; {fix}")
    return data


def recipe_dir() -> Path:
    return Path(str(resources.files("tagface") / "configs"))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """A seed recipe by name (see `tagface recipes`) or a YAML file; `overrides` are 'train.lr_g=1e-4'."""
    path = Path(name_or_path)
    if not path.exists():
        candidate = recipe_dir() / f"{path.stem}.yaml"
        if path.suffix in ("", ".yaml") and candidate.exists():
            path = candidate
        else:
            raise TagfaceError(f"config {name_or_path} not found; seed recipes: {', '.join(list_recipes())}")
    try:
        data = yaml.safe_load(read_user_text(path)) or {}
    except yaml.YAMLError as err:
        raise TagfaceError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TagfaceError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    apply_overrides(data, overrides or [])
    data.setdefault("name", path.stem)
    return Recipe.from_dict(data, str(path))
