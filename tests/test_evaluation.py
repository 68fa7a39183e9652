"""Metric maths on known cases, the tagger's split, training, relabelling and the evaluate report."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tagface.cli import main
from tagface.data import FaceSet, load_folder, read_records
from tagface.losses import Labels
from tagface.evaluation import (_blur, _draw_like, _per_tag_diversity_ratio, laplacian_pyramid, sliced_wasserstein, confusion, diversity, evaluate, feature_stats, frechet_distance,
                                markdown_report, write_report)
from tagface.sampling import FaceGenerator
from tagface.tagger import (TaggerNet, accuracy, heldout_mask, load_tagger, predict_logits, relabel, save_tagger,
                            train_tagger, write_relabelled)
from tagface.tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, N_TAGS
from tagface.training import Trainer

from test_models_losses import random_faces, tiny_recipe


def test_frechet_of_a_set_with_itself_is_zero():
    f = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    mu, sigma = feature_stats(f)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_frechet_of_two_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)
    # a shared rotation changes neither distance
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    rotated = frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-6)
    # 1-D: (m1 - m2)^2 + (sd1 - sd2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)


def test_frechet_from_samples_approaches_the_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    b = torch.randn(20000, 3, generator=g, dtype=torch.float64) * 2 + 1
    expected = 3 * 1 + 3 * (1 + 4 - 2 * 2)
    assert frechet_distance(*feature_stats(a), *feature_stats(b)) == pytest.approx(expected, rel=0.05)


def _textures(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """uint8 images of one random-texture distribution: smooth colour fields plus fine noise."""
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bilinear")
    return ((smooth * 200 + torch.rand(n, 3, size, size, generator=g) * 55)).to(torch.uint8)


def test_laplacian_pyramid_bands_add_back_to_the_image():
    x = torch.rand(2, 3, 32, 32)
    bands = laplacian_pyramid(x, 3)
    assert [b.shape[-1] for b in bands] == [32, 16, 8]
    rebuilt = bands[-1]
    for band in reversed(bands[:-1]):
        up = torch.zeros_like(band)
        up[..., ::2, ::2] = rebuilt
        rebuilt = band + 4 * _blur(up)
    torch.testing.assert_close(rebuilt, x)


def test_sliced_wasserstein_is_zero_for_one_set_and_sees_lost_detail_and_colour():
    a, b = _textures(200, 0), _textures(200, 1)
    assert list(sliced_wasserstein(a, a)) == [32, 16] and max(sliced_wasserstein(a, a).values()) == 0
    same = sliced_wasserstein(a, b)
    blurred = sliced_wasserstein(_blur(a.float()).to(torch.uint8), b)
    tinted = sliced_wasserstein((a.float() * torch.tensor([1.0, 0.6, 0.6])[:, None, None]).to(torch.uint8), b)
    assert blurred[32] > 3 * same[32]  # the finest band lost its texture
    assert tinted[16] > 3 * same[16]   # the colour is in the coarse remainder


def test_accuracy_and_confusion_on_a_hand_made_set():
    hair, eyes = torch.tensor([0, 1, 2, 2]), torch.tensor([3, 3, 4, 5])
    logits = torch.zeros(4, N_TAGS)
    for i, (h, e) in enumerate([(0, 3), (1, 4), (1, 4), (2, 5)]):  # hair right 3/4, eyes right 2/4, both 1/4... see below
        logits[i, h] = 5
        logits[i, N_HAIR + e] = 5
    acc = accuracy(logits, hair, eyes)
    assert (acc.hair, acc.eyes, acc.both, acc.n) == (0.75, 0.75, 0.5, 4)
    m = confusion(logits[:, :N_HAIR].argmax(1), hair, 3)
    assert m.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_diversity_is_zero_for_identical_faces_and_positive_otherwise():
    net = TaggerNet(width=4, resolution=32)
    same = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).repeat(6, 1, 1, 1)
    net.eval()
    with torch.no_grad():
        assert diversity(net.features(same)) == pytest.approx(0.0, abs=1e-6)
        assert diversity(net.features(torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8))) > 0
    assert diversity(torch.tensor([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)


def test_per_tag_diversity_ratio_is_one_for_real_faces_and_zero_for_a_repeated_face():
    g = torch.Generator().manual_seed(0)
    labels = Labels(torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([2, 2, 3, 3, 4, 4]))
    real = torch.randn(6, 8, generator=g)
    same = _per_tag_diversity_ratio(real, real, labels)
    assert set(same) == {f"{HAIR_COLOURS[0]} hair", f"{HAIR_COLOURS[1]} hair", f"{EYE_COLOURS[2]} eyes",
                         f"{EYE_COLOURS[3]} eyes", f"{EYE_COLOURS[4]} eyes"}
    assert all(v == pytest.approx(1.0) for v in same.values())
    collapsed = _per_tag_diversity_ratio(real[:1].repeat(6, 1), real, labels)
    assert all(v == pytest.approx(0.0) for v in collapsed.values())
    halved = _per_tag_diversity_ratio(real * 0.5, real, labels)
    assert all(v == pytest.approx(0.5) for v in halved.values())


def test_matched_set_is_drawn_with_the_tags_of_real_faces(tmp_path):
    Trainer(tiny_recipe("seed-acgan-dcgan"), random_faces(), tmp_path / "run", progress=False).fit(1)
    gen = FaceGenerator.load(tmp_path / "run")
    asked = []
    draw = gen.draw
    gen.draw = lambda z, labels: asked.append(labels) or draw(z, labels)
    real = colour_coded_faces(400, res=32)
    evaluate(gen, TaggerNet(width=4, resolution=32).eval(), real, samples_per_tag=1)
    grid, matched = asked
    assert torch.equal(torch.bincount(grid.hair, minlength=N_HAIR), torch.full((N_HAIR,), 11))  # every pair once
    held = real.subset(heldout_mask(real.digest, 0.1).nonzero().squeeze(1))
    assert len(matched.hair) == len(held) // 2
    # every matched pair is one the real held-out faces have, in no greater number
    real_pairs = torch.bincount(held.hair * 11 + held.eyes, minlength=N_HAIR * 11)
    assert (torch.bincount(matched.hair * 11 + matched.eyes, minlength=N_HAIR * 11) <= real_pairs).all()


def test_heldout_split_keeps_identical_files_together_and_is_seeded():
    digest = torch.arange(2000).repeat_interleave(2)  # every file has a byte-identical copy
    mask = heldout_mask(digest, 0.1, seed=0)
    assert torch.equal(mask[0::2], mask[1::2])
    assert 0.06 < mask.float().mean() < 0.14
    assert torch.equal(mask, heldout_mask(digest, 0.1, seed=0))
    assert not torch.equal(mask, heldout_mask(digest, 0.1, seed=1))


def paint(hair: torch.Tensor, eyes: torch.Tensor, res: int = 32) -> torch.Tensor:
    """Top half painted by hair colour, bottom half by eye colour."""
    palette = torch.randint(0, 256, (23, 3), generator=torch.Generator().manual_seed(99))
    img = torch.zeros(len(hair), 3, res, res, dtype=torch.uint8)
    img[:, :, : res // 2] = palette[hair][:, :, None, None]
    img[:, :, res // 2:] = palette[N_HAIR + eyes][:, :, None, None]
    return img


def colour_coded_faces(n: int, res: int = 32, seed: int = 0) -> FaceSet:
    """Painted faces with random tags: a learnable toy tagging problem."""
    g = torch.Generator().manual_seed(seed)
    hair, eyes = torch.randint(0, 12, (n,), generator=g), torch.randint(0, 11, (n,), generator=g)
    return FaceSet(paint(hair, eyes, res), hair, eyes, torch.arange(n))


class PaintedGenerator:
    """A stand-in generator that paints faces as the real ones are painted, except blank white for `wild_eyes`."""
    source, step, name, default_truncation = "painted", 0, "painted", 1.0

    def __init__(self, wild_eyes: int):
        self.wild_eyes = wild_eyes

    def noise(self, n: int, seed: int, truncation: float | None = None) -> torch.Tensor:
        return torch.zeros(n, 1)

    def draw(self, z: torch.Tensor, labels: Labels) -> torch.Tensor:
        img = paint(labels.hair, labels.eyes)
        wild = labels.eyes == self.wild_eyes
        img[wild] = 255
        return img


class HalvesTagger(TaggerNet):
    """A stand-in judge whose features are the mean colours of the top and bottom halves."""

    def __init__(self):
        super().__init__(width=2, resolution=32)
        self.head = torch.nn.Linear(6, N_TAGS)

    def features(self, x):
        x = self.prepare(x)
        return torch.cat([x[:, :, :16].mean((2, 3)), x[:, :, 16:].mean((2, 3))], 1)


def test_grid_frechet_over_the_pairs_the_real_faces_hold_leaves_out_the_others():
    gray = EYE_COLOURS.index("gray")
    faces = colour_coded_faces(4000)
    real = faces.subset((faces.eyes != gray).nonzero().squeeze(1))  # like mlds: no gray eyes at all
    r = evaluate(PaintedGenerator(wild_eyes=gray), HalvesTagger().eval(), real, samples_per_tag=1)
    grid, held = r["frechet_tagger"], r["frechet_tagger_held_pairs"]
    assert held["pairs"] == 120 and held["pairs_without_real_faces"] == [f"{h}/gray" for h in HAIR_COLOURS]
    assert grid["n_per_set"] == 132 and held["n_per_set"] == 120
    # the gray-eyed faces are blank: the grid sees them, the held pairs do not, and the rest are real-like
    print(held, grid)
    assert held["generated_vs_real"] < grid["generated_vs_real"] / 3
    assert held["ratio"] < 1 < grid["ratio"]
    # when the real faces hold every pair the two are one measurement
    r = evaluate(PaintedGenerator(wild_eyes=gray), HalvesTagger().eval(), faces, samples_per_tag=1)
    assert r["frechet_tagger_held_pairs"]["pairs_without_real_faces"] == []
    assert r["frechet_tagger_held_pairs"]["generated_vs_real"] == r["frechet_tagger"]["generated_vs_real"]


def test_real_faces_drawn_like_the_grid_come_from_the_pool_with_the_asked_tags():
    faces = colour_coded_faces(3000)
    even = torch.arange(0, 3000, 2)
    pool = even[(faces.hair[even] != 5) | (faces.eyes[even] != 7)]  # the pool lacks one pair
    asked = Labels(torch.tensor([0, 0, 0, 5, 2] * 2), torch.tensor([1, 1, 1, 7, 3] * 2))
    idx = _draw_like(faces, pool, asked, seed=0)
    found = idx >= 0
    assert found.tolist() == [True, True, True, False, True] * 2  # marked, not filled with another pair
    assert set(idx[found].tolist()) <= set(pool.tolist())
    assert torch.equal(faces.hair[idx[found]], asked.hair[found]) and torch.equal(faces.eyes[idx[found]], asked.eyes[found])
    assert len(set(idx[(asked.hair == 0)].tolist())) == 6  # six asked, more in the pool: no face twice
    assert torch.equal(idx, _draw_like(faces, pool, asked, seed=0))


def test_real_faces_drawn_like_the_grid_are_the_floor_of_the_grid_reading():
    gray = EYE_COLOURS.index("gray")
    faces = colour_coded_faces(4000)  # every pair in about equal numbers, every face of a pair alike
    exact = evaluate(PaintedGenerator(wild_eyes=-1), HalvesTagger().eval(), faces, samples_per_tag=1)
    rg = exact["frechet_tagger_real_grid"]
    assert rg["pairs"] == 132 and rg["n_per_set"] == exact["frechet_tagger"]["n_per_set"]
    # a generator that draws each pair as the real faces do scores the real grid's distance, not less
    assert rg["generated_over_real_grid"] == pytest.approx(1.0)
    # a generator that gets one eye colour wrong scores more than the real grid
    wild = evaluate(PaintedGenerator(wild_eyes=gray), HalvesTagger().eval(), faces, samples_per_tag=1)
    assert wild["frechet_tagger_real_grid"]["generated_over_real_grid"] > 1.5
    # tags as skewed as real data's: most faces share one pair, so a grid that asks every pair alike is far from
    # them even when it is drawn from real faces; the exact painter is still exactly at that floor
    faces = colour_coded_faces(8000)
    common = torch.rand(8000, generator=torch.Generator().manual_seed(1)) < 0.7
    skewed = FaceSet(faces.images.clone(), faces.hair.clone(), faces.eyes.clone(), faces.digest)
    skewed.hair[common], skewed.eyes[common] = 9, 8
    skewed.images[common] = paint(skewed.hair[common], skewed.eyes[common])
    r = evaluate(PaintedGenerator(wild_eyes=-1), HalvesTagger().eval(), skewed, samples_per_tag=1)
    assert r["frechet_tagger_real_grid"]["pairs"] == 132
    assert r["frechet_tagger_real_grid"]["ratio"] > 5 * rg["ratio"]
    assert r["frechet_tagger"]["ratio"] == pytest.approx(r["frechet_tagger_real_grid"]["ratio"])
    assert "Real faces drawn as the grid draws them (1 for each of 132 pairs" in markdown_report(r)


def test_real_faces_drawn_like_the_grid_give_the_chance_level_of_low_pair_diversity():
    faces = colour_coded_faces(8000)
    shade = torch.randint(-40, 41, (8000, 3, 1, 1), generator=torch.Generator().manual_seed(3))
    faces.images = (faces.images.int() + shade).clamp(0, 255).to(torch.uint8)  # faces of a pair now differ
    r = evaluate(PaintedGenerator(wild_eyes=-1), HalvesTagger().eval(), faces, samples_per_tag=8)
    div = r["diversity_ratio"]
    # the stand-in draws one face per pair, over and over: every pair is below 0.8, collapsed even
    compared = len(r["real_heldout"]["diversity_per_pair"])  # pairs with 2+ held-out real faces
    assert compared > 120 and len(div["pairs_below_0.8"]) == len(div["pairs_collapsed"]) == compared
    # real faces, 8 per pair as the grid asks, fall below 0.8 only by chance
    assert len(div["real_grid_pairs_below_0.8"]) < 20 and 0.25 < div["real_grid_min"] < 1
    assert "pairs below 0.8 by chance" in markdown_report(r)


def test_tagger_learns_a_toy_colour_code():
    torch.manual_seed(0)
    faces = colour_coded_faces(768)
    net, report = train_tagger(faces, epochs=4, batch_size=64, lr=3e-3, width=8, progress=False)
    h = report["heldout"]
    assert h["n"] == report["heldout_faces"] > 0
    assert h["hair"] > 0.5 and h["eyes"] > 0.5  # chance is 1/12 and 1/11


@pytest.mark.parametrize("balance, found", [(0.0, False), (1.0, True)])
def test_a_balanced_tagger_reads_a_colour_as_rare_as_gray_eyes(balance, found):
    """Eye colour 0 on 10 of 1,455 toy faces: argmax never pays for it unless its loss is weighted up."""
    faces = colour_coded_faces(1600)
    keep = (faces.eyes != 0) | (torch.arange(1600) % 20 == 0)
    faces = FaceSet(faces.images[keep], faces.hair[keep], faces.eyes[keep], faces.digest[keep])
    torch.manual_seed(0)
    net, report = train_tagger(faces, epochs=4, batch_size=64, lr=3e-3, width=8, progress=False, balance=balance)
    read = predict_logits(net, faces.images)[:, N_HAIR:].argmax(1)
    rare = faces.eyes == 0
    assert report["balance"] == balance and int(rare.sum()) == 10
    assert ((read[rare] == 0).float().mean() > 0.5) == found
    assert (read == faces.eyes).float().mean() > 0.8  # the common colours are read either way


def test_tagger_save_load_round_trip(tmp_path):
    net = TaggerNet(width=4, resolution=32).eval()
    save_tagger(net, tmp_path / "t.safetensors", {"note": "x"})
    loaded = load_tagger(tmp_path / "t.safetensors")
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(net(x), loaded(x), atol=0.05)  # stored in fp16


class ColourTagger(TaggerNet):
    """A stand-in tagger: confident 'blue' hair for bluish images, unsure otherwise; always 'red' eyes."""

    def __init__(self):
        super().__init__(width=2, resolution=16)

    def forward(self, x):
        x = self.prepare(x)
        blue = (x[:, 2].mean((1, 2)) > 0).float()
        logits = torch.zeros(x.shape[0], N_TAGS)
        logits[:, HAIR_COLOURS.index("blue")] = 10 * blue
        logits[:, N_HAIR + EYE_COLOURS.index("red")] = 10
        return logits


def write_adl_folder(root, rows):
    (root / "faces").mkdir(parents=True)
    with open(root / "tags.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "hair", "eyes"])
        for ident, hair, eyes, rgb in rows:
            Image.new("RGB", (24, 24), rgb).save(root / "faces" / f"{ident}.jpg")
            w.writerow([ident, hair, eyes])
    return root


def test_relabel_fills_blanks_resolves_several_and_reports_agreement(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGFACE_CACHE", str(tmp_path / "cache"))
    data = write_adl_folder(tmp_path / "adl", [
        (1, "", "red", (0, 0, 255)),          # blank hair, bluish: filled with blue
        (2, "blue;pink", "", (0, 0, 255)),    # several hair: resolved to blue; blank eyes: filled red
        (3, "", "red", (255, 0, 0)),          # reddish: tagger unsure of hair -> stays blank
        (4, "blue", "red", (0, 0, 255)),      # known: agrees
        (5, "pink", "red", (0, 0, 255)),      # known: disagrees on hair
    ])
    records = read_records(data)
    labels, report = relabel(records, ColourTagger(), min_conf=0.9)
    assert labels[0] == ({"blue"}, {"red"})
    assert labels[1] == ({"blue"}, {"red"})
    assert labels[2] == (set(), {"red"})
    assert labels[4] == ({"pink"}, {"red"})  # known labels are never overwritten
    assert report["usable_before"] == 2 and report["usable_after"] == 4 and report["labelled"] == 2
    assert report["agreement"]["all"] == {"hair": 0.5, "eyes": 1.0, "both": 0.5, "n": 2}
    out = tmp_path / "elsewhere" / "relabelled.csv"
    write_relabelled(records, labels, out)
    faces = load_folder(out, 32)  # a relabelled csv is a valid training input, wherever it lies
    assert len(faces) == 4 and set(faces.hair.tolist()) == {HAIR_COLOURS.index("blue"), HAIR_COLOURS.index("pink")}


def test_evaluate_writes_json_markdown_and_confusion(tmp_path):
    Trainer(tiny_recipe("seed-acgan-dcgan"), random_faces(), tmp_path / "run", progress=False).fit(1)
    gen = FaceGenerator.load(tmp_path / "run")
    real = colour_coded_faces(400, res=32)
    r = evaluate(gen, TaggerNet(width=4, resolution=32).eval(), real, samples_per_tag=2)
    assert r["samples_per_tag"] == 2 and len(r["generated"]["diversity_per_pair"]) == 132
    assert 0 <= r["generated"]["hair"] <= 1 and r["frechet_tagger"]["generated_vs_real"] >= 0
    assert sum(map(sum, r["confusion"]["hair"])) == 12 * 11 * 2
    mt = r["matched"]
    assert mt["n"] == len(real.subset(heldout_mask(real.digest, 0.1).nonzero().squeeze(1))) // 2
    assert set(mt["diversity_ratio_per_tag"]) <= {f"{c} hair" for c in HAIR_COLOURS} | {f"{c} eyes" for c in EYE_COLOURS}
    assert mt["frechet_generated_vs_real"] >= 0 and mt["frechet_real_vs_real"] >= 0
    write_report(r, tmp_path / "report")
    assert json.loads((tmp_path / "report" / "report.json").read_text())["step"] == 1
    assert "Matched set" in (tmp_path / "report" / "report.md").read_text()
    assert set(r["swd"]["generated_vs_real"]) == {32, 16} and r["swd"]["mean_generated_vs_real"] > 0
    assert "Sliced Wasserstein" in (tmp_path / "report" / "report.md").read_text()
    assert "not Inception FID" in (tmp_path / "report" / "report.md").read_text()
    with Image.open(tmp_path / "report" / "confusion.png") as im:
        assert im.width > 300


def test_tagger_predict_json_lines(tmp_path, capsys):
    save_tagger(TaggerNet(width=4, resolution=32).eval(), tmp_path / "t.safetensors")
    paths = []
    for i, rgb in enumerate([(0, 0, 255), (255, 255, 0)]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (40, 40), rgb).save(paths[-1])
    assert main(["tagger", "predict", *paths, "--json", "--top", "2", "--tagger", str(tmp_path / "t.safetensors")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in rows] == paths
    assert all(set(r) == {"path", "hair", "eyes", "hair_p", "eyes_p", "hair_top", "eyes_top"} for r in rows)
    assert all(r["hair"] in HAIR_COLOURS and 0 < r["hair_p"] <= 1 for r in rows)
    for r in rows:  # --top colours each, most likely first, led by the top colour
        assert len(r["hair_top"]) == len(r["eyes_top"]) == 2 and r["hair_top"][0] == [r["hair"], r["hair_p"]]
        assert r["hair_top"][0][1] >= r["hair_top"][1][1] and r["eyes_top"][0][0] == r["eyes"]
    assert main(["tagger", "predict", str(tmp_path / "missing.png"), "--tagger", str(tmp_path / "t.safetensors")]) == 2
