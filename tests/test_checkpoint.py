import json
import os

import pytest
import safetensors.torch
import torch

import tagface.checkpoint as ckpt
from tagface.checkpoint import (
    SKELETON_KEY, atomic_save_tensors, atomic_write_text, flatten, load_state, load_tensors, read_metadata,
    save_state, unflatten,
)
from tagface.errors import TagfaceError


def _optimizer_state():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
    return model, opt


def _nested():
    model, opt = _optimizer_state()
    return {
        "step": 12,
        "name": "run-a",
        "ratio": 0.25,
        "flag": True,
        "nothing": None,
        "pair": (1, "two", torch.tensor([3.0])),
        "list": [torch.arange(4), [torch.ones(2, 2, dtype=torch.float16)], {"deep": torch.tensor(7)}],
        "G": model.state_dict(),
        "opt": opt.state_dict(),
        "rng": torch.Generator().manual_seed(3).get_state(),
        "empty": {},
    }


def assert_same(a, b, where="state"):
    if isinstance(a, dict):  # an OrderedDict state_dict may come back as a plain dict, in the same order
        assert isinstance(b, dict), where
    else:
        assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_flatten_unflatten_round_trip():
    state = _nested()
    tensors = {}
    skeleton = flatten(state, tensors, "s")
    # the skeleton is plain JSON and holds no tensors
    text = json.dumps(skeleton)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    assert len(tensors) == len(set(tensors))
    back = unflatten(json.loads(text), tensors)
    assert_same(state, back)
    # int keys of the optimizer state survive JSON (which only has string keys)
    assert list(back["opt"]["state"].keys()) == [0, 1]
    assert back["opt"]["param_groups"][0]["betas"] == (0.5, 0.999)


def test_flatten_rejects_unknown_types():
    with pytest.raises(TypeError, match="set"):
        flatten({"a": {1, 2}}, {})


def test_save_load_state_round_trip(tmp_path):
    state = _nested()
    path = tmp_path / "ck.safetensors"
    save_state(state, path, {"note": "hello"})
    back, meta = load_state(path)
    assert_same(state, back)
    assert meta["note"] == "hello" and SKELETON_KEY in meta
    # the restored optimizer state loads into a fresh optimizer and continues identically
    model, opt = _optimizer_state()
    model2 = torch.nn.Linear(3, 2)
    model2.load_state_dict(back["G"])
    opt2 = torch.optim.Adam(model2.parameters())
    opt2.load_state_dict(back["opt"])
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    assert torch.equal(model.weight, model2.weight)
    assert list(tmp_path.iterdir()) == [path]


def test_save_state_tolerates_aliased_tensors(tmp_path):
    shared = torch.randn(3)
    save_state({"a": shared, "b": shared}, tmp_path / "ck.safetensors")
    back, _ = load_state(tmp_path / "ck.safetensors")
    assert torch.equal(back["a"], shared) and torch.equal(back["b"], shared)


def test_save_state_tolerates_overlapping_views(tmp_path):
    t = torch.arange(10.0)
    save_state({"a": t, "b": t[2:]}, tmp_path / "ck.safetensors")
    back, _ = load_state(tmp_path / "ck.safetensors")
    assert torch.equal(back["b"], t[2:])


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path, monkeypatch):
    path = tmp_path / "ck.safetensors"
    save_state({"step": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    def broken_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\x10\x00\x00\x00partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save_file)  # imported when a save runs
    with pytest.raises(OSError, match="disk full"):
        save_state({"step": 2, "w": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]  # no temp file left behind
    monkeypatch.undo()
    state, _ = load_state(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))


def test_atomic_write_interrupt_also_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "weights.safetensors"

    def interrupted(tensors, filename, metadata=None):
        open(filename, "wb").write(b"xx")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_save_tensors({"w": torch.ones(2)}, path)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_that_cannot_start_names_the_file_asked_for(tmp_path, monkeypatch):
    def refused(prefix, suffix, dir):
        raise PermissionError(13, "Permission denied", f"{dir}/{prefix}abc{suffix}")

    monkeypatch.setattr(ckpt.tempfile, "mkstemp", refused)
    with pytest.raises(PermissionError) as err:
        atomic_write_text(tmp_path / "note.txt", "hi")
    assert err.value.filename == str(tmp_path / "note.txt") and err.value.strerror == "Permission denied"


def test_atomic_write_creates_parents_and_normal_permissions(tmp_path):
    path = tmp_path / "a" / "b" / "note.txt"
    atomic_write_text(path, "hi")
    assert path.read_text() == "hi"
    atomic_save_tensors({"w": torch.ones(2)}, tmp_path / "w.safetensors")  # safetensors itself writes 0600
    umask = os.umask(0)
    os.umask(umask)
    for written in (path, tmp_path / "w.safetensors"):
        assert (written.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_load_of_corrupt_file_is_tagface_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(TagfaceError, match="not a readable safetensors"):
        load_state(bad)
    with pytest.raises(TagfaceError):
        load_tensors(bad)


def test_load_of_truncated_file_is_tagface_error(tmp_path):
    path = tmp_path / "ck.safetensors"
    save_state({"w": torch.randn(64)}, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(TagfaceError):
        load_state(path)


def test_load_of_missing_file_is_tagface_error(tmp_path):
    with pytest.raises(TagfaceError, match="does not exist"):
        load_state(tmp_path / "nope.safetensors")
    with pytest.raises(TagfaceError, match="does not exist"):
        read_metadata(tmp_path / "nope.safetensors")


def test_weights_file_is_not_a_training_checkpoint(tmp_path):
    path = tmp_path / "w.safetensors"
    atomic_save_tensors({"w": torch.ones(2)}, path, {"k": "v"})
    assert read_metadata(path) == {"k": "v"}
    assert torch.equal(load_tensors(path)["w"], torch.ones(2))
    with pytest.raises(TagfaceError, match="weights file"):
        load_state(path)
