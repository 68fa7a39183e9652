"""Face cropping: the square around a detection, the data folder it writes (which the tagger and trainer read),
bad input, and the real lbpcascade_animeface on real faces when ../shared/data is beside the repository."""
import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagface.cli import main
from tagface.crop import Box, CascadeDetector, crop_faces, find_pictures, square_around
from tagface.data import read_records
from tagface.errors import TagfaceError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CASCADE = SHARED / "lbpcascade_animeface.xml"
RED = (255, 0, 0)


def test_square_around_centres_raises_moves_inside_and_shrinks():
    assert square_around(Box(40, 50, 20, 20), 200, 100) == Box(40, 50, 20, 20)
    assert square_around(Box(40, 50, 20, 20), 200, 100, scale=2) == Box(30, 40, 40, 40)
    assert square_around(Box(40, 50, 20, 20), 200, 100, scale=2, shift=0.5) == Box(30, 30, 40, 40)
    assert square_around(Box(40, 50, 20, 10), 200, 100) == Box(40, 45, 20, 20)  # square on the longer side
    assert square_around(Box(0, 0, 30, 30), 200, 100, scale=2) == Box(0, 0, 60, 60)  # moved inside, not cut
    assert square_around(Box(180, 80, 20, 20), 200, 100, scale=2) == Box(160, 60, 40, 40)
    assert square_around(Box(10, 10, 80, 80), 200, 100, scale=2) == Box(0, 0, 100, 100)  # the picture's height


def red_boxes(rgb: np.ndarray) -> list[Box]:
    """A stand-in detector: every pure red column band is a face (enough for pictures of separate squares)."""
    red = np.all(rgb == RED, axis=2)
    cols = np.flatnonzero(red.any(0))
    if not len(cols):
        return []
    boxes, start = [], cols[0]
    for a, b in zip(cols, list(cols[1:]) + [None]):
        if b is None or b != a + 1:
            rows = np.flatnonzero(red[:, start:a + 1].any(1))
            boxes.append(Box(int(start), int(rows[0]), int(a + 1 - start), int(rows[-1] + 1 - rows[0])))
            start = b
    return boxes


def picture(path: Path, squares: list[tuple[int, int, int]], size=(200, 120)):
    img = Image.new("RGB", size, (20, 120, 200))
    for x, y, side in squares:
        img.paste(Image.new("RGB", (side, side), RED), (x, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def test_crop_writes_a_data_folder_the_tagger_reads(tmp_path, capsys):
    pics = tmp_path / "pics"
    picture(pics / "a" / "one.png", [(10, 10, 40), (100, 30, 60)])
    picture(pics / "b" / "one.png", [(50, 20, 50)])  # the same file name in another folder
    picture(pics / "none.png", [])
    (pics / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "faces"
    report = crop_faces(find_pictures([pics]), out, red_boxes, size=32)
    assert report == {"pictures": 4, "unreadable": 1, "without_face": 1, "faces": 3, "shrunk": 0}
    faces = sorted(p.name for p in (out / "faces").iterdir())
    assert len(faces) == 3 and len(set(faces)) == 3
    for f in faces:  # each face is the red square, resized
        arr = np.asarray(Image.open(out / "faces" / f))
        assert arr.shape == (32, 32, 3) and (np.abs(arr.astype(int) - RED).sum(2) < 30).mean() > 0.95
    crops = list(csv.DictReader(open(out / "crops.csv")))
    first = next(r for r in crops if r["source"].endswith(str(Path("a") / "one.png")) and r["id"].endswith("-0"))
    assert (first["face_w"], first["face_x"]) == ("60", "100")  # the largest face first
    records = read_records(out)  # tags.csv: every face, colours blank for the tagger to fill in
    assert sorted(r.path.name for r in records) == faces and all(not r.hair and not r.eyes for r in records)
    assert main(["tagger", "relabel", "--data", str(out), "--out", str(out / "labelled.csv"),
                 "--min-confidence", "0"]) == 0
    labelled = read_records(out / "labelled.csv")
    assert len(labelled) == 3 and all(len(r.hair) == 1 and len(r.eyes) == 1 for r in labelled)


def test_crop_keeps_labels_and_does_not_read_its_own_output(tmp_path):
    pics = tmp_path / "pics"
    picture(pics / "p.png", [(10, 10, 40)])
    out = pics / "faces-out"  # inside the folder it reads
    crop_faces(find_pictures([pics], skip=out), out, red_boxes, size=16)
    (out / "tags.csv").write_text("id,hair,eyes\np-0,blue,red\n")
    with pytest.raises(TagfaceError, match="tags.csv exists"):
        crop_faces(find_pictures([pics], skip=out), out, red_boxes, size=16)
    assert "blue" in (out / "tags.csv").read_text()
    again = find_pictures([pics], skip=out)
    assert again == [pics / "p.png"]
    assert crop_faces(again, out, red_boxes, size=16, overwrite=True)["faces"] == 1


def run_error(capsys, argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("tagface: error: "), err
    return err[0]


def test_crop_command_bad_input(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("TAGFACE_CASCADE", raising=False)
    picture(tmp_path / "p.png", [(10, 10, 40)])
    line = run_error(capsys, ["crop", tmp_path / "p.png", "--out", tmp_path / "o"])
    assert "--cascade" in line and "TAGFACE_CASCADE" in line
    line = run_error(capsys, ["crop", tmp_path / "p.png", "--out", tmp_path / "o", "--cascade", tmp_path / "no.xml"])
    assert "no.xml does not exist" in line
    line = run_error(capsys, ["crop", tmp_path / "p.png", "--out", tmp_path / "o", "--cascade", tmp_path / "x",
                              "--scale", "0"])
    assert "--scale 0.0" in line
    assert not (tmp_path / "o").exists()


def test_crop_command_rejects_a_file_that_is_not_a_cascade(capsys, tmp_path):
    pytest.importorskip("cv2")
    picture(tmp_path / "p.png", [(10, 10, 40)])
    (tmp_path / "c.xml").write_text("<?xml version='1.0'?><opencv_storage></opencv_storage>")
    for cascade in (tmp_path / "c.xml", tmp_path / "p.png"):
        line = run_error(capsys, ["crop", tmp_path / "p.png", "--out", tmp_path / "o", "--cascade", cascade])
        assert f"{cascade} is not an OpenCV cascade file" in line


@pytest.mark.skipif(not CASCADE.exists(), reason="needs ../shared/data/lbpcascade_animeface.xml")
def test_crop_command_without_pictures(capsys, tmp_path):
    pytest.importorskip("cv2")
    line = run_error(capsys, ["crop", tmp_path / "nowhere", "--out", tmp_path / "o", "--cascade", CASCADE])
    assert "nowhere does not exist" in line
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    line = run_error(capsys, ["crop", tmp_path / "empty", "--out", tmp_path / "o", "--cascade", CASCADE])
    assert "no pictures (jpg, jpeg, png, webp or bmp) in" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not CASCADE.exists(), reason="needs ../shared/data/lbpcascade_animeface.xml")
def test_the_real_cascade_finds_real_anime_faces_and_not_a_blank_wall():
    pytest.importorskip("cv2")
    detect = CascadeDetector(CASCADE)
    faces = sorted((SHARED / "adl2017-faces" / "faces").glob("*.jpg"))[:10]
    found = 0
    for f in faces:
        canvas = Image.new("RGB", (480, 360), (235, 230, 220))
        canvas.paste(Image.open(f).convert("RGB").resize((192, 192), Image.LANCZOS), (200, 100))
        boxes = detect(np.asarray(canvas))
        centres = [(b.x + b.w / 2, b.y + b.h / 2) for b in boxes]
        assert all(200 <= x <= 392 and 100 <= y <= 292 for x, y in centres), boxes  # nothing on the wall
        found += bool(boxes)
    assert found >= 7, found
    assert detect(np.full((360, 480, 3), 230, np.uint8)) == []


def test_a_picture_too_large_to_open_safely_is_counted_unreadable(tmp_path, monkeypatch):
    picture(tmp_path / "pics" / "a.png", [(10, 10, 40)])
    picture(tmp_path / "pics" / "b.png", [(10, 10, 40)])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200 * 120 // 3)  # Pillow refuses pictures past twice this
    report = crop_faces(find_pictures([tmp_path / "pics"]), tmp_path / "out", red_boxes, size=16)
    assert report["unreadable"] == 2 and report["faces"] == 0
