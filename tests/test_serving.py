"""The studio's JSON API and page (tagface serve), on a tiny generator made once for the module."""
from __future__ import annotations

import base64
import io
import re
import threading
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

with warnings.catch_warnings():  # starlette >= 1.x suggests httpx2 over httpx; either works here
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from tagface.sampling import FaceGenerator  # noqa: E402
from tagface.serving import MAX_FACES, FaceRef, create_app, slerp  # noqa: E402
from tagface.tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, N_TAGS  # noqa: E402
from tagface.training import Trainer  # noqa: E402

from test_models_losses import random_faces, tiny_recipe  # noqa: E402


@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> FaceGenerator:
    run = tmp_path_factory.mktemp("studio-run")
    Trainer(tiny_recipe("seed-acgan-dcgan"), random_faces(), run, progress=False).fit(1)
    return FaceGenerator.load(run)


@pytest.fixture(scope="module")
def client(gen):
    with TestClient(create_app(gen, max_concurrent=2, queue=4, wait_s=2.0)) as c:
        yield c


def decode(data_url: str, kind: str = "png") -> Image.Image:
    prefix = f"data:image/{kind};base64,"
    assert data_url.startswith(prefix)
    im = Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix):])))
    im.load()
    return im


def pixels(data_url: str) -> np.ndarray:
    return np.asarray(decode(data_url).convert("RGB"))


def post(client, path, body, status=200):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    return r.json()


# ------------------------------------------------------------------ generate
def test_generate_returns_n_pngs_of_the_models_resolution(client, gen):
    out = post(client, "/api/generate", {"hair": "blue", "eyes": "red", "n": 3, "seed": 11, "truncation": 0.8})
    assert (out["seed"], out["hair"], out["eyes"], out["truncation"]) == (11, "blue", "red", 0.8)
    assert len(out["images"]) == 3 and len(out["faces"]) == 3
    for url in out["images"]:
        im = decode(url)
        assert im.format == "PNG" and im.size == (gen.resolution, gen.resolution) and im.mode == "RGB"
    assert [f["index"] for f in out["faces"]] == [0, 1, 2] and all(f["batch"] == 3 for f in out["faces"])


def _bright_is_white_reader(threshold: float):
    """Reads faces brighter than `threshold` as white hair, the rest as pink; every face's eyes as black."""
    def read(images: np.ndarray) -> np.ndarray:
        bright = np.asarray(images, np.float32).mean((1, 2, 3)) > threshold
        logits = np.zeros((len(images), N_TAGS), np.float32)
        logits[:, HAIR_COLOURS.index("white")], logits[:, HAIR_COLOURS.index("pink")] = bright, ~bright
        logits[:, N_HAIR + EYE_COLOURS.index("black")] = 1.0
        return logits
    return read


def test_strict_tags_redraws_misread_faces_and_names_the_seed_of_each(client, gen, monkeypatch):
    from tagface.tags import Tags
    body = {"hair": "white", "eyes": "black", "n": 8, "seed": 3}  # colours the tiny run's random faces have
    assert gen.freq.hair[HAIR_COLOURS.index("white")] > 0 and gen.freq.eyes[EYE_COLOURS.index("black")] > 0
    plain = gen.generate(Tags("white", "black"), 8, seed=3)
    means = plain.float().mean((1, 2, 3)).sort().values
    threshold = float(means[2] + means[3]) / 2  # the three darkest plain faces read as pink hair
    monkeypatch.setattr(client.app.state.studio, "_reader", _bright_is_white_reader(threshold))
    out = post(client, "/api/generate", {**body, "strict_tags": True})
    seeds = [f["seed"] for f in out["faces"]]
    misread = (plain.float().mean((1, 2, 3)) <= threshold).tolist()
    assert [s != 3 for s in seeds] == misread and sum(misread) == 3  # exactly the misread faces were drawn again
    assert any("strict tags: the tagger misread " + str(sum(misread)) + " of 8 faces" in note for note in out["notes"])
    for i, face in enumerate(out["faces"]):  # each reference draws its face again, without strict_tags
        again = post(client, "/api/generate", {**body, "seed": face["seed"], "n": face["batch"]})
        assert again["images"][face["index"]] == out["images"][i]
        assert np.asarray(pixels(out["images"][i]), np.float32).mean() > threshold  # read as white hair
    assert post(client, "/api/generate", {**body, "strict_tags": True})["images"] == out["images"]


def test_same_seed_same_faces_other_hair_other_faces(client, gen):
    body = {"hair": "blue", "eyes": "red", "n": 4, "seed": 5}
    a, b = post(client, "/api/generate", body), post(client, "/api/generate", body)
    assert a["images"] == b["images"]
    recoloured = post(client, "/api/generate", {**body, "hair": "pink"})
    assert recoloured["seed"] == 5 and recoloured["hair"] == "pink"
    assert all(not np.array_equal(pixels(x), pixels(y)) for x, y in zip(a["images"], recoloured["images"]))
    other_seed = post(client, "/api/generate", {**body, "seed": 6})
    assert other_seed["images"] != a["images"]
    # the same faces `tagface generate` draws for that seed
    from tagface.tags import Tags
    cli = gen.generate(Tags("blue", "red"), 4, seed=5)
    assert np.array_equal(pixels(a["images"][2]), cli[2].permute(1, 2, 0).numpy())


def test_server_picks_and_returns_a_seed_and_spellings_are_canonical(client):
    out = post(client, "/api/generate", {"hair": "Blond", "eyes": "grey", "n": 1})
    assert isinstance(out["seed"], int) and out["seed"] >= 0
    assert (out["hair"], out["eyes"]) == ("blonde", "gray")
    again = post(client, "/api/generate", {"hair": "blonde", "eyes": "gray", "n": 1, "seed": out["seed"]})
    assert again["images"] == out["images"]


def test_a_colour_the_training_data_lacks_comes_with_a_note(client, gen):
    """The studio run trained on 12 random faces, so some hair colours never occurred; asking for one says so."""
    absent = [c for c, f in zip(HAIR_COLOURS, gen.freq.hair) if f == 0]
    present = [c for c, f in zip(HAIR_COLOURS, gen.freq.hair) if f > 0]
    eyes = next(c for c, f in zip(EYE_COLOURS, gen.freq.eyes) if f > 0)
    out = post(client, "/api/generate", {"hair": absent[0], "eyes": eyes, "n": 1, "seed": 0})
    assert out["notes"] == [f"'{absent[0]} hair' never occurs in this model's training data: expect another hair colour"]
    assert post(client, "/api/generate", {"hair": present[0], "eyes": eyes, "n": 1, "seed": 0})["notes"] == []


def test_random_resolves_to_vocabulary_deterministically_per_seed(client):
    seen = set()
    for seed in range(12):
        a = post(client, "/api/generate", {"hair": "random", "eyes": "random", "n": 1, "seed": seed})
        b = post(client, "/api/generate", {"n": 1, "seed": seed})  # random is the default
        assert a["hair"] in HAIR_COLOURS and a["eyes"] in EYE_COLOURS
        assert (a["hair"], a["eyes"], a["images"]) == (b["hair"], b["eyes"], b["images"])
        assert a["faces"][0]["hair"] == a["hair"] and any("sampled" in n for n in a["notes"])
        seen.add(a["hair"])
    assert len(seen) > 1  # it does depend on the seed
    one = post(client, "/api/generate", {"hair": "aqua", "eyes": "random", "n": 1, "seed": 3})
    assert one["hair"] == "aqua" and one["eyes"] in EYE_COLOURS


# ------------------------------------------------------------------ errors
def test_unknown_colour_is_422_naming_the_allowed_colours(client):
    r = client.post("/api/generate", json={"hair": "bleu", "eyes": "red", "n": 2})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "bleu" in detail and "did you mean 'blue'" in detail
    assert all(c in detail for c in HAIR_COLOURS)
    r = client.post("/api/generate", json={"hair": "blue", "eyes": "plaid"})
    assert r.status_code == 422 and "allowed eye colours" in r.json()["detail"]


@pytest.mark.parametrize("body, words", [
    ({"n": MAX_FACES + 1}, ["n", str(MAX_FACES)]),
    ({"n": 0}, ["n", "1"]),
    ({"truncation": 0}, ["truncation"]),
    ({"truncation": 2.5}, ["truncation", "2"]),
    ({"seed": -1}, ["seed"]),
    ({"n": "many"}, ["n", "integer"]),
    ({"hiar": "blue"}, ["hiar", "not permitted"]),
    ({"hair": "b" * 10_000}, ["hair", "at most 32 characters"]),
])
def test_out_of_range_or_unknown_fields_are_422(client, body, words):
    r = client.post("/api/generate", json=body)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, str) and all(w in detail for w in words), detail


def test_a_nan_or_infinite_number_is_422_not_a_server_error(client):
    for word in ("NaN", "Infinity", "-Infinity"):  # Python's JSON reads these; JSON cannot write them back
        r = client.post("/api/generate", content=f'{{"n": 1, "truncation": {word}}}'.encode(),
                        headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["detail"].startswith("truncation:"), r.text
        assert all("input" not in err for err in r.json()["errors"])


def test_malformed_json_and_missing_body_are_422(client):
    r = client.post("/api/generate", content=b'{"hair": "blue",', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = client.post("/api/generate")
    assert r.status_code == 422 and "body is missing" in r.json()["detail"]
    r = client.post("/api/generate", content=b'{"hair": "blue"}', headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422 and "Content-Type: application/json" in r.json()["detail"]  # curl -d without -H
    r = client.post("/api/vary", json={"seed": 1, "batch": 2, "index": 2})
    assert r.status_code == 422 and "index 2 is not below batch 2" in r.json()["detail"]


def test_excess_load_gets_503_with_retry_after(gen):
    app = create_app(gen, max_concurrent=1, queue=0, wait_s=0.05)
    gate = app.state.studio.gate
    with TestClient(app) as c:
        with gate.slot():  # the only slot is taken: the request waits 0.05 s, then is shed
            r = c.post("/api/generate", json={"n": 1, "seed": 1})
        assert r.status_code == 503 and r.headers["Retry-After"] == "1" and "busy" in r.json()["detail"]
        assert c.post("/api/generate", json={"n": 1, "seed": 1}).status_code == 200  # and recovers
        assert gate.in_flight == 0


def test_admission_is_bounded_beyond_the_queue(gen):
    """With the slot taken and the one waiting place filled, a further request is refused at once, not queued."""
    import time
    app = create_app(gen, max_concurrent=1, queue=0, wait_s=5.0)
    gate, results = app.state.studio.gate, {}
    with TestClient(app) as c:
        with gate.slot():
            waiting = threading.Thread(target=lambda: results.setdefault("w", c.post("/api/generate", json={"n": 1})))
            waiting.start()
            deadline = time.monotonic() + 5
            while gate.in_flight == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert gate.in_flight == 1
            t0 = time.monotonic()
            shed = c.post("/api/generate", json={"n": 1})
            assert shed.status_code == 503 and "Retry-After" in shed.headers and time.monotonic() - t0 < 1
        waiting.join(10)
    assert results["w"].status_code == 200  # the waiting one ran once the slot was free


# ------------------------------------------------------------------ vary and interpolate
def test_vary_shapes_and_determinism(client, gen):
    base = post(client, "/api/generate", {"hair": "green", "eyes": "blue", "n": 3, "seed": 21})
    face = base["faces"][2]
    body = {**face, "strength": 0.4, "n": 5, "variation_seed": 99}
    out = post(client, "/api/vary", body)
    assert out["variation_seed"] == 99 and out["strength"] == 0.4 and (out["hair"], out["eyes"]) == ("green", "blue")
    assert len(out["images"]) == 5 and len(out["faces"]) == 5
    assert all(decode(u).size == (gen.resolution, gen.resolution) for u in out["images"])
    assert np.abs(pixels(out["base"]).astype(int) - pixels(base["images"][2]).astype(int)).max() <= 2
    assert all(not np.array_equal(pixels(u), pixels(out["base"])) for u in out["images"])
    assert post(client, "/api/vary", body)["images"] == out["images"]
    still = post(client, "/api/vary", {**body, "strength": 0})["images"][0]
    assert np.abs(pixels(still).astype(int) - pixels(out["base"]).astype(int)).max() <= 2
    ref = out["faces"][1]
    assert ref["steps"] == [{"seed": 99, "batch": 5, "index": 1, "strength": 0.4}]
    again = post(client, "/api/vary", {**ref, "n": 2})  # a variation can be varied again
    assert len(again["faces"][0]["steps"]) == 2 and np.abs(
        pixels(again["base"]).astype(int) - pixels(out["images"][1]).astype(int)).max() <= 2
    picked = post(client, "/api/vary", {"hair": "green", "eyes": "blue", "seed": 21, "batch": 3, "index": 0})
    assert len(picked["images"]) == 8 and isinstance(picked["variation_seed"], int)


def test_interpolate_strip_and_gif(client, gen):
    a = post(client, "/api/generate", {"hair": "blue", "eyes": "red", "n": 2, "seed": 1})["faces"][0]
    b = post(client, "/api/generate", {"hair": "pink", "eyes": "green", "n": 2, "seed": 2})["faces"][1]
    out = post(client, "/api/interpolate", {"a": a, "b": b, "frames": 6, "frame_ms": 80})
    assert len(out["frames"]) == 6
    assert all(decode(u).size == (gen.resolution, gen.resolution) for u in out["frames"])
    gif = decode(out["gif"], "gif")
    assert gif.n_frames == out["gif_frames"] == 2 * 6 - 2  # boomerang a -> b -> a
    assert gif.size == (2 * gen.resolution, 2 * gen.resolution) and gif.info.get("loop") == 0
    assert gif.info["duration"] == 80
    first = pixels(post(client, "/api/generate", {"hair": "blue", "eyes": "red", "n": 2, "seed": 1})["images"][0])
    assert np.abs(pixels(out["frames"][0]).astype(int) - first.astype(int)).max() <= 2

    forward = post(client, "/api/interpolate", {"a": a, "b": b, "frames": 3, "boomerang": False, "gif_scale": 1})
    g = decode(forward["gif"], "gif")
    assert len(forward["frames"]) == 3 and g.n_frames == 3 and g.size == (gen.resolution, gen.resolution)
    assert client.post("/api/interpolate", json={"a": a, "b": b, "frames": 1}).status_code == 422
    assert client.post("/api/interpolate", json={"a": a}).status_code == 422


def test_slerp_hits_both_ends_exactly():
    a, b = torch.randn(16), torch.randn(16)
    z = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.equal(z[0], a) and torch.equal(z[-1], b) and z.shape == (5, 16)
    same = slerp(a, a.clone(), torch.linspace(0, 1, 3))
    assert torch.allclose(same, a.expand(3, -1))


def test_faceref_round_trips():
    ref = FaceRef(hair="blue", eyes="red", seed=3, batch=4, index=3, truncation=0.7)
    assert FaceRef.model_validate(ref.model_dump()) == ref


# ------------------------------------------------------------------ page, vocabulary, health, docs
def test_vocabulary_and_health(client, gen):
    v = client.get("/api/vocabulary").json()
    assert v["hair"] == list(HAIR_COLOURS) and v["eyes"] == list(EYE_COLOURS) and v["random"] == "random"
    assert set(v["swatches"]["hair"]) == set(HAIR_COLOURS) and set(v["swatches"]["eyes"]) == set(EYE_COLOURS)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in v["swatches"]["hair"].values())
    assert v["limits"]["max_faces"] == MAX_FACES and v["model"]["resolution"] == gen.resolution
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["max_concurrent"] == 2 and h["in_flight"] == 0


def test_index_page_is_served_and_uses_only_local_assets(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(u.startswith("/") or u.startswith("#") for u in refs), refs
    assert "http://" not in html and "https://" not in html and "//" not in "".join(refs).replace("/", "", 1)
    for url in (u for u in refs if u.startswith("/static/")):
        asset = client.get(url)
        assert asset.status_code == 200, url
        text = asset.text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a namespace, not a download
        assert "https://" not in text and "http://" not in text and "@import" not in text and "//cdn" not in text
    for url in ("/static/studio.js", "/static/studio.css"):
        assert url in refs


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    for path in ("/api/generate", "/api/vary", "/api/interpolate", "/api/vocabulary", "/api/health"):
        assert path in spec["paths"]
    gen_op = spec["paths"]["/api/generate"]["post"]
    assert {"200", "422", "503"} <= set(gen_op["responses"])
    props = spec["components"]["schemas"]["GenerateRequest"]["properties"]
    assert all(props[k].get("description") for k in ("hair", "eyes", "n", "seed", "truncation"))
    ours = {name: schema for name, schema in spec["components"]["schemas"].items()
            if name not in ("HTTPValidationError", "ValidationError")}  # FastAPI's own
    undescribed = [f"{name}.{field}" for name, schema in ours.items()
                   for field, prop in schema.get("properties", {}).items() if not prop.get("description")]
    assert len(ours) >= 10 and undescribed == []
