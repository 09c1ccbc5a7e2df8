"""Tests for pdae.data: real digits, procedural shapes, image folders, Diff-AE LMDBs, splits, errors."""

from __future__ import annotations

import io
import math
import pickle
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from pdae.data import (
    BACKGROUNDS,
    COLOURS,
    SHAPE_ATTRIBUTES,
    DataError,
    build_dataset,
    dataset_fingerprint,
    random_hflip,
    split_indices,
)

DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # UCI digits per class (sklearn)


def _stack(ds, n=None):
    return torch.stack([ds[i][0] for i in range(len(ds) if n is None else n)])


def _assert_one_line_error(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


# ------------------------------------------------------------------------------------- digits

def test_digits_is_the_real_uci_set_mapped_to_unit_range():
    ds = build_dataset({"name": "digits", "image_size": 8}, split="all")
    ref = load_digits()
    assert len(ds) == 1797 and ds.num_classes == 10 and ds.class_names[3] == "3"
    assert np.bincount(ds.labels.numpy()).tolist() == DIGIT_COUNTS
    assert all(174 <= c <= 183 for c in DIGIT_COUNTS)
    x = _stack(ds)
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    torch.testing.assert_close(x[:, 0], torch.from_numpy(ref.images).float() / 8.0 - 1.0, rtol=0, atol=0)
    assert ds.attributes.shape == (1797, 0) and ds.image_size == 8 and ds.channels == 1


def _bilinear_upsample_np(a: np.ndarray, size: int) -> np.ndarray:
    """Independent separable bilinear resize (half-pixel centres, edge clamp) of [N, h, w]."""
    def matrix(n_in: int) -> np.ndarray:
        m = np.zeros((size, n_in))
        for o in range(size):
            c = min(max((o + 0.5) * n_in / size - 0.5, 0.0), n_in - 1.0)
            lo = int(math.floor(c))
            hi = min(lo + 1, n_in - 1)
            m[o, lo] += 1.0 - (c - lo)
            m[o, hi] += c - lo
        return m

    m = matrix(a.shape[-1])
    return np.einsum("oh,nhw,pw->nop", m, a, m)


def test_digits_resize_matches_independent_bilinear_and_grey_repeat():
    ds = build_dataset({"name": "digits", "image_size": 16, "channels": 3}, split="all")
    x = _stack(ds, 50)
    assert x.shape == (50, 3, 16, 16)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    expected = _bilinear_upsample_np(load_digits().images[:50] / 8.0 - 1.0, 16)
    np.testing.assert_allclose(x[:, 0].numpy(), expected, atol=1e-5)
    assert -1.0 <= x.min() and x.max() <= 1.0


def test_split_is_fixed_disjoint_and_covers_the_source():
    train = build_dataset({"name": "digits"}, split="train")
    test = build_dataset({"name": "digits"}, split="test")
    again = build_dataset({"name": "digits"}, split="test")
    assert (len(train), len(test)) == (1617, 180)
    assert set(train.source_indices).isdisjoint(test.source_indices)
    assert sorted([*train.source_indices, *test.source_indices]) == list(range(1797))
    assert np.array_equal(test.source_indices, again.source_indices)
    # golden: the seed-0 permutation (torch.randperm) fixes which images are held out
    assert test.source_indices[:6].tolist() == [10, 21, 26, 27, 34, 46]
    other = build_dataset({"name": "digits", "seed": 1}, split="test")
    assert not np.array_equal(test.source_indices, other.source_indices)
    targets = load_digits().target
    assert [test[i][1] for i in range(20)] == targets[test.source_indices[:20]].tolist()
    assert len(build_dataset({"name": "digits", "test_fraction": 0.2}, split="test")) == 359


def test_split_indices_rule_and_golden_values():
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist()
    assert split_indices(10, "test", 0.3, 0).tolist() == sorted(perm[:3]) == [1, 4, 7]
    assert split_indices(10, "train", 0.3, 0).tolist() == sorted(perm[3:])
    assert split_indices(10, "all", 0.3, 0).tolist() == list(range(10))


def test_num_images_cap_and_class_subset():
    train = build_dataset({"name": "digits"}, split="train")
    capped = build_dataset({"name": "digits", "num_images": 25}, split="train")
    assert np.array_equal(capped.source_indices, train.source_indices[:25])
    sub = build_dataset({"name": "digits", "class_subset": [3, "7"]}, split="train")
    keep = np.isin(train.labels.numpy(), [3, 7])
    assert np.array_equal(sub.source_indices, train.source_indices[keep])
    assert set(sub.labels.tolist()) == {3, 7} and sub.num_classes == 10


@pytest.mark.parametrize(
    ("spec", "split", "needle"),
    [
        ({"name": "digits", "colour": 1}, "train", "data.colour"),
        ({"name": "digits", "image_size": "16"}, "train", "data.image_size"),
        ({"name": "digits", "num_images": True}, "train", "data.num_images"),
        ({"name": "digits", "hflip": "yes"}, "train", "data.hflip"),
        ({"name": "digits", "channels": 2}, "train", "data.channels"),
        ({"name": "digits", "test_fraction": 1.0}, "train", "data.test_fraction"),
        ({"name": "digits", "class_subset": [12]}, "train", "data.class_subset"),
        ({"name": "imagenet"}, "train", "data.name"),
        ({"name": "folder"}, "train", "data.path"),
        ({"name": "shapes", "label_factor": "hue"}, "train", "data.label_factor"),
        ({"name": "lmdb", "path": "x", "variant": "cifar"}, "train", "data.variant"),
        ({"name": "digits"}, "val", "split"),
        ({"name": "digits", "test_fraction": 0.0}, "test", "selects no images"),
    ],
)
def test_bad_specs_raise_one_line_data_error(spec, split, needle):
    with pytest.raises(DataError) as exc_info:
        build_dataset(spec, split)
    assert isinstance(exc_info.value, ValueError)
    _assert_one_line_error(exc_info, needle)


# ------------------------------------------------------------------------------------- shapes

def test_shapes_are_deterministic_per_index():
    a = build_dataset({"name": "shapes", "num_images": 30}, split="all")
    b = build_dataset({"name": "shapes", "num_images": 30}, split="all")
    big = build_dataset({"name": "shapes", "num_images": 200}, split="all")
    other = build_dataset({"name": "shapes", "num_images": 30, "seed": 1}, split="all")
    xa, xb, xbig, xo = _stack(a), _stack(b), _stack(big, 30), _stack(other)
    assert xa.shape == (30, 3, 32, 32) and xa.dtype == torch.float32
    assert torch.equal(xa, xb) and torch.equal(xa, xbig)
    assert torch.equal(a.attributes, big.attributes[:30]) and torch.equal(a.labels, big.labels[:30])
    assert not torch.equal(xa, xo)
    assert -1.0 <= xa.min() and xa.max() <= 1.0
    assert a.attribute_names == list(SHAPE_ATTRIBUTES) and a.class_names == ["square", "circle", "triangle"]


def test_shapes_attributes_match_the_drawn_pixels():
    """Recover shape, size, colour, side and background from pixels alone; compare to the attributes."""
    ds = build_dataset({"name": "shapes", "num_images": 120}, split="all")
    attr = dict(zip(ds.attribute_names, ds.attributes.T.numpy().astype(bool)))
    size_px = ds.image_size
    area_ratio = {0: 4.0, 1: math.pi, 2: 2.0}  # area / s^2 of square, circle, triangle
    for i in range(len(ds)):
        img = (ds[i][0].numpy() + 1.0) / 2.0                          # [3, H, W] in [0, 1]
        bg = np.median(img.reshape(3, -1), axis=1)                    # background covers most pixels
        assert bool(bg.mean() < 0.5) == attr["dark_background"][i]
        assert any(np.allclose(bg, b) for b in BACKGROUNDS)
        far = np.unravel_index(np.abs(img - bg[:, None, None]).sum(0).argmax(), img.shape[1:])
        fg = img[:, far[0], far[1]]                                   # a fully covered pixel
        colour = int(np.argmin(np.abs(COLOURS - fg).sum(1)))
        assert np.allclose(fg, COLOURS[colour], atol=1e-5)
        assert [attr[n][i] for n in ("is_red", "is_green", "is_blue", "is_yellow")] == [k == colour for k in range(4)]
        ch = int(np.abs(COLOURS[colour] - bg).argmax())
        cover = (img[ch] - bg[ch]) / (COLOURS[colour][ch] - bg[ch])    # [H, W] coverage in [0, 1]
        area = cover.sum()
        s_px = ds.factors["size"][i] * size_px
        shape = min(area_ratio, key=lambda k: abs(area / s_px**2 - area_ratio[k]))
        assert [attr["is_square"][i], attr["is_circle"][i], attr["is_triangle"][i]] == [k == shape for k in range(3)]
        assert abs(area / s_px**2 / area_ratio[shape] - 1.0) < 0.1
        assert ds.labels[i].item() == shape
        cx = (cover.sum(0) * (np.arange(size_px) + 0.5)).sum() / area / size_px
        if abs(ds.factors["x"][i] - 0.5) > 0.02:
            assert bool(cx < 0.5) == attr["is_left"][i]
        assert attr["is_large"][i] == (ds.factors["size"][i] >= 0.185)
    counts = ds.attributes.sum(0)
    assert (counts[:7] > 0).all() and 0 < counts[7] < len(ds)  # every shape and colour occurs


def test_shapes_label_factor_and_class_subset():
    ds = build_dataset({"name": "shapes", "num_images": 60, "label_factor": "colour",
                        "class_subset": ["red"]}, split="all")
    assert ds.class_names == ["red", "green", "blue", "yellow"]
    assert (ds.labels == 0).all() and ds.attributes[:, SHAPE_ATTRIBUTES.index("is_red")].all()
    assert np.array_equal(ds.factors["colour"], ds.labels.numpy())


def test_shapes_are_fast():
    t0 = time.perf_counter()
    ds = build_dataset({"name": "shapes", "num_images": 10_000, "image_size": 32}, split="all")
    for i in range(len(ds)):
        ds[i]
    assert len(ds) == 10_000
    assert time.perf_counter() - t0 < 12.0


def test_random_hflip_uses_the_callers_generator():
    x = torch.arange(48, dtype=torch.float32).view(6, 1, 2, 4)
    flipped = random_hflip(x, torch.Generator().manual_seed(5))
    coins = torch.rand(6, generator=torch.Generator().manual_seed(5)) < 0.5
    for i in range(6):
        assert torch.equal(flipped[i], x[i].flip(-1) if coins[i] else x[i])
    assert torch.equal(random_hflip(flipped, torch.Generator().manual_seed(5)), x)
    assert not build_dataset({"name": "digits"}).hflip
    assert build_dataset({"name": "digits", "hflip": True}).hflip


# ------------------------------------------------------------------------------------- folder

def _save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path, **kwargs)
    return path


def _stripes(h: int, w: int) -> np.ndarray:
    """Left third red, middle third green, right third blue: a centre crop of a wide image is green."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 3, 0] = 255
    a[:, w // 3 : 2 * w // 3, 1] = 255
    a[:, 2 * w // 3 :, 2] = 255
    return a


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "imgs"
    _save(root / "a.png", _stripes(16, 48))
    _save(root / "b.png", np.full((32, 32, 3), (10, 200, 30)))
    _save(root / "c.jpg", np.full((20, 20, 3), 128), quality=100)
    _save(root / "sub" / "d.bmp", np.full((16, 16, 3), 255))
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_happy_path_resize_crop_labels_attributes(image_folder, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label,smiling,glasses\nb.png,dog,1,0\na.png,cat,-1,1\nc.jpg,dog,-1,0\n")
    ds = build_dataset({"name": "folder", "path": str(image_folder), "image_size": 16, "labels": str(labels)},
                       split="all")
    assert ds.files == ["a.png", "b.png", "c.jpg"]  # sorted, not recursive
    x = _stack(ds)
    assert x.shape == (3, 3, 16, 16)
    green = torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 16, 16)
    torch.testing.assert_close(x[0], green, rtol=0, atol=0)  # centre crop of the 48x16 stripes
    const = torch.tensor([10, 200, 30]).float().div(127.5).sub(1).view(3, 1, 1).expand(3, 16, 16)
    torch.testing.assert_close(x[1], const, rtol=0, atol=1.5 / 127.5)  # 32 -> 16 bilinear keeps a constant
    assert abs(x[2].mean().item() - (128 / 127.5 - 1)) < 2 / 127.5
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 1, 1]
    assert ds.attribute_names == ["smiling", "glasses"]
    assert ds.attributes.tolist() == [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]
    rec = build_dataset({"name": "folder", "path": str(image_folder), "image_size": 8, "recursive": True},
                        split="all")
    assert rec.files == ["a.png", "b.png", "c.jpg", "sub/d.bmp"] and rec.labels.tolist() == [-1] * 4
    torch.testing.assert_close(rec[3][0], torch.ones(3, 8, 8), rtol=0, atol=0)


def test_folder_convert_grey_to_rgb_only_when_asked(tmp_path):
    root = tmp_path / "grey"
    _save(root / "g.png", np.full((8, 8), 51))
    with pytest.raises(DataError) as exc_info:
        build_dataset({"name": "folder", "path": str(root), "image_size": 8}, split="all")
    _assert_one_line_error(exc_info, "g.png", "convert")
    ds = build_dataset({"name": "folder", "path": str(root), "image_size": 8, "convert": True}, split="all")
    torch.testing.assert_close(ds[0][0], torch.full((3, 8, 8), 51 / 127.5 - 1), rtol=0, atol=0)
    grey = build_dataset({"name": "folder", "path": str(root), "image_size": 8, "channels": 1}, split="all")
    assert grey[0][0].shape == (1, 8, 8)


def _folder_case(tmp_path: Path, case: str) -> tuple[dict, str]:
    root = tmp_path / "imgs"
    spec = {"name": "folder", "path": str(root), "image_size": 8}
    if case == "missing_folder":
        return spec, "imgs"
    root.mkdir()
    if case == "empty_folder":
        (root / "readme.txt").write_text("x")
        return spec, "imgs"
    _save(root / "ok.png", np.zeros((8, 8, 3)))  # one good image beside the bad one
    if case == "truncated_png":
        _save(root / "bad.png", np.random.default_rng(0).integers(0, 255, (32, 32, 3)))
        (root / "bad.png").write_bytes((root / "bad.png").read_bytes()[:300])
        return spec, "bad.png"
    if case == "truncated_jpg":
        _save(root / "bad.jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3)))
        (root / "bad.jpg").write_bytes((root / "bad.jpg").read_bytes()[:800])
        return spec, "bad.jpg"
    if case == "not_an_image":
        (root / "bad.png").write_bytes(b"definitely not a png file")
        return spec, "bad.png"
    if case == "rgba":
        _save(root / "alpha.png", np.zeros((8, 8, 4)))
        return spec, "alpha.png"
    if case == "rgb_for_one_channel":
        return {**spec, "channels": 1}, "ok.png"
    labels = tmp_path / "labels.csv"
    spec["labels"] = str(labels)
    if case == "labels_missing_row":
        _save(root / "two.png", np.zeros((8, 8, 3)))
        labels.write_text("file,label\nok.png,0\n")
        return spec, "two.png"
    if case == "labels_extra_row":
        labels.write_text("file,label\nok.png,0\nghost.png,1\n")
        return spec, "ghost.png"
    if case == "labels_bad_value":
        labels.write_text("file,smiling\nok.png,2\n")
        return spec, "labels.csv"
    assert case == "labels_file_missing"
    return spec, "labels.csv"


@pytest.mark.parametrize("case", [
    "missing_folder", "empty_folder", "truncated_png", "truncated_jpg", "not_an_image", "rgba",
    "rgb_for_one_channel", "labels_missing_row", "labels_extra_row", "labels_bad_value", "labels_file_missing",
])
def test_folder_errors_name_the_file_in_one_line(tmp_path, case):
    spec, needle = _folder_case(tmp_path, case)
    with pytest.raises(DataError) as exc_info:
        build_dataset(spec, split="all")
    _assert_one_line_error(exc_info, needle)


def test_folder_verify_false_defers_the_error_to_getitem(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    (root / "bad.png").write_bytes(b"junk")
    ds = build_dataset({"name": "folder", "path": str(root), "image_size": 8, "verify": False}, split="all")
    with pytest.raises(DataError) as exc_info:
        ds[0]
    _assert_one_line_error(exc_info, "bad.png")


# ------------------------------------------------------------------------------------- lmdb

def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _write_lmdb(path: Path, images: list[np.ndarray], resolution, zfill: int, length: int | None = None) -> None:
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, img in enumerate(images):
            txn.put(f"{resolution}-{str(i).zfill(zfill)}".encode(), _png_bytes(img))
        txn.put(b"length", str(len(images) if length is None else length).encode())
    env.close()


COLOURS_U8 = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)]


def _expected(rgb, size: int) -> torch.Tensor:
    return torch.tensor(rgb).float().div(127.5).sub(1).view(3, 1, 1).expand(3, size, size)


def test_lmdb_ffhq_round_trip_key_format(tmp_path):
    path = tmp_path / "ffhq.lmdb"
    _write_lmdb(path, [np.full((32, 32, 3), c) for c in COLOURS_U8], 256, 5)
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        keys = [k for k, _ in txn.cursor()]
    env.close()  # before the dataset opens it: LMDB allows one environment per file per process
    assert keys == [b"256-00000", b"256-00001", b"256-00002", b"256-00003", b"256-00004", b"length"]
    ds = build_dataset({"name": "lmdb", "path": str(path), "variant": "ffhq", "image_size": 16}, split="all")
    assert len(ds) == 5 and ds.labels.tolist() == [-1] * 5 and ds.attributes.shape == (5, 0)
    for i, c in enumerate(COLOURS_U8):
        image, label = ds[i]
        torch.testing.assert_close(image, _expected(c, 16), rtol=0, atol=0)
    # the environment is opened lazily, never pickled, and reopened per process (DataLoader workers)
    clone = pickle.loads(pickle.dumps(ds))
    torch.testing.assert_close(clone[2][0], ds[2][0])
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2)
    torch.testing.assert_close(next(iter(loader))[0], _stack(ds))
    assert len(build_dataset({"name": "lmdb", "path": str(path), "variant": "ffhq",
                              "test_fraction": 0.4}, split="test")) == 2


def test_lmdb_lsun_zfill7_center_crop(tmp_path):
    path = tmp_path / "horse.lmdb"
    _write_lmdb(path, [_stripes(32, 96), _stripes(32, 96)], 256, 7)
    ds = build_dataset({"name": "lmdb", "path": str(path), "variant": "lsun", "image_size": 32}, split="all")
    assert ds.read_bytes(1) == _png_bytes(_stripes(32, 96))
    torch.testing.assert_close(ds[1][0], _expected((0, 255, 0), 32), rtol=0, atol=0)


def test_lmdb_celeba_none_key_and_d2c_crop(tmp_path):
    img = np.zeros((218, 178, 3), np.uint8)
    img[57:185, 25:153] = (0, 0, 255)  # exactly the D2C window: rows 57..185, columns 25..153
    path = tmp_path / "celeba.lmdb"
    _write_lmdb(path, [img, img, img], None, 7)
    ds = build_dataset({"name": "lmdb", "path": str(path), "variant": "celeba"}, split="train")
    assert len(ds) == 3 and ds.image_size == 64  # fewer than 162,770 images: all are "train"
    torch.testing.assert_close(ds[0][0], _expected((0, 0, 255), 64), rtol=0, atol=0)
    with pytest.raises(DataError) as exc_info:
        build_dataset({"name": "lmdb", "path": str(path), "variant": "celeba"}, split="test")
    _assert_one_line_error(exc_info, "selects no images")


def test_lmdb_celebahq_attributes_file(tmp_path):
    path = tmp_path / "celebahq.lmdb"
    _write_lmdb(path, [np.full((32, 32, 3), c) for c in COLOURS_U8[:4]], 256, 5)
    anno = tmp_path / "CelebAMask-HQ-attribute-anno.txt"
    anno.write_text("4\nSmiling Male Young\n2.jpg  1 -1 -1\n0.jpg -1  1  1\n1.jpg 1 1 1\n3.jpg -1 -1 -1\n")
    spec = {"name": "lmdb", "path": str(path), "variant": "celebahq", "attributes_file": str(anno), "image_size": 8}
    ds = build_dataset(spec, split="all")
    assert ds.attribute_names == ["Smiling", "Male", "Young"]
    assert ds.attributes.tolist() == [[0, 1, 1], [1, 1, 1], [1, 0, 0], [0, 0, 0]]
    anno.write_text("3\nSmiling Male Young\n0.jpg -1 1 1\n1.jpg 1 1 1\n3.jpg -1 -1 -1\n")
    with pytest.raises(DataError) as exc_info:
        build_dataset(spec, split="all")
    _assert_one_line_error(exc_info, anno.name, "image 2")


def test_lmdb_errors_name_the_path(tmp_path):
    with pytest.raises(DataError) as exc_info:
        build_dataset({"name": "lmdb", "path": str(tmp_path / "nope.lmdb"), "variant": "ffhq"})
    _assert_one_line_error(exc_info, "nope.lmdb")
    short = tmp_path / "short.lmdb"
    _write_lmdb(short, [np.zeros((8, 8, 3))], 256, 5, length=3)
    ds = build_dataset({"name": "lmdb", "path": str(short), "variant": "ffhq", "image_size": 8}, split="all")
    with pytest.raises(DataError) as exc_info:
        ds[2]
    _assert_one_line_error(exc_info, "short.lmdb", "256-00002")
    nolen = tmp_path / "nolen.lmdb"
    env = lmdb.open(str(nolen), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"256-00000", _png_bytes(np.zeros((8, 8, 3))))
    env.close()
    with pytest.raises(DataError) as exc_info:
        build_dataset({"name": "lmdb", "path": str(nolen), "variant": "ffhq"})
    _assert_one_line_error(exc_info, "nolen.lmdb", "length")


# ------------------------------------------------------------------------------------- provenance

def test_fingerprint_is_stable_and_tracks_spec_and_content(image_folder):
    digits = dataset_fingerprint({"name": "digits"})
    assert digits == dataset_fingerprint({"name": "digits", "image_size": 16, "seed": 0})  # defaults resolved
    assert digits == "37e4d098f8fbc157"  # golden: changes only if the resolved spec format changes
    assert digits != dataset_fingerprint({"name": "digits", "image_size": 32})
    spec = {"name": "folder", "path": str(image_folder), "image_size": 16}
    before = dataset_fingerprint(spec)
    assert len(before) == 16 and before == dataset_fingerprint(spec)
    _save(image_folder / "e.png", np.zeros((4, 4, 3)))
    assert dataset_fingerprint(spec) != before
