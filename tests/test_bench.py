"""`tagface bench`: every measurement runs on tiny settings and reports positive numbers in a stable shape."""
import json
import warnings

import pytest
import torch

from tagface.bench import (BenchConfig, bench_data_loading, device_sync, folder_items, run_bench, synthetic_faces,
                           time_calls, to_markdown, write_report, write_synthetic_jpegs)
from tagface.cli import main
from tagface.errors import TagfaceError
from tagface.data import load_folder

from test_models_losses import TINY

TINY_BENCH = dict(resolutions=[32], steps=1, warmup=1, gen_runs=2, gen_sizes=[1, 3], data_batches=2,
                  synthetic_images=12, overrides=[o for o in TINY if not o.startswith("train.resolution")])


@pytest.fixture(autouse=True)
def _restore_formatwarning(monkeypatch):
    # main() replaces warnings.formatwarning process-wide; put it back after each test
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)


def _positive(row: dict, key: str) -> None:
    assert row[key]["img_per_s"] > 0 and row[key]["step_ms_median"] > 0 and row[key]["steps"] >= 1


def test_bench_synthetic_all_measurements(tmp_path):
    threads = torch.get_num_threads()
    result = run_bench(BenchConfig(recipes=["seed-dcgan-cls", "seed-srresnet-dragan"], threads=1, **TINY_BENCH))
    assert torch.get_num_threads() == threads  # restored
    assert result["data_source"] == "synthetic" and result["machine"]["cpus"] >= 1
    assert [(r["recipe"], r["resolution"]) for r in result["training"]] == [("seed-dcgan-cls", 32),
                                                                            ("seed-srresnet-dragan", 32)]
    for row in result["training"]:
        assert row["batch_size"] == 4 and row["images_per_step"] == 4 * row["d_steps"]
        for key in ("tagface", "reference", "floor"):
            _positive(row, key)
        assert row["speedup_vs_reference"] > 0
        assert row["overhead_pct"] == pytest.approx(100 * (row["floor"]["img_per_s"] / row["tagface"]["img_per_s"] - 1))
        assert set(row["generation"]) == {"1", "3"} and all(g["ms_median"] > 0 for g in row["generation"].values())
        flops = row["gflop_per_step"]
        assert flops["tagface"] > 0 and row["arithmetic_ratio"] == pytest.approx(flops["reference"] / flops["tagface"])
        assert row["tagface"]["gflop_per_s"] == pytest.approx(flops["tagface"] * row["tagface"]["img_per_s"] / row["images_per_step"])
    assert result["matmul_gflop_per_s"] > 0
    (loading,) = result["data_loading"]
    assert loading["resolution"] == 32 and loading["batch_size"] == 4
    for key in ("cache", "cache_flip_only", "pil_dataloader"):
        _positive(loading, key)
    assert loading["speedup"] > 0

    json_path, md_path = write_report(result, tmp_path / "out")
    assert json.loads(json_path.read_text())["training"][0]["recipe"] == "seed-dcgan-cls"
    md = md_path.read_text()
    assert "| seed-srresnet-dragan | 32 | 4x1 | fp32 |" in md and "PIL-per-item DataLoader" in md and "3 faces" in md
    assert "| seed-dcgan-cls | 32 | fp32 | " in md and "reference / tagface" in md


def test_arithmetic_count_sees_the_fused_real_pass_and_reused_fakes():
    """The matching-aware D step scores the real images' features against three tag sets instead of running D
    per pair, and G's step no longer asks for D's weight gradients: tagface does less arithmetic than the tutorial
    loop. Reusing D's fakes in G's step removes one G forward more."""
    def ratio(*extra):
        cfg = {**TINY_BENCH, "overrides": TINY_BENCH["overrides"] + list(extra)}
        (row,) = run_bench(BenchConfig(recipes=["seed-dcgan-cls"], **cfg))["training"]
        return row["gflop_per_step"]
    plain, reused = ratio(), ratio("train.reuse_fakes=true")
    assert plain["reference"] == pytest.approx(reused["reference"])  # the tutorial loop ignores the switch
    assert plain["reference"] > 1.2 * plain["tagface"]
    assert reused["tagface"] < plain["tagface"]


def test_bench_reads_real_folders_through_the_cache(tmp_path):
    items = write_synthetic_jpegs(tmp_path / "faces", 10, 32)
    assert folder_items([str(tmp_path / "faces")]) == items  # tags.csv round-trips
    result = run_bench(BenchConfig(recipes=["seed-wgan-gp"], data=[str(tmp_path / "faces")],
                                   cache_dir=str(tmp_path / "cache"), **{**TINY_BENCH, "overrides":
                                   TINY_BENCH["overrides"] + ["train.d_steps=2"]}))
    assert result["data_source"].startswith("real: ")
    (row,) = result["training"]
    assert row["d_steps"] == 2 and row["images_per_step"] == 8
    for key in ("tagface", "reference", "floor"):
        _positive(row, key)
    assert list((tmp_path / "cache").glob("*.safetensors"))  # the tagface side read the uint8 cache
    assert len(load_folder(tmp_path / "faces", 32, tmp_path / "cache")) == 10


def test_speed_switches_apply_to_tagface_and_floor_but_not_the_reference(tmp_path, monkeypatch):
    import tagface.bench as bench
    seen = []
    original = bench.reference_step_fn

    def spy(trainer, loader):
        seen.append((trainer.recipe.train.precision, trainer.recipe.train.channels_last))
        return original(trainer, loader)
    monkeypatch.setattr(bench, "reference_step_fn", spy)
    cfg = {**TINY_BENCH, "overrides": TINY_BENCH["overrides"] + ["train.precision=bf16", "train.channels_last=true",
                                                                 "train.reuse_fakes=true"]}
    result = run_bench(BenchConfig(recipes=["seed-acgan-dcgan"], **cfg))
    (row,) = result["training"]
    assert row["speed_settings"] == {"precision": "bf16", "channels_last": True, "compile": False, "reuse_fakes": True}
    assert seen == [("fp32", False)]  # the tutorial loop: fp32, default memory format
    assert "| bf16 channels last reuse fakes |" in to_markdown(result)


def test_data_loading_with_resizing_reference(tmp_path):
    items = write_synthetic_jpegs(tmp_path / "j", 8, 48)  # the reference resizes 48 -> 32 per item
    row = bench_data_loading(synthetic_faces(8, 32), items, 32, 4, batches=2, warmup=0)
    assert row["pil_dataloader"]["img_per_s"] > 0 and row["cache"]["img_per_s"] > 0


def test_bad_settings_fail_before_any_timing():
    with pytest.raises(TagfaceError, match="not found"):
        run_bench(BenchConfig(recipes=["no-such-recipe"], **TINY_BENCH))
    with pytest.raises(TagfaceError, match="resolution 40"):
        run_bench(BenchConfig(recipes=["seed-dcgan-cls"], **{**TINY_BENCH, "resolutions": [40]}))
    with pytest.raises(TagfaceError, match="at least"):
        run_bench(BenchConfig(**{**TINY_BENCH, "steps": 0}))


def test_cli_bench_writes_json_and_markdown(tmp_path, capsys):
    sets = [a for o in TINY_BENCH["overrides"] for a in ("--set", o)]
    code = main(["bench", "--recipes", "seed-acgan-dcgan", "--resolutions", "32", "--steps", "1", "--warmup", "0",
                 "--gen-runs", "1", "--data-batches", "1", "--threads", "1", "--out", str(tmp_path / "b"), *sets])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "| seed-acgan-dcgan | 32 | 4x1 |" in out and "bench.json" in err
    result = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert result["settings"]["steps"] == 1 and result["training"][0]["tagface"]["img_per_s"] > 0
    assert to_markdown(result) == (tmp_path / "b" / "bench.md").read_text()


def test_timings_wait_for_queued_device_work():
    events = []
    times = time_calls(lambda: events.append("call"), runs=3, warmup=2, sync=lambda: events.append("sync"))
    # the warmup's queued work is waited for before the clock starts, then every timed call before it stops
    assert events == ["call", "call", "sync"] + ["call", "sync"] * 3 and len(times) == 3
    assert device_sync("cpu") is None  # nothing is queued on the CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cli_bench_on_cuda_without_cuda_is_one_line(capsys):
    assert main(["bench", "--device", "cuda", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--device cuda" in err and "--device cpu" in err


def test_reference_loop_calls_d_once_per_image_tag_pair(monkeypatch):
    """tagface scores the real images' features against three tag sets in one pass; the tutorial loop may not."""
    import tagface.bench as bench
    seen = []
    original = bench.reference_step_fn

    def spy(trainer, loader):
        step = original(trainer, loader)
        seen.append(trainer.objective.conditioning.shared_real_pass)
        return step

    monkeypatch.setattr(bench, "reference_step_fn", spy)
    run_bench(BenchConfig(recipes=["seed-dcgan-cls"], **TINY_BENCH))
    assert seen == [False]
