import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import tagface.data as data_mod
from tagface.data import augment, clean, decode, load_datasets, load_folder, read_records
from tagface.errors import TagfaceError
from tagface.tags import EYE_COLOURS, HAIR_COLOURS

ROWS = [
    (0, "blue", "red"),
    (1, "red", "green"),
    (2, "blonde", "blue"),
    (3, "green", "purple"),
    (4, "black", "yellow"),
]


def _colour_of(image):
    """Mean RGB of a decoded [3, R, R] uint8 image."""
    return image.float().mean(dim=(1, 2))


# --------------------------------------------------------------------------- read_records
def test_read_records_course_layout(make_dataset):
    ds = make_dataset(ROWS, layout="course")
    records = read_records(ds.path)
    assert [r.path.stem for r in records] == [str(i) for i, _, _ in ROWS]
    assert [(r.hair, r.eyes) for r in records] == [({h}, {e}) for _, h, e in ROWS]
    assert all(r.path.parent == ds.image_dir and r.path.exists() for r in records)


def test_read_records_course_layout_synonyms_and_case(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "tags.csv").write_text("7,Blond Hair grey eyes\n8,red eyes blue hair\n", encoding="utf-8")
    records = read_records(tmp_path)
    assert [(r.hair, r.eyes) for r in records] == [({"blonde"}, {"gray"}), ({"blue"}, {"red"})]


def test_read_records_adl_layout_blank_and_several(make_dataset):
    rows = [(10, "blue", "red"), (11, None, "green"), (12, ["blue", "red"], ["green", "purple"]), (13, "pink", None)]
    ds = make_dataset(rows, layout="adl")
    records = read_records(ds.path)
    assert [r.path.stem for r in records] == ["10", "11", "12", "13"]
    assert records[0].hair == {"blue"} and records[0].eyes == {"red"}
    assert records[1].hair == set() and records[1].eyes == {"green"}
    assert records[2].hair == {"blue", "red"} and records[2].eyes == {"green", "purple"}
    assert records[3].hair == {"pink"} and records[3].eyes == set()
    assert all(r.path.parent == ds.image_dir for r in records)


def test_read_records_of_a_spreadsheet_export_with_a_byte_order_mark(make_dataset):
    ds = make_dataset([(10, "blue", "red"), (11, "pink", "green")], layout="adl")
    tags = ds.path / "tags.csv"
    tags.write_bytes(b"\xef\xbb\xbf" + tags.read_bytes().replace(b"\n", b"\r\n"))
    records = read_records(ds.path)
    assert [(r.path.stem, r.hair, r.eyes) for r in records] == [("10", {"blue"}, {"red"}), ("11", {"pink"}, {"green"})]


@pytest.mark.parametrize("content", ["utf-16", "binary"])
def test_read_records_of_a_tags_file_that_is_not_utf8_names_it(make_dataset, content):
    ds = make_dataset(ROWS)
    tags = ds.path / "tags.csv"
    tags.write_bytes(tags.read_text().encode("utf-16") if content == "utf-16" else b"\x89PNG\r\n\x1a\n")
    with pytest.raises(TagfaceError, match=r"tags.csv is not UTF-8 text \(byte 0 is 0x(ff|89)\)"):
        read_records(ds.path)


def test_read_records_adl_pandas_float_ids(make_dataset):
    ds = make_dataset([("5.0", "blue", "red")], layout="adl")
    (record,) = read_records(ds.path)
    assert record.path == ds.image_dir / "5.jpg" and record.path.exists()


def test_read_records_empty_file_names_the_file(tmp_path):
    (tmp_path / "tags.csv").write_text("", encoding="utf-8")
    with pytest.raises(TagfaceError) as info:
        read_records(tmp_path)
    assert str(tmp_path / "tags.csv") in str(info.value)


def test_read_records_unknown_colour_names_file_and_line(make_dataset):
    ds = make_dataset([(0, "blue", "red"), (1, "bleu", "red")], layout="course")
    with pytest.raises(TagfaceError) as info:
        read_records(ds.path)
    msg = str(info.value)
    assert f"{ds.path / 'tags.csv'}:2" in msg and "bleu" in msg and "\n" not in msg


def test_read_records_unknown_colour_adl(make_dataset):
    ds = make_dataset([(0, "blue", "red"), (1, "blue", "yellowish")], layout="adl")
    with pytest.raises(TagfaceError) as info:
        read_records(ds.path)
    assert f"{ds.path / 'tags.csv'}:3" in str(info.value)


def test_missing_folder_and_missing_tags_file(tmp_path):
    with pytest.raises(TagfaceError, match="does not exist"):
        read_records(tmp_path / "nope")
    with pytest.raises(TagfaceError, match="no tags.csv"):
        read_records(tmp_path)


# --------------------------------------------------------------------------- clean
def test_clean_keeps_exactly_one_hair_and_one_eye(make_dataset):
    rows = [
        (0, "blue", "red"),                      # kept
        (1, None, "red"),                        # no hair
        (2, ["blue", "red"], "red"),             # several hair
        (3, ["blue", "pink"], "red"),            # several hair
        (4, "blue", None),                       # no eye
        (5, "blue", ["red", "green"]),           # bicoloured
        (6, "green", "blue"),                    # image missing
        (7, "pink", "aqua"),                     # kept
    ]
    ds = make_dataset(rows, layout="adl", missing=[6])
    kept, report = clean(read_records(ds.path))
    assert [r.path.stem for r in kept] == ["0", "7"]
    assert report.rows == 8 and report.kept == 2
    assert report.dropped == {
        "no hair colour": 1,
        "several hair colours": 2,
        "no eye colour": 1,
        "several eye colours (bicoloured)": 1,
        "missing image file": 1,
    }
    assert sum(report.dropped.values()) + report.kept == report.rows
    assert str(report).startswith("kept 2 of 8 rows")
    assert "2 several hair colours" in str(report)


# --------------------------------------------------------------------------- load_folder
@pytest.mark.parametrize("layout", ["course", "adl"])
@pytest.mark.parametrize("resolution", [16, 32])
def test_load_folder_decodes_to_resolution_with_matching_labels(make_dataset, layout, resolution):
    ds = make_dataset(ROWS, layout=layout)
    faces = load_folder(ds.path, resolution, verbose=False)
    assert faces.images.shape == (len(ROWS), 3, resolution, resolution)
    assert faces.images.dtype == torch.uint8
    assert faces.resolution == resolution and len(faces) == len(ROWS)
    assert faces.hair.tolist() == [HAIR_COLOURS.index(h) for _, h, _ in ROWS]
    assert faces.eyes.tolist() == [EYE_COLOURS.index(e) for _, _, e in ROWS]
    # every image still shows the solid colour written for its row (JPEG and resizing are near-lossless here)
    for i, (ident, _, _) in enumerate(ROWS):
        expected = torch.tensor(ds.rgb[str(ident)], dtype=torch.float32)
        assert torch.allclose(_colour_of(faces.images[i]), expected, atol=12), ident


def test_decode_centre_crops_non_square(tmp_path):
    arr = np.zeros((20, 30, 3), np.uint8)
    arr[:, :5] = (255, 0, 0)
    arr[:, 5:25] = (0, 255, 0)
    arr[:, 25:] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    out = decode(tmp_path / "wide.png", 20)
    assert out.shape == (3, 20, 20) and out.dtype == np.uint8
    assert (out[1] == 255).all() and (out[0] == 0).all() and (out[2] == 0).all()
    assert decode(tmp_path / "missing.png", 20) is None


def test_load_folder_second_call_reads_the_cache(make_dataset, cache_root, monkeypatch):
    ds = make_dataset(ROWS, layout="course")
    first = load_folder(ds.path, 16, verbose=False)
    cache_files = list((cache_root / "data").glob("*.safetensors"))
    assert len(cache_files) == 1
    with safe_open(str(cache_files[0]), framework="pt") as fh:
        assert {"images", "hair", "eyes"} <= set(fh.keys())
        assert torch.equal(fh.get_tensor("images"), first.images)

    def no_decode(*args, **kwargs):
        raise AssertionError("decode called although the cache exists")

    monkeypatch.setattr(data_mod, "decode", no_decode)
    second = load_folder(ds.path, 16, verbose=False)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.hair, second.hair) and torch.equal(first.eyes, second.eyes)

    # another resolution is another cache entry, so it must decode
    with pytest.raises(AssertionError, match="decode called"):
        load_folder(ds.path, 32, verbose=False)


def test_load_folder_cache_follows_tags_file_changes(make_dataset, cache_root):
    ds = make_dataset(ROWS, layout="course")
    assert len(load_folder(ds.path, 16, verbose=False)) == len(ROWS)
    tags = ds.path / "tags.csv"
    tags.write_text("\n".join(tags.read_text().splitlines()[:3]) + "\n")
    assert len(load_folder(ds.path, 16, verbose=False)) == 3
    assert len(list((cache_root / "data").glob("*.safetensors"))) == 2


def test_load_folder_explicit_cache_dir(make_dataset, tmp_path, cache_root):
    ds = make_dataset(ROWS, layout="adl")
    load_folder(ds.path, 16, cache_dir=tmp_path / "mycache", verbose=False)
    assert len(list((tmp_path / "mycache").glob("*.safetensors"))) == 1
    assert not (cache_root / "data").exists()


def test_load_folder_skips_unreadable_first_image(make_dataset, cache_root):
    ds = make_dataset(ROWS, layout="course", unreadable=0)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\)") as record:
        faces = load_folder(ds.path, 16, verbose=False)
    assert "0.jpg" in str(record[0].message)
    assert len(faces) == len(ROWS) - 1
    assert faces.hair.tolist() == [HAIR_COLOURS.index(h) for _, h, _ in ROWS[1:]]
    (cache_file,) = (cache_root / "data").glob("*.safetensors")
    with safe_open(str(cache_file), framework="pt") as fh:
        assert fh.metadata()["skipped"] == "1"


def test_load_folder_skips_unreadable_image_in_the_middle(make_dataset):
    ds = make_dataset(ROWS, layout="adl", unreadable=2)
    with warnings.catch_warnings(record=True) as caught:  # not pytest.warns: it would mask the ValueError
        warnings.simplefilter("always")
        faces = load_folder(ds.path, 16, verbose=False)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "skipped 1 unreadable image(s)" in messages[0] and "2.jpg" in messages[0]
    assert len(faces) == len(ROWS) - 1
    assert faces.hair.tolist() == [HAIR_COLOURS.index(h) for i, h, _ in ROWS if i != 2]


def test_load_folder_all_unreadable_is_an_error(make_dataset):
    ds = make_dataset([(0, "blue", "red")], unreadable=0)
    with pytest.warns(UserWarning, match="unreadable"):
        with pytest.raises(TagfaceError, match="none of 1 images"):
            load_folder(ds.path, 16, verbose=False)


def test_load_folder_empty_tags_file_names_it(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "tags.csv").write_text("", encoding="utf-8")
    with pytest.raises(TagfaceError, match="empty") as info:
        load_folder(tmp_path, 16, verbose=False)
    assert str(tmp_path / "tags.csv") in str(info.value)


def test_load_folder_unknown_colour_names_the_file(make_dataset):
    ds = make_dataset([(0, "blue", "red"), (1, "mauve", "red")], layout="course")
    with pytest.raises(TagfaceError, match="mauve") as info:
        load_folder(ds.path, 16, verbose=False)
    assert str(ds.path / "tags.csv") in str(info.value)


def test_load_folder_no_usable_rows(make_dataset):
    ds = make_dataset([(0, ["blue", "red"], "red")], layout="adl")
    with pytest.raises(TagfaceError, match="no usable images"):
        load_folder(ds.path, 16, verbose=False)


def test_load_datasets_combines_folders(make_dataset):
    a = make_dataset(ROWS, layout="course", name="a")
    b_rows = [(20, "pink", "aqua"), (21, "white", "gray")]
    b = make_dataset(b_rows, layout="adl", name="b")
    faces = load_datasets([a.path, b.path], 16, verbose=False)
    assert len(faces) == len(ROWS) + len(b_rows)
    assert faces.images.shape == (len(ROWS) + len(b_rows), 3, 16, 16)
    assert faces.hair.tolist() == [HAIR_COLOURS.index(h) for _, h, _ in ROWS + b_rows]
    assert faces.eyes.tolist() == [EYE_COLOURS.index(e) for _, _, e in ROWS + b_rows]
    with pytest.raises(TagfaceError):
        load_datasets([], 16)


# --------------------------------------------------------------------------- augment
def _batch(n=6, r=8):
    return torch.rand(n, 3, r, r, generator=torch.Generator().manual_seed(42)) * 2 - 1


def test_augment_keeps_shape():
    x = _batch()
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= -1 - 1e-5 and out.max() <= 1 + 1e-5


def test_augment_flip_only_mirrors_the_masked_items():
    x = _batch(n=16)
    out = augment(x.clone(), torch.Generator().manual_seed(5), flip=True, rotate_deg=0)
    mask = torch.rand(16, generator=torch.Generator().manual_seed(5)) < 0.5
    assert 0 < mask.sum() < 16  # the seed flips some but not all
    for i in range(16):
        expected = x[i].flip(-1) if mask[i] else x[i]
        assert torch.equal(out[i], expected), i


def test_augment_without_flip_or_rotation_is_identity():
    x = _batch()
    assert torch.equal(augment(x, torch.Generator().manual_seed(0), flip=False, rotate_deg=0), x)


def test_augment_is_reproducible_and_rotation_changes_pixels():
    x = _batch()
    a = augment(x, torch.Generator().manual_seed(9), flip=False, rotate_deg=5)
    b = augment(x, torch.Generator().manual_seed(9), flip=False, rotate_deg=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, x)


def test_tags_without_a_comma_after_the_id_name_the_line(make_dataset):
    ds = make_dataset([(0, "blue", "red")])
    (ds.path / "tags.csv").write_text("0;blue hair red eyes\n")  # a spreadsheet's semicolons
    with pytest.raises(TagfaceError, match=r"tags.csv:1: no comma after the id in '0;blue hair red eyes'"):
        read_records(ds.path)
    (ds.path / "tags.csv").write_text("id,hair\n0,blue\n")  # an adl header without its eyes column
    with pytest.raises(TagfaceError, match="needs both a 'hair' and an 'eyes' column"):
        read_records(ds.path)


def test_a_damaged_cache_file_is_decoded_again(make_dataset, tmp_path):
    ds = make_dataset([(i, "blue", "red") for i in range(3)])
    first = load_folder(ds.path, 16, tmp_path / "cache", verbose=False)
    (cache_file,) = (tmp_path / "cache").glob("*.safetensors")
    cache_file.write_bytes(b"junk")
    with pytest.warns(UserWarning, match="unreadable"):
        again = load_folder(ds.path, 16, tmp_path / "cache", verbose=False)
    assert torch.equal(first.images, again.images)
    assert cache_file.stat().st_size > 100  # written again


def test_read_face_says_why_an_image_a_user_named_cannot_be_read(tmp_path):
    from tagface.data import read_face
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(TagfaceError, match=r"notes.png cannot be read as an image \(cannot identify image file"):
        read_face(tmp_path / "notes.png", 32)
    with pytest.raises(TagfaceError, match="is a folder"):
        read_face(tmp_path, 32)
    with pytest.raises(TagfaceError, match="does not exist"):
        read_face(tmp_path / "missing.png", 32)
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "ok.png")
    assert read_face(tmp_path / "ok.png", 32).shape == (3, 32, 32)
