"""The FID Inception network (pytorch-fid's layout and names), its loader, preprocessing, KID and the FID/KID glue.

The real weights file is not available to the tests: the network is checked with random weights.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tagface import inception as inc
from tagface.data import FaceSet
from tagface.errors import TagfaceError
from tagface.inception import (WEIGHTS_NAME, FIDInceptionV3, fid_kid, inception_features, kid, load_fid_inception,
                               preprocess)
from tagface.tags import N_EYES, N_HAIR

# torchvision's Inception v3 has 27,161,264 parameters (its weights' meta "num_params"), aux head and 1000 classes
# included. The FID network drops the aux head (conv0 128*768 + bn 2*128, conv1 768*128*25 + bn 2*768,
# fc 768*1000 + 1000 = 3,326,696) and has 1008 classes (+8*2048 + 8 = 16,392); pytorch-fid's patched blocks
# only change forward passes, not parameters.
FID_INCEPTION_PARAMS = 27_161_264 - 3_326_696 + 16_392   # 23,850,960


@pytest.fixture(scope="module")
def net():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return FIDInceptionV3().eval().requires_grad_(False)


def test_random_network_maps_uint8_images_to_pool3_features(net):
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    feats = inception_features(net, images, batch_size=1)
    assert feats.shape == (2, 2048) and feats.dtype == torch.float64
    assert torch.isfinite(feats).all() and (feats >= 0).all()   # average of ReLU outputs
    with pytest.raises(ValueError):
        inception_features(net, images.float())


def test_state_dict_uses_pytorch_fid_names_and_sizes(net):
    state = net.state_dict()
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_mean": (192,),
        "Mixed_5b.branch1x1.bn.running_mean": (64,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3b.bn.running_var": (384,),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in state)
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d))
    assert all(m.eps == 1e-3 for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert sum(p.numel() for p in net.parameters()) == FID_INCEPTION_PARAMS == 23_850_960


def test_saved_state_dict_round_trips_strictly(net, tmp_path):
    path = tmp_path / WEIGHTS_NAME
    torch.save(net.state_dict(), path)
    loaded = load_fid_inception(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    want, got = net.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_missing_or_wrong_weights_are_one_line_errors(tmp_path):
    missing = tmp_path / "nope" / WEIGHTS_NAME
    with pytest.raises(TagfaceError) as err:
        load_fid_inception(missing)
    msg = str(err.value)
    assert str(missing) in msg and WEIGHTS_NAME in msg and "\n" not in msg

    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3), "fc.bias": torch.zeros(7)}, other)
    with pytest.raises(TagfaceError) as err:
        load_fid_inception(other)
    msg = str(err.value)
    assert str(other) in msg and WEIGHTS_NAME in msg and "\n" not in msg and "missing" in msg

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(TagfaceError) as err:
        load_fid_inception(garbage)
    assert str(garbage) in str(err.value) and WEIGHTS_NAME in str(err.value)


def test_preprocessing_matches_pytorch_fid():
    """ToTensor (x / 255), bilinear resize to 299 without align_corners, then 2x - 1; batches in order."""
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            seen.append(x)
            return x.mean((2, 3)).repeat(1, 683)[:, :2048]

    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    feats = inception_features(Spy(), images, batch_size=2)
    assert [x.shape[0] for x in seen] == [2, 2, 1]
    x = torch.cat(seen)
    ref = 2 * F.interpolate(images.float() / 255, size=(299, 299), mode="bilinear", align_corners=False) - 1
    assert x.shape == (5, 3, 299, 299) and torch.allclose(x, ref) and torch.allclose(preprocess(images), ref)
    assert x.min() >= -1 and x.max() <= 1
    assert feats.shape == (5, 2048) and torch.allclose(feats[:, :3], ref.mean((2, 3)).double())


def test_kid_is_near_zero_for_the_same_distribution_and_positive_for_different_ones():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, 16, generator=g), torch.randn(1000, 16, generator=g)
    c = 1.5 * torch.randn(1000, 16, generator=g) + 0.5
    same_mean, same_std = kid(a, a, subsets=20, subset_size=200)
    twin_mean, _ = kid(a, b, subsets=20, subset_size=200)
    diff_mean, diff_std = kid(a, c, subsets=20, subset_size=200)
    assert abs(same_mean) < 0.05 and abs(twin_mean) < 0.05 and same_std >= 0
    assert diff_mean > 0.5 and diff_mean > 10 * diff_std
    assert kid(a, c, subsets=20, subset_size=200) == (diff_mean, diff_std)   # seeded
    # subset size is capped at the smaller set; with whole sets every subset is the same, so std is 0
    m, s = kid(a[:50], c[:50], subsets=3, subset_size=1000)
    assert m > 0.5 and s == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError):
        kid(a[:1], c)


def test_fid_kid_draws_every_pair_and_matches_the_real_count(monkeypatch, tmp_path):
    calls = {}

    def fake_features(net, images, batch_size=50):
        calls.setdefault("shapes", []).append(tuple(images.shape))
        x = images.double().mean((2, 3)) / 255
        # 8-d stand-in features (the real ones are 2048-d; a 2048x2048 eigendecomposition is slow on one thread)
        noise = torch.randn(x.shape[0], 8, dtype=torch.float64, generator=torch.Generator().manual_seed(len(images)))
        return F.pad(x, (0, 5)) + 1e-3 * noise

    monkeypatch.setattr(inc, "load_fid_inception", lambda path, device="cpu": calls.setdefault("path", path))
    monkeypatch.setattr(inc, "inception_features", fake_features)

    def draw(z, labels):
        calls["labels"] = labels
        return torch.full((z.shape[0], 3, 16, 16), 200, dtype=torch.uint8)

    gen = SimpleNamespace(G=nn.Linear(1, 1), noise=lambda n, seed, t: torch.randn(n, 4), draw=draw)
    real = FaceSet(torch.full((1000, 3, 8, 8), 30, dtype=torch.uint8), torch.zeros(1000, dtype=torch.long),
                   torch.zeros(1000, dtype=torch.long))

    out = fid_kid(tmp_path / WEIGHTS_NAME, gen, real, samples_per_tag=2, seed=0, truncation=None, kid_subsets=5)
    n = N_HAIR * N_EYES * 2
    assert set(out) == {"fid", "kid", "kid_std", "fid_n"} and out["fid_n"] == n
    assert calls["shapes"] == [(n, 3, 16, 16), (n, 3, 8, 8)]
    pairs = set(zip(calls["labels"].hair.tolist(), calls["labels"].eyes.tolist()))
    assert len(pairs) == N_HAIR * N_EYES and torch.bincount(calls["labels"].hair).tolist() == [N_EYES * 2] * N_HAIR
    assert out["fid"] > 0.1 and out["kid"] > 0
