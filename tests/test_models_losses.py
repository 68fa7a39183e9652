"""Every recipe trains on a tiny batch; conditioning and penalties do what their papers say."""
import pytest
import torch

from tagface.config import LossConfig, ModelConfig, Recipe, list_recipes, load_recipe
from tagface.data import FaceSet
from tagface.losses import (PENALTIES, GANObjective, Labels, MatchingAware, ADVERSARIAL, FrozenClassifierLoss,
                            mode_seeking_loss)
from tagface.models import DOut, build_discriminator, build_generator
from tagface.tags import N_TAGS
from tagface.training import Trainer

TINY = ["model.g_channels=8", "model.d_channels=8", "model.g_blocks=2", "model.d_blocks=1",
        "train.resolution=32", "train.batch_size=4"]


def tiny_recipe(name: str, *extra: str) -> Recipe:
    return load_recipe(name, TINY + list(extra))


def random_faces(n: int = 12, res: int = 32) -> FaceSet:
    g = torch.Generator().manual_seed(0)
    return FaceSet(torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8, generator=g),
                   torch.randint(0, 12, (n,), generator=g), torch.randint(0, 11, (n,), generator=g))


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_step_updates_both_networks(name, tmp_path, monkeypatch):
    from tagface.tagger import TaggerNet, save_tagger
    monkeypatch.chdir(tmp_path)  # default-model's stages name runs/tagger-indep.safetensors, relative to here
    save_tagger(TaggerNet(width=4, resolution=32).eval(), tmp_path / "runs" / "tagger-indep.safetensors")
    trainer = Trainer(tiny_recipe(name), random_faces(), tmp_path, progress=False)
    g0 = [p.detach().clone() for p in trainer.G.parameters()]
    d0 = [p.detach().clone() for p in trainer.D.parameters()]
    logs = trainer.train_step()
    assert logs and all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, trainer.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, trainer.D.parameters()))
    fake = trainer.G(torch.randn(2, trainer.recipe.model.z_dim), Labels(torch.tensor([0, 1]), torch.tensor([2, 3])).onehot)
    assert fake.shape == (2, 3, 32, 32) and fake.abs().max() <= 1


@pytest.mark.parametrize("res", [64, 96, 128])
@pytest.mark.parametrize("generator", ["dcgan", "srresnet"])
def test_generators_draw_every_supported_resolution(generator, res):
    cfg = ModelConfig(generator=generator, g_channels=4, g_blocks=1)
    out = build_generator(cfg, res)(torch.randn(1, cfg.z_dim), torch.zeros(1, N_TAGS))
    assert out.shape == (1, 3, res, res)


def test_srresnet_has_sixteen_residual_blocks_and_pixel_shuffle():
    G = build_generator(load_recipe("seed-srresnet-dragan").model, 64)
    blocks = [m for m in G.modules() if type(m).__name__ == "ResidualBlock"]
    assert len(blocks) == 16
    assert sum(isinstance(m, torch.nn.PixelShuffle) for m in G.modules()) == 3


def test_projection_d_scores_the_inner_product_of_tags_and_features():
    from tagface.errors import TagfaceError
    cfg = ModelConfig(d_channels=4, d_condition="projection")
    D = build_discriminator(cfg, 32, condition=True, heads=False).eval()
    assert not hasattr(D.head, "joint")  # tags enter only through the projection
    x, tags = torch.randn(3, 3, 32, 32), torch.zeros(3, N_TAGS)
    tags[:, 0], tags[:, 12] = 1, 1
    out_a = D(x, tags).adv
    with torch.no_grad():
        D.head.project.weight.zero_()
    unconditional = D(x, tags).adv
    other = tags.roll(1, 1)
    assert torch.allclose(unconditional, D(x, other).adv)  # with a zero projection the tags do not matter
    pooled = D.features(x).sum((2, 3))
    with torch.no_grad():
        D.head.project.weight.normal_()
    manual = unconditional + (D.head.project(D.head.embed(tags)) * pooled).sum(1)
    assert torch.allclose(D(x, tags).adv, manual, atol=1e-5) and not torch.allclose(out_a, manual)
    with pytest.raises(TagfaceError, match="model.d_condition 'dot'"):
        build_discriminator(ModelConfig(d_condition="dot"), 32, condition=True, heads=False)


def test_projection_d_trains_with_the_label_penalty(tmp_path):
    trainer = Trainer(tiny_recipe("seed-wgan-gp", "model.d_condition=projection", "loss.penalty_on_labels=true"),
                      random_faces(), tmp_path, progress=False)
    logs = trainer.train_step()
    assert "d_penalty" in logs and all(torch.isfinite(torch.tensor(v)) for v in logs.values())


def test_spectral_norm_wraps_every_discriminator_layer():
    D = build_discriminator(ModelConfig(discriminator="resnet", d_channels=4, d_blocks=1, spectral_norm=True), 32,
                            condition=False, heads=True)
    layers = [m for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)


class RecordingD(torch.nn.Module):
    """A stand-in D that remembers each (image, tags) pair it was asked to judge; like the real D, k tag sets
    for the same images ([k*B, tags]) score every image against each set."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.pairs = []

    def forward(self, x, labels=None):
        x = x.repeat(labels.shape[0] // x.shape[0], 1, 1, 1)
        self.pairs += [(xi.detach(), ci.detach()) for xi, ci in zip(x, labels)]
        return DOut(self.w * x.mean((1, 2, 3)), self.w * torch.zeros(x.shape[0], N_TAGS))


@pytest.mark.parametrize("shared", [True, False])
def test_matching_aware_d_sees_wrong_tags_and_wrong_images_as_fake(shared):
    real = torch.randn(6, 3, 8, 8)
    labels = Labels(torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([0, 1, 2, 3, 4, 5]))
    fake = torch.randn(6, 3, 8, 8)
    D = RecordingD()
    cond = MatchingAware(LossConfig(conditioning="matching"), ADVERSARIAL["nonsaturating"])
    cond.shared_real_pass = shared
    cond.d_terms(D, real, labels, fake, labels, torch.Generator().manual_seed(0))
    right = labels.onehot

    def scored(image, tags_ok):
        return any(torch.equal(x, image) and tags_ok(c) for x, c in D.pairs)

    for i in range(6):
        assert scored(real[i], lambda c: torch.equal(c, right[i]))          # real image, right tags
        assert scored(real[i], lambda c: (c != right[i]).any())             # real image, wrong tags
        assert scored(real[i], lambda c: torch.equal(c, right[(i + 1) % 6]))  # another image's tags
        assert scored(fake[i], lambda c: torch.equal(c, right[i]))          # G's fake, its tags


def test_matching_aware_shared_real_pass_gives_the_per_pair_loss():
    torch.manual_seed(0)
    D = build_discriminator(ModelConfig(d_channels=4, d_norm="none"), 32, condition=True, heads=False)
    real, fake = torch.rand(6, 3, 32, 32), torch.rand(6, 3, 32, 32)
    labels = Labels(torch.tensor([0, 0, 2, 3, 3, 5]), torch.tensor([1, 1, 2, 3, 3, 4]))  # some neighbours agree
    fake_labels = Labels(torch.tensor([5, 4, 3, 2, 1, 0]), torch.tensor([0, 1, 2, 3, 4, 5]))
    losses, grads = [], []
    for shared in (True, False):
        cond = MatchingAware(LossConfig(conditioning="matching"), ADVERSARIAL["nonsaturating"])
        cond.shared_real_pass = shared
        D.zero_grad()
        loss = cond.d_terms(D, real, labels, fake, fake_labels, torch.Generator().manual_seed(3))["adv"]
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in D.parameters()]))
    torch.testing.assert_close(losses[0], losses[1])
    torch.testing.assert_close(grads[0], grads[1])


def test_discriminator_scores_several_tag_sets_for_one_image_batch():
    torch.manual_seed(0)
    D = build_discriminator(ModelConfig(d_channels=4, d_norm="none"), 32, condition=True, heads=False)
    x = torch.rand(2, 3, 32, 32)
    a, b = one_hot_rows(2, 0), one_hot_rows(2, 7)
    torch.testing.assert_close(D(x, torch.cat([a, b])).adv, torch.cat([D(x, a).adv, D(x, b).adv]))
    with pytest.raises(ValueError, match="multiple"):
        D(x, torch.cat([a, b[:1]]))


def one_hot_rows(n: int, hair: int) -> torch.Tensor:
    return Labels(torch.full((n,), hair), torch.arange(n)).onehot


def test_auxiliary_without_fake_cls_ignores_fake_logits():
    labels = Labels(torch.tensor([1, 2]), torch.tensor([3, 4]))
    real, fake = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)

    class D(torch.nn.Module):
        def forward(self, x, labels=None):
            logits = torch.full((x.shape[0], N_TAGS), 5.0 if x is fake else 0.0)
            return DOut(x.mean((1, 2, 3)), logits)

    with_fake = GANObjective(LossConfig(conditioning="auxiliary", fake_cls=True))
    without = GANObjective(LossConfig(conditioning="auxiliary", fake_cls=False))
    rng = torch.Generator().manual_seed(0)
    _, a = with_fake.d_loss(D(), real, labels, fake, labels, rng)
    _, b = without.d_loss(D(), real, labels, fake, labels, rng)
    assert a["d_cls"] > b["d_cls"] > 0


@pytest.mark.parametrize("penalty", [k for k, v in PENALTIES.items() if v is not None])
def test_penalties_are_positive_and_differentiable_in_d(penalty):
    torch.manual_seed(0)
    D = build_discriminator(ModelConfig(d_channels=4, d_norm="none"), 32, condition=True, heads=False)
    real, fake = torch.rand(3, 3, 32, 32) * 2 - 1, torch.rand(3, 3, 32, 32) * 2 - 1
    lr = Labels(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])).onehot
    lf = Labels(torch.tensor([3, 4, 5]), torch.tensor([3, 4, 5])).onehot
    value = PENALTIES[penalty](D, real, lr, fake, lf, torch.Generator().manual_seed(0), False)
    assert value.item() > 0
    grads = torch.autograd.grad(value, [p for p in D.parameters()], allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_wgan_gp_on_labels_adds_the_label_gradient():
    torch.manual_seed(0)
    D = build_discriminator(ModelConfig(d_channels=4, d_norm="none"), 32, condition=True, heads=False)
    real, fake = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    lr = Labels(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])).onehot
    lf = Labels(torch.tensor([3, 4, 5]), torch.tensor([3, 4, 5])).onehot
    args = (D, real, lr, fake, lf)
    image_only = PENALTIES["wgan-gp"](*args, torch.Generator().manual_seed(1), False)
    with_labels = PENALTIES["wgan-gp"](*args, torch.Generator().manual_seed(1), True)
    assert not torch.isclose(image_only, with_labels)


def test_frozen_classifier_loss_trains_g_not_the_classifier():
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, N_TAGS))
    before = [p.clone() for p in classifier.parameters()]
    recipe = tiny_recipe("seed-wgan-gp", "train.d_steps=1")
    trainer = Trainer(recipe, random_faces(), "/nonexistent-unused", progress=False,
                      extra_g_losses=[FrozenClassifierLoss(classifier, weight=2.0)])
    logs = trainer.train_step()
    assert logs["g_extra0"] > 0
    assert all(torch.equal(a, b) for a, b in zip(before, classifier.parameters()))
    assert all(p.grad is None for p in classifier.parameters())


def test_penalty_on_labels_needs_a_d_that_reads_tags():
    from tagface.errors import TagfaceError
    with pytest.raises(TagfaceError, match="penalty_on_labels"):
        GANObjective(LossConfig(conditioning="auxiliary", penalty="wgan-gp", penalty_on_labels=True))


def test_recipe_can_name_a_tagger_file_as_frozen_g_loss(tmp_path):
    from tagface.tagger import TaggerNet, save_tagger
    save_tagger(TaggerNet(width=4, resolution=32).eval(), tmp_path / "t.safetensors")
    recipe = tiny_recipe("seed-wgan-gp", "train.d_steps=1", f"loss.frozen_classifier={tmp_path / 't.safetensors'}",
                         "loss.frozen_classifier_weight=0.5")
    trainer = Trainer(recipe, random_faces(), tmp_path / "run", progress=False)
    logs = trainer.train_step()
    assert logs["g_extra0"] > 0


def test_cls_weight_scales_the_classification_loss_of_d_and_g():
    labels = Labels(torch.tensor([1, 2]), torch.tensor([3, 4]))
    real, fake = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    logits = torch.randn(2, N_TAGS, generator=torch.Generator().manual_seed(1))

    class D(torch.nn.Module):
        def forward(self, x, labels=None):
            return DOut(x.mean((1, 2, 3)), logits)

    def losses(weight):
        objective = GANObjective(LossConfig(conditioning="auxiliary", cls_weight=weight))
        _, d = objective.d_loss(D(), real, labels, fake, labels, torch.Generator().manual_seed(0))
        _, g = objective.g_loss(D(), fake, labels)
        return d["d_cls"], g["g_cls"]

    (d1, g1), (d3, g3) = losses(1.0), losses(3.0)
    assert d1 > 0 and g1 > 0
    assert d3 == pytest.approx(3 * d1) and g3 == pytest.approx(3 * g1)


@pytest.mark.parametrize("g_steps,d_steps", [(1, 1), (2, 1), (4, 1), (1, 2)])
def test_update_ratio_sets_the_optimizer_steps_per_iteration(g_steps, d_steps, tmp_path):
    recipe = tiny_recipe("seed-acgan-dcgan", f"train.g_steps={g_steps}", f"train.d_steps={d_steps}")
    trainer = Trainer(recipe, random_faces(), tmp_path, progress=False)
    counts = {"g": 0, "d": 0}
    trainer.opt_g.register_step_post_hook(lambda *_: counts.__setitem__("g", counts["g"] + 1))
    trainer.opt_d.register_step_post_hook(lambda *_: counts.__setitem__("d", counts["d"] + 1))
    trainer.train_step()
    trainer.train_step()
    assert counts == {"g": 2 * g_steps, "d": 2 * d_steps}


def test_mode_seeking_loss_falls_as_twin_faces_move_apart():
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    same = torch.zeros(8, 3, 4, 4)
    apart = torch.cat([torch.zeros(4, 3, 4, 4), torch.ones(4, 3, 4, 4)])
    assert mode_seeking_loss(apart, z) < mode_seeking_loss(same + 0.01 * torch.rand(8, 3, 4, 4), z)
    fake = (0.1 * torch.rand(8, 3, 4, 4)).requires_grad_(True)
    mode_seeking_loss(fake, z).backward()
    f1, f2 = fake.detach().chunk(2)
    g1, g2 = fake.grad.chunk(2)
    stepped = (f1 - 0.1 * g1) - (f2 - 0.1 * g2)   # one gradient step on the loss
    assert stepped.abs().mean() > (f1 - f2).abs().mean()


def test_mode_seeking_draws_each_g_batch_as_two_halves_with_the_same_tags():
    recipe = tiny_recipe("seed-acgan-dcgan", "loss.mode_seeking=1.0", "train.batch_size=6")
    trainer = Trainer(recipe, random_faces(), "/nonexistent-unused", progress=False)
    seen = []
    g_forward = trainer.G_train.forward
    trainer.G_train.forward = lambda z, y: seen.append(y.clone()) or g_forward(z, y)
    logs = trainer.train_step()
    assert logs["g_mode_seeking"] > 0
    g_tags = seen[-1]                 # the D step draws G's fakes first, then the G step
    assert g_tags.shape[0] == 6 and torch.equal(g_tags[:3], g_tags[3:])
    assert not torch.equal(seen[0][:3], seen[0][3:])


def test_feature_matching_moves_a_batch_to_the_real_mean_and_spread():
    from tagface.losses import FeatureMatching, feature_stats_torch
    torch.manual_seed(0)
    target_std = torch.linspace(0.5, 2.0, 8)
    mean, cov = feature_stats_torch(torch.randn(20000, 8) * target_std + 1)
    shift, scale = torch.zeros(8, requires_grad=True), torch.ones(8, requires_grad=True)
    matching = FeatureMatching(mean, cov, momentum=0.99)
    opt = torch.optim.Adam([shift, scale], lr=0.01)
    first = None
    for _ in range(1500):
        loss = matching(torch.randn(64, 8) * scale + shift)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert matching.distance() < 0.05 * first  # the logged value is the running distance
    torch.testing.assert_close(shift.detach(), torch.ones(8), atol=0.1, rtol=0)
    spread = scale.detach().pow(2).sum() / target_std.pow(2).sum()  # total variance against the real one
    assert 0.9 < spread < 1.1


def test_feature_matching_needs_a_frozen_tagger_and_logs_both_terms(tmp_path):
    from tagface.errors import TagfaceError
    from tagface.tagger import TaggerNet, save_tagger
    with pytest.raises(TagfaceError, match="loss.feature_matching .* set loss.frozen_classifier"):
        Trainer(tiny_recipe("seed-wgan-gp", "loss.feature_matching=0.1"), random_faces(), tmp_path / "a", progress=False)
    save_tagger(TaggerNet(width=4, resolution=32).eval(), tmp_path / "t.safetensors")
    recipe = tiny_recipe("seed-wgan-gp", "train.d_steps=1", f"loss.frozen_classifier={tmp_path / 't.safetensors'}",
                         "loss.feature_matching=0.1")
    trainer = Trainer(recipe, random_faces(), tmp_path / "run", progress=False)
    logs = trainer.train_step()
    assert logs["g_frozen_cls"] > 0 and logs["g_feature_matching"] > 0


def test_conditional_batchnorm_lets_the_tags_set_every_layer():
    cfg = ModelConfig(g_channels=8, g_condition="batchnorm", embed_dim=0)
    G = build_generator(cfg, 32).eval()
    z, labels = torch.randn(2, cfg.z_dim), torch.zeros(2, N_TAGS)
    labels[:, 0] = labels[:, 12] = 1
    plain = build_generator(ModelConfig(g_channels=8, embed_dim=0), 32).eval()
    plain.load_state_dict({k: v for k, v in G.state_dict().items() if not k.startswith("cond.")})
    with torch.no_grad():
        assert torch.equal(G(z, labels), plain(z, labels))  # zero gains: the same generator
        for layer in G.cond:
            layer.bias.normal_()
        assert not torch.allclose(G(z, labels), plain(z, labels))
    assert len(G.cond) == 4 and [m.out_features for m in G.cond] == [2 * 64, 2 * 32, 2 * 16, 2 * 8]


@pytest.mark.parametrize("cfg, message", [
    (ModelConfig(g_condition="film"), "unknown model.g_condition 'film'; allowed: input batchnorm"),
    (ModelConfig(generator="srresnet", g_condition="batchnorm"), "srresnet generator takes the tags at its input only"),
])
def test_bad_g_condition_is_a_one_line_error(cfg, message):
    from tagface.errors import TagfaceError
    with pytest.raises(TagfaceError, match=message):
        build_generator(cfg, 32)
