"""benchmarks/memorisation.py: does a generator fine-tuned on a subset copy it?"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tagface.checkpoint import default_model_path
from tagface.sampling import FaceGenerator

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from memorisation import share_nearest_in_first  # noqa: E402

SHIPPED = str(default_model_path())
HAIR, EYES = ["blue", "pink", "black", "white"], ["red", "green", "aqua"]


def test_share_nearest_counts_the_queries_closer_to_the_first_set():
    first, second = torch.randn(30, 8), torch.randn(30, 8) + 10
    queries = torch.cat([first[:20] + 0.01, second[:10] - 0.01])
    assert share_nearest_in_first(queries, first, second) == pytest.approx(20 / 30)
    assert share_nearest_in_first(queries, second, first) == pytest.approx(10 / 30)


def run(data, *args):
    return subprocess.run([sys.executable, str(BENCHMARKS / "memorisation.py"), "--data", str(data), *args],
                          capture_output=True, text=True)


def test_report_has_a_row_per_set_with_shares_and_distances(make_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TAGFACE_CACHE", str(tmp_path / "cache"))
    data = make_dataset([(i, HAIR[i % 4], EYES[i % 3]) for i in range(320)])
    result = run(data.path, "--limit", "100", "--queries", "40", SHIPPED)
    assert result.returncode == 0, result.stderr
    table = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ")]
    rows = table[2:]  # below the header and its rule
    step = FaceGenerator.load(SHIPPED).step
    assert [r[0].strip() for r in rows] == ["real faces outside both sets", f"{SHIPPED} (step {step})"]
    for row in rows:
        n, *values = (float(v) for v in row[1:])
        assert n == 40
        shares, distances = values[:2], values[2:]
        assert all(0 <= s <= 1 for s in shares) and len(distances) == 2 and all(d >= 0 for d in distances)


def test_a_subset_that_leaves_too_few_unseen_faces_is_a_one_line_error(make_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TAGFACE_CACHE", str(tmp_path / "cache"))
    data = make_dataset([(i, HAIR[i % 4], EYES[i % 3]) for i in range(250)])
    result = run(data.path, "--limit", "200", SHIPPED)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "--limit 200" in result.stderr
