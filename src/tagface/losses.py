"""GAN objectives built from three registries a recipe picks from:

* ADVERSARIAL: how real/fake scores become losses (non-saturating, hinge, Wasserstein);
* CONDITIONINGS: how D learns the tags (matching-aware pairs, auxiliary classifier, conditional critic);
* PENALTIES: gradient penalties (WGAN-GP with optional label input, DRAGAN, R1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import LossConfig
from .errors import TagfaceError
from .tags import N_EYES, N_HAIR, one_hot


class Labels(NamedTuple):
    hair: torch.Tensor   # [B] int64
    eyes: torch.Tensor   # [B] int64

    @property
    def onehot(self) -> torch.Tensor:
        return one_hot(self.hair, self.eyes).to(self.hair.device)

    def permute(self, perm: torch.Tensor) -> "Labels":
        return Labels(self.hair[perm], self.eyes[perm])

    def to(self, device: torch.device | str) -> "Labels":
        return Labels(self.hair.to(device), self.eyes.to(device))


# --------------------------------------------------------------------------- adversarial losses
@dataclass(frozen=True)
class Adversarial:
    real: Callable[[torch.Tensor], torch.Tensor]   # D's loss on scores it should call real
    fake: Callable[[torch.Tensor], torch.Tensor]   # D's loss on scores it should call fake
    gen: Callable[[torch.Tensor], torch.Tensor]    # G's loss on D's scores of its fakes


ADVERSARIAL = {
    "nonsaturating": Adversarial(lambda s: F.softplus(-s).mean(), lambda s: F.softplus(s).mean(),
                                 lambda s: F.softplus(-s).mean()),
    "hinge": Adversarial(lambda s: F.relu(1 - s).mean(), lambda s: F.relu(1 + s).mean(), lambda s: -s.mean()),
    "wasserstein": Adversarial(lambda s: -s.mean(), lambda s: s.mean(), lambda s: -s.mean()),
}


# --------------------------------------------------------------------------- classification
def classification_loss(logits: torch.Tensor, labels: Labels, kind: str) -> torch.Tensor:
    """softmax: cross-entropy per attribute (one hair, one eye colour); multilabel: BCE over the 23 tags."""
    if kind == "softmax":
        return F.cross_entropy(logits[:, :N_HAIR], labels.hair) + F.cross_entropy(logits[:, N_HAIR:], labels.eyes)
    if kind == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, labels.onehot) * (N_HAIR + N_EYES) / 2
    raise TagfaceError(f"unknown loss.classification '{kind}'; allowed: softmax multilabel")


class FrozenClassifierLoss:
    """Report 003's extra G loss: a frozen, pretrained hair/eye classifier must recognise G's tags.

    `classifier` maps images to [B, 23] tag logits (a TaggerNet also gives `features`); its weights never change.
    With `matching` (FeatureMatching on its features of real faces) it also asks G's faces for the real faces'
    feature statistics: Salimans et al.'s feature matching, on a pretrained network rather than on D, which pulls
    the whole distribution of faces towards the real one, not only each face's tags.
    """

    def __init__(self, classifier: nn.Module, weight: float = 1.0, kind: str = "softmax",
                 matching: "FeatureMatching | None" = None, matching_weight: float = 0.0):
        self.classifier = classifier.eval().requires_grad_(False)
        self.weight, self.kind = weight, kind
        self.matching, self.matching_weight = matching, matching_weight

    def __call__(self, fake: torch.Tensor, labels: Labels) -> torch.Tensor | dict[str, torch.Tensor]:
        if self.matching is None:
            return self.weight * classification_loss(self.classifier(fake), labels, self.kind)
        features = self.classifier.features(fake)
        return {"frozen_cls": self.weight * classification_loss(self.classifier.head(features), labels, self.kind),
                "feature_matching": self.matching_weight * self.matching(features)}


def feature_stats_torch(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) covariance of [N, C] features, in float32."""
    f = features.float()
    mean = f.mean(0)
    centred = f - mean
    return mean, centred.T @ centred / max(1, f.shape[0] - 1)


class FeatureMatching:
    """How far G's feature mean and covariance are from the real ones: the two terms of the Frechet distance,
    with the covariance term's matrix square root replaced by a Frobenius norm.

    One batch of 64 estimates a 128 x 128 covariance too noisily to aim at (its own sampling noise would dominate
    the gradient and shrink G's spread), so the direction comes from running averages of G's statistics over
    recent batches and only the step's batch carries the gradient: loss = 2 <avg - real, batch>, whose gradient
    is that of |avg - real|^2 had the batch been the average. The averages are not saved in checkpoints: for
    the first 1 / (1 - momentum) batches of a run or a resume they fill up and the loss has no gradient (aimed
    at the first batches' noise, it wrecked a trained generator's tags within 10 steps).
    """

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, momentum: float = 0.99):
        self.real_mean, self.real_cov, self.momentum = mean, cov, momentum
        self.mean = self.cov = None
        self.seen, self.warmup = 0, round(1 / (1 - momentum))

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        m, c = feature_stats_torch(features)
        with torch.no_grad():
            if self.mean is None:
                self.mean, self.cov = torch.zeros_like(m), torch.zeros_like(c)
            rate = max(1 - self.momentum, 1 / (self.seen + 1))  # a plain mean while filling up, then exponential
            self.mean.lerp_(m.detach(), rate)
            self.cov.lerp_(c.detach(), rate)
            self.seen += 1
        if self.seen <= self.warmup:
            return m.sum() * 0 + self.distance()
        surrogate = 2 * (((self.mean - self.real_mean) * m).sum() + ((self.cov - self.real_cov) * c).sum())
        return surrogate - surrogate.detach() + self.distance()  # logs read the distance; gradients the surrogate

    def distance(self) -> float:
        """The running averages' squared distance from the real statistics: what the loss drives down."""
        return float((self.mean - self.real_mean).pow(2).sum() + (self.cov - self.real_cov).pow(2).sum())


def mode_seeking_loss(fake: torch.Tensor, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """MSGAN (Mao et al. 2019): the batch is two halves drawn for the same tags; G is rewarded when two
    noise vectors give faces as far apart as the vectors are, which counters one face per tag pair."""
    f1, f2 = fake.float().chunk(2)
    z1, z2 = z.float().chunk(2)
    ratio = (f1 - f2).abs().mean() / (z1 - z2).abs().mean()
    return 1.0 / (ratio + eps)


# --------------------------------------------------------------------------- penalties
def _grad_norm_penalty(D, x: torch.Tensor, labels: torch.Tensor | None, on_labels: bool, target: float = 1.0):
    x = x.detach().requires_grad_(True)
    inputs = [x]
    if labels is not None:
        labels = labels.detach().requires_grad_(on_labels)
        if on_labels:
            inputs.append(labels)
    score = D(x, labels).adv
    grads = torch.autograd.grad(score.sum(), inputs, create_graph=True)
    norm = torch.cat([g.flatten(1) for g in grads], 1).norm(2, dim=1)
    return ((norm - target) ** 2).mean()


def wgan_gp(D, real, real_labels, fake, fake_labels, rng, on_labels):
    """Gulrajani et al.: unit gradient norm on random interpolates of real and fake (and of their labels)."""
    eps = torch.rand(real.shape[0], 1, 1, 1, generator=rng).to(real.device)
    x = eps * real + (1 - eps) * fake
    labels = None
    if real_labels is not None:
        e = eps.view(-1, 1)
        labels = e * real_labels + (1 - e) * fake_labels
    return _grad_norm_penalty(D, x, labels, on_labels)


def dragan(D, real, real_labels, fake, fake_labels, rng, on_labels):
    """Kodali et al.: unit gradient norm in a noisy neighbourhood of the real data."""
    noise = torch.rand(real.shape, generator=rng).to(real.device)
    perturbed = real + 0.5 * real.std() * noise
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=rng).to(real.device)
    return _grad_norm_penalty(D, alpha * real + (1 - alpha) * perturbed, real_labels, on_labels)


def r1(D, real, real_labels, fake, fake_labels, rng, on_labels):
    """Mescheder et al.: squared gradient norm on real data (weight = gamma / 2)."""
    return _grad_norm_penalty(D, real, real_labels, on_labels, target=0.0)


PENALTIES = {"none": None, "wgan-gp": wgan_gp, "dragan": dragan, "r1": r1}


# --------------------------------------------------------------------------- conditioning
class Conditioning:
    """How D learns the tags. `reads_labels`: D gets the tags as input; `heads`: D has classifier heads."""

    reads_labels = False
    heads = False

    def __init__(self, cfg: LossConfig, adv: Adversarial):
        self.cfg, self.adv = cfg, adv

    def d_terms(self, D, real, labels: Labels, fake, fake_labels: Labels, rng) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def g_terms(self, D, fake, fake_labels: Labels) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class MatchingAware(Conditioning):
    """GAN-CLS (Reed et al.): D judges (image, tags) pairs; real images with wrong tags and wrong
    images with the right tags count as fake, alongside G's fakes."""

    reads_labels = True
    # One pass of D's features over the real images, scored against three tag sets (right, wrong, another
    # image's); False: one D call per pair, as tutorials write it (the benchmark's reference loop).
    shared_real_pass = True

    def d_terms(self, D, real, labels, fake, fake_labels, rng):
        b = real.shape[0]
        shift_h = torch.randint(1, N_HAIR, (b,), generator=rng).to(labels.hair.device)
        shift_e = torch.randint(1, N_EYES, (b,), generator=rng).to(labels.hair.device)
        wrong = Labels((labels.hair + shift_h) % N_HAIR, (labels.eyes + shift_e) % N_EYES)
        # "wrong image, right tags": image i is scored with the tags of image i+1, where those differ
        rolled = labels.permute(torch.roll(torch.arange(b), -1).to(labels.hair.device))
        mismatch = (rolled.hair != labels.hair) | (rolled.eyes != labels.eyes)
        if self.shared_real_pass:
            s_real, s_wrong, s_other = D(real, torch.cat([labels.onehot, wrong.onehot, rolled.onehot])).adv.chunk(3)
        else:
            s_real, s_wrong = D(real, labels.onehot).adv, D(real, wrong.onehot).adv
            s_other = D(real[mismatch], rolled.onehot[mismatch]).adv if mismatch.any() else None
        scores = [D(fake, fake_labels.onehot).adv, s_wrong]
        if mismatch.any():
            scores.append(s_other[mismatch] if self.shared_real_pass else s_other)
        fake_loss = sum(self.adv.fake(s) for s in scores) / len(scores)
        return {"adv": self.adv.real(s_real) + fake_loss}

    def g_terms(self, D, fake, fake_labels):
        return {"adv": self.adv.gen(D(fake, fake_labels.onehot).adv)}


class Auxiliary(Conditioning):
    """AC-GAN (Odena et al.): D's classifier heads learn the tags on real images (and on fakes unless
    loss.fake_cls is false); G is rewarded when its fakes are classified as their tags."""

    heads = True

    def d_terms(self, D, real, labels, fake, fake_labels, rng):
        out_real, out_fake = D(real), D(fake)
        cls = classification_loss(out_real.logits, labels, self.cfg.classification)
        if self.cfg.fake_cls:
            cls = cls + classification_loss(out_fake.logits, fake_labels, self.cfg.classification)
        return {"adv": self.adv.real(out_real.adv) + self.adv.fake(out_fake.adv), "cls": self.cfg.cls_weight * cls}

    def g_terms(self, D, fake, fake_labels):
        out = D(fake)
        return {"adv": self.adv.gen(out.adv),
                "cls": self.cfg.cls_weight * classification_loss(out.logits, fake_labels, self.cfg.classification)}


class ConditionalCritic(Conditioning):
    """D reads the tags and scores (image, tags) pairs; the WGAN-GP recipe of report 003."""

    reads_labels = True

    def d_terms(self, D, real, labels, fake, fake_labels, rng):
        s_real = D(real, labels.onehot).adv
        terms = {"adv": self.adv.real(s_real) + self.adv.fake(D(fake, fake_labels.onehot).adv)}
        if self.cfg.drift:
            terms["drift"] = self.cfg.drift * (s_real ** 2).mean()
        return terms

    def g_terms(self, D, fake, fake_labels):
        return {"adv": self.adv.gen(D(fake, fake_labels.onehot).adv)}


CONDITIONINGS: dict[str, type[Conditioning]] = {
    "matching": MatchingAware, "auxiliary": Auxiliary, "critic": ConditionalCritic,
}


def _pick(table: dict, key: str, what: str):
    if key not in table:
        raise TagfaceError(f"unknown {what} '{key}'; allowed: {' '.join(table)}")
    return table[key]


class GANObjective:
    """The full D and G losses of a recipe; G's extra losses (e.g. FrozenClassifierLoss) plug in here."""

    def __init__(self, cfg: LossConfig, extra_g_losses: list[Callable] | None = None):
        self.cfg = cfg
        self.adv = _pick(ADVERSARIAL, cfg.adversarial, "loss.adversarial")
        self.conditioning = _pick(CONDITIONINGS, cfg.conditioning, "loss.conditioning")(cfg, self.adv)
        self.penalty = _pick(PENALTIES, cfg.penalty, "loss.penalty")
        _pick({"softmax": 0, "multilabel": 0}, cfg.classification, "loss.classification")
        if cfg.penalty_on_labels and not self.conditioning.reads_labels:
            raise TagfaceError(f"loss.penalty_on_labels needs a D that reads tags (conditioning matching or critic), "
                               f"not '{cfg.conditioning}'")
        self.extra_g_losses = list(extra_g_losses or [])

    def d_loss(self, D, real, labels: Labels, fake, fake_labels: Labels, rng) -> tuple[torch.Tensor, dict]:
        terms = self.conditioning.d_terms(D, real, labels, fake, fake_labels, rng)
        if self.penalty is not None and self.cfg.penalty_weight:
            reads = self.conditioning.reads_labels
            terms["penalty"] = self.cfg.penalty_weight * self.penalty(
                D, real, labels.onehot if reads else None, fake, fake_labels.onehot if reads else None,
                rng, self.cfg.penalty_on_labels)
        return sum(terms.values()), {f"d_{k}": v.item() for k, v in terms.items()}

    def g_loss(self, D, fake, fake_labels: Labels) -> tuple[torch.Tensor, dict]:
        terms = self.conditioning.g_terms(D, fake, fake_labels)
        for i, extra in enumerate(self.extra_g_losses):
            out = extra(fake, fake_labels)  # one term, or several named ones
            if isinstance(out, dict):
                terms.update(out)
            else:
                terms[f"extra{i}"] = out
        return sum(terms.values()), {f"g_{k}": v.item() for k, v in terms.items()}
