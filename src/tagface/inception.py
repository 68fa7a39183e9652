"""Standard FID and KID on the Inception network that pytorch-fid uses, from a weights file the user already has.

The network is the TensorFlow FID Inception v3 ("inception-2015-12-05") as ported by pytorch-fid: torchvision's
Inception v3 layout with 1008 classes, no auxiliary head, and pytorch-fid's patches (average pools in the mixed blocks
ignore the zero padding, and the last block max-pools its pool branch). Module and parameter names match
pytorch-fid's `fid_inception_v3()`, so its file `pt_inception-2015-12-05-6726825d.pth` loads strictly. Features are
the 2048-d average-pooled activations ("pool3") before the classifier. Nothing is ever downloaded.

KID is the unbiased squared MMD with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random
subsets, as in Binkowski et al. 2018, clean-fid and torch-fidelity.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import TagfaceError
from .losses import Labels
from .tags import N_EYES, N_HAIR

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FEATURE_DIM = 2048
INPUT_SIZE = 299


# --------------------------------------------------------------------------- network
class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's 3x3 same-padded average pool: padded zeros do not count (pytorch-fid's patch)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max3(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _Mixed(nn.Module):
    """A mixed block: branches of BasicConv2d chains, concatenated on channels."""

    def chain(self, x: torch.Tensor, *names: str) -> torch.Tensor:
        for name in names:
            x = getattr(self, name)(x)
        return x


class InceptionA(_Mixed):
    """35x35 block (Mixed_5b/c/d)."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x),
                          self.chain(x, "branch5x5_1", "branch5x5_2"),
                          self.chain(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                          self.branch_pool(_avg3(x))], 1)


class InceptionB(_Mixed):
    """35 -> 17 reduction (Mixed_6a)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x),
                          self.chain(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
                          F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(_Mixed):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b/c/d/e)."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x),
                          self.chain(x, "branch7x7_1", "branch7x7_2", "branch7x7_3"),
                          self.chain(x, *(f"branch7x7dbl_{i}" for i in range(1, 6))),
                          self.branch_pool(_avg3(x))], 1)


class InceptionD(_Mixed):
    """17 -> 8 reduction (Mixed_7a)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.chain(x, "branch3x3_1", "branch3x3_2"),
                          self.chain(x, *(f"branch7x7x3_{i}" for i in range(1, 5))),
                          F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(_Mixed):
    """8x8 block with split 1x3 / 3x1 outputs (Mixed_7b with an average pool, Mixed_7c with a max pool)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = {"avg": _avg3, "max": _max3}[pool]
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        b = self.chain(x, "branch3x3dbl_1", "branch3x3dbl_2")
        return torch.cat([self.branch1x1(x),
                          self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b),
                          self.branch_pool(self.pool(x))], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception v3. forward: [N, 3, 299, 299] in [-1, 1] -> [N, 2048] pool3 features.

    `fc` (2048 -> 1008 classes) is kept only so the checkpoint loads strictly; features never pass through it.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, "Mixed_" + name)(x)
        return x.mean((2, 3))   # adaptive average pool to 1x1, flattened


# --------------------------------------------------------------------------- loading
_EXPECTS = f"expects pytorch-fid's Inception weights {WEIGHTS_NAME}"


def load_fid_inception(path: str | Path, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """The FID Inception network with the weights at `path`, in eval mode and without gradients."""
    p = Path(path).expanduser()
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise TagfaceError(f"Inception weights {p} {what}: {_EXPECTS} (pytorch-fid's file; nothing is downloaded)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise TagfaceError(f"Inception weights {p} cannot be read as a torch state dict ({first}); {_EXPECTS}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TagfaceError(f"Inception weights {p} is not a state dict of tensors; {_EXPECTS}")

    net = FIDInceptionV3()
    want = net.state_dict()
    # BatchNorm fills a missing num_batches_tracked itself (files saved before it existed), so it is not required.
    missing = [k for k in want if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in want]
    wrong = [k for k in state if k in want and state[k].shape != want[k].shape]
    problems = [f"{len(ks)} {what} (e.g. {ks[0]})" for ks, what in
                ((missing, "missing keys"), (unexpected, "unexpected keys"), (wrong, "wrongly shaped tensors")) if ks]
    if problems:
        raise TagfaceError(f"Inception weights {p} do not fit the FID Inception network: {', '.join(problems)}; "
                           f"{_EXPECTS}")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:200]
        raise TagfaceError(f"Inception weights {p} do not fit the FID Inception network ({detail}); {_EXPECTS}") from None
    return net.to(device).eval().requires_grad_(False)


# --------------------------------------------------------------------------- features
def preprocess(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float [N, 3, 299, 299] in [-1, 1], as pytorch-fid does: to [0, 1] (ToTensor), bilinear
    resize without align_corners or antialiasing (resize_input), then 2x - 1 (normalize_input)."""
    x = images_uint8.float() / 255
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2 * x - 1


@torch.no_grad()
def inception_features(net: nn.Module, images_uint8: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
    """uint8 images [N, 3, H, W] -> pool3 features [N, 2048] float64 (on the CPU)."""
    if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4 or images_uint8.shape[1] != 3:
        raise ValueError(f"expected uint8 images [N, 3, H, W], got {images_uint8.dtype} {tuple(images_uint8.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(net.parameters()).device
    out = [net(preprocess(images_uint8[i:i + batch_size].to(device))).double().cpu()
           for i in range(0, images_uint8.shape[0], batch_size)]
    return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM, dtype=torch.float64)


# --------------------------------------------------------------------------- metrics
def kid(feats_a: torch.Tensor, feats_b: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: mean and (population) std over `subsets` random subsets of the unbiased MMD^2
    with k(x, y) = (x.y / d + 1)^3. subset_size is capped at the smaller set's size."""
    a, b = torch.as_tensor(feats_a).double(), torch.as_tensor(feats_b).double()
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"KID needs two [N, D] feature sets of equal D, got {tuple(a.shape)} and {tuple(b.shape)}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per subset, got {m}")
    if subsets < 1:
        raise ValueError(f"KID needs at least one subset, got {subsets}")
    d = a.shape[1]
    g = torch.Generator().manual_seed(seed)
    off_diag = ~torch.eye(m, dtype=torch.bool)
    mmds = []
    for _ in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=g)[:m]]
        y = b[torch.randperm(b.shape[0], generator=g)[:m]]
        kxx, kyy, kxy = ((u @ v.T / d + 1) ** 3 for u, v in ((x, x), (y, y), (x, y)))
        mmds.append((kxx[off_diag].sum() + kyy[off_diag].sum()) / (m * (m - 1)) - 2 * kxy.sum() / (m * m))
    mmds = torch.stack(mmds)
    return float(mmds.mean()), float(mmds.std(correction=0))


def fid_kid(inception_path: str | Path, gen, real, samples_per_tag: int = 8, seed: int = 0,
            truncation: float | None = None, *, batch_size: int = 50, kid_subsets: int = 100,
            kid_subset_size: int = 1000) -> dict:
    """FID and KID between `samples_per_tag` generated faces for each of the 12 x 11 hair x eye pairs and as many
    real faces (a seeded random subset of `real`). If `real` has fewer faces, the generated set is cut to match, so
    both sets always have `fid_n` faces."""
    if samples_per_tag < 1:
        raise TagfaceError(f"samples per tag {samples_per_tag}: must be at least 1")
    # imported here, not at the top: evaluation may import this module
    from .evaluation import feature_stats, frechet_distance

    device = next(gen.G.parameters()).device
    net = load_fid_inception(inception_path, device)

    labels = Labels(torch.arange(N_HAIR).repeat_interleave(N_EYES * samples_per_tag),
                    torch.arange(N_EYES).repeat_interleave(samples_per_tag).repeat(N_HAIR))
    n = labels.hair.numel()
    fake = gen.draw(gen.noise(n, seed, truncation), labels)
    m = min(n, len(real))
    if m < 2:
        raise TagfaceError(f"FID/KID need at least 2 real faces, the real set has {len(real)}")
    if m < n:  # a seeded random cut of the generated set, so both sets are the same size
        fake = fake[torch.randperm(n, generator=torch.Generator().manual_seed(seed + 4))[:m]]
    real_images = real.images[torch.randperm(len(real), generator=torch.Generator().manual_seed(seed + 3))[:m]]

    fake_feat = inception_features(net, fake, batch_size)
    real_feat = inception_features(net, real_images, batch_size)
    fid = frechet_distance(*feature_stats(fake_feat), *feature_stats(real_feat))
    kid_mean, kid_std = kid(fake_feat, real_feat, kid_subsets, kid_subset_size, seed)
    return {"fid": fid, "kid": kid_mean, "kid_std": kid_std, "fid_n": m}
