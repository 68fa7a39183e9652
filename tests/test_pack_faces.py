"""benchmarks/pack_faces.py: the archive that carries data to a lent GPU must unpack to a folder training reads."""
import subprocess
import sys
import tarfile
from pathlib import Path

from tagface.data import read_records

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pack_faces.py"
ROWS = [(i, hair, eyes) for i, (hair, eyes) in enumerate(
    [("blue", "red"), ("pink", "green"), ("black", "blue"), ("white", "aqua"), ("red", "brown"), ("green", "pink")])]


def pack(folder, out, *args):
    return subprocess.run([sys.executable, str(SCRIPT), str(folder), str(out), *args],
                          capture_output=True, text=True)


def unpack(archive, where) -> dict[str, tuple]:
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    return {r.id: (r.hair, r.eyes, r.path) for r in read_records(where)}


def test_original_subset_keeps_the_bytes_and_only_its_rows(make_dataset, tmp_path):
    data = make_dataset(ROWS)
    result = pack(data.path, tmp_path / "p.tar.gz", "--original", "--limit", "4", "--seed", "1")
    assert result.returncode == 0, result.stderr
    packed = unpack(tmp_path / "p.tar.gz", tmp_path / "out")
    assert len(packed) == 4  # the rows of images left behind are dropped, not pointed at nothing
    for ident, (hair, eyes, path) in packed.items():
        original = data.image_dir / f"{ident}.jpg"
        assert path.read_bytes() == original.read_bytes()
        assert (hair, eyes) == ({ROWS[int(ident)][1]}, {ROWS[int(ident)][2]})
    subsets = set()  # the seed draws the subset (6 choose 4: a few seeds must not all draw the same one)
    for seed in (2, 3, 4):
        assert pack(data.path, tmp_path / f"{seed}.tar.gz", "--original", "--limit", "4", "--seed", str(seed)).returncode == 0
        subsets.add(frozenset(unpack(tmp_path / f"{seed}.tar.gz", tmp_path / f"out{seed}")))
    assert len(subsets | {frozenset(packed)}) > 1


def test_webp_keeps_the_adl_header_and_every_row(make_dataset, tmp_path):
    data = make_dataset(ROWS, layout="adl")
    assert pack(data.path, tmp_path / "p.tar.gz", "--quality", "90").returncode == 0
    packed = unpack(tmp_path / "p.tar.gz", tmp_path / "out")
    assert sorted(packed) == [str(i) for i in range(len(ROWS))]
    assert all(path.suffix == ".webp" and path.exists() for _, _, path in packed.values())
    assert packed["2"][:2] == ({"black"}, {"blue"})


def test_negative_limit_is_a_one_line_error(make_dataset, tmp_path):
    data = make_dataset(ROWS)
    result = pack(data.path, tmp_path / "p.tar.gz", "--limit", "-1")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ["pack_faces: error: --limit -1: must be 0 (all images) or a positive count"]
    assert not (tmp_path / "p.tar.gz").exists()


def test_exclude_seed_leaves_out_the_last_runs_subset(make_dataset, tmp_path):
    data = make_dataset(ROWS)
    assert pack(data.path, tmp_path / "a.tar.gz", "--original", "--limit", "3", "--seed", "5").returncode == 0
    first = set(unpack(tmp_path / "a.tar.gz", tmp_path / "a"))
    result = pack(data.path, tmp_path / "b.tar.gz", "--original", "--limit", "3", "--seed", "1", "--exclude-seed", "5")
    assert result.returncode == 0, result.stderr
    second = set(unpack(tmp_path / "b.tar.gz", tmp_path / "b"))
    assert len(first) == len(second) == 3 and not first & second  # 6 faces: the other three, exactly


def test_exclude_seed_without_limit_is_a_one_line_error(make_dataset, tmp_path):
    data = make_dataset(ROWS)
    result = pack(data.path, tmp_path / "p.tar.gz", "--exclude-seed", "0")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "pack_faces: error: --exclude-seed 0: needs --limit, the size of the subset to leave out"]
    assert not (tmp_path / "p.tar.gz").exists()
