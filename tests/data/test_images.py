"""Image datasets: reading folders and CSVs, probing files, and the tf.data pipeline, on generated images."""

from __future__ import annotations

import doctest
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import autodl.data.images
from autodl.data import (
    ImageDataset,
    PipelineStats,
    make_image_dataset,
    pipeline_throughput,
    probe_images,
    read_image_csv,
    read_image_folder,
    read_images,
)
from autodl.errors import DataError, UserError

# One flat colour per class, so a pixel says which class an image came from.
BIRD, CAT, DOG = (200, 30, 30), (120, 120, 120), (20, 40, 220)
COLORS = {"bird": BIRD, "cat": CAT, "dog": DOG}
SIZE = (32, 32)


# --- writing images (PIL is not a dependency: TensorFlow encodes JPEG/PNG, the rest is written by hand) ---


def rgb(h: int, w: int, color: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(color, dtype=np.uint8), (h, w, 3)).copy()


def jpeg(h: int, w: int, color: tuple[int, int, int]) -> bytes:
    return tf.io.encode_jpeg(rgb(h, w, color), quality=95).numpy()


def png(h: int, w: int, color: tuple[int, int, int], channels: int = 3) -> bytes:
    if channels == 1:
        pixels = np.full((h, w, 1), color[0], dtype=np.uint8)
    elif channels == 4:
        pixels = np.concatenate([rgb(h, w, color), np.full((h, w, 1), 255, np.uint8)], axis=-1)
    else:
        pixels = rgb(h, w, color)
    return tf.io.encode_png(pixels).numpy()


def palette_png(h: int, w: int, color: tuple[int, int, int]) -> bytes:
    """An 8-bit palette PNG (colour type 3) whose pixels all use palette entry 0."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes(w) for _ in range(h))  # filter byte 0, then palette indices
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"PLTE", bytes(color) + b"\x00\x00\x00")
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def bmp(h: int, w: int, color: tuple[int, int, int]) -> bytes:
    """A 24-bit uncompressed BMP (rows bottom-up, BGR, padded to 4 bytes)."""
    row = bytes(color[::-1]) * w
    row += b"\x00" * (-len(row) % 4)
    pixels = row * h
    header = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def gif_1x1(color: tuple[int, int, int]) -> bytes:
    """A 1x1 GIF whose pixel is global-palette entry 0 (LZW codes clear, 0, end)."""
    screen = b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + bytes(color) + b"\x00\x00\x00"  # 2-entry global palette
    return screen + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00" + b"\x02\x02D\x01\x00;"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def pets(tmp_path_factory) -> Path:
    """3 classes, 10 images: JPEG (one large), BMP nested two levels down, gray/RGBA/palette PNG, GIF."""
    root = tmp_path_factory.mktemp("pets")
    write(root / "bird" / "b0.jpg", jpeg(64, 64, BIRD))
    write(root / "bird" / "b1.JPG", jpeg(64, 64, BIRD))
    write(root / "bird" / "big.jpeg", jpeg(300, 260, BIRD))  # decoded at 1/8 scale for a 32x32 target
    write(root / "bird" / "nested" / "deep" / "b2.bmp", bmp(20, 30, BIRD))
    write(root / "cat" / "c0.png", png(20, 30, CAT, channels=1))
    write(root / "cat" / "c1.png", png(20, 30, CAT, channels=1))
    write(root / "cat" / "c2.PNG", png(64, 64, CAT, channels=4))
    write(root / "dog" / "d0.png", palette_png(33, 17, DOG))
    write(root / "dog" / "d1.gif", gif_1x1(DOG))
    write(root / "dog" / "d2.jpg", jpeg(48, 80, DOG))
    # Noise a real folder has: skipped and counted, or ignored when hidden.
    write(root / "cat" / "notes.txt", b"not an image")
    write(root / "stray.png", png(8, 8, CAT))
    write(root / ".DS_Store", b"\x00\x00")
    write(root / "dog" / ".hidden.jpg", jpeg(8, 8, CAT))
    write(root / ".ipynb_checkpoints" / "x.png", png(8, 8, CAT))
    write(root / "bird" / ".cache" / "x.png", png(8, 8, CAT))
    return root


def batches(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for x, y in ds:
        assert x.dtype == tf.float32 and y.dtype == tf.int64
        assert x.shape[1:] == (*SIZE, 3)
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def assert_colors_match(images: np.ndarray, labels: np.ndarray, classes: list[str], colors: dict) -> None:
    assert images.min() >= 0.0 and images.max() <= 255.0
    for image, label in zip(images, labels):
        expected = np.array(colors[classes[label]], dtype=np.float32)
        # Flat colours survive JPEG and resizing to within a few levels.
        assert np.abs(image.reshape(-1, 3).mean(axis=0) - expected).max() < 6, (classes[label], image[0, 0])


# --- the folder layout ------------------------------------------------------------------------------


def test_folder_classes_counts_and_skips(pets):
    data = read_image_folder(pets)
    assert data.classes == ["bird", "cat", "dog"]
    assert data.n_per_class == {"bird": 4, "cat": 3, "dog": 3}
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [0] * 4 + [1] * 3 + [2] * 3
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in data.paths)
    assert any(p.endswith("b2.bmp") for p in data.paths)  # nested files count for their class
    assert not any("/." in p for p in data.paths)  # hidden files and folders ignored
    assert data.skipped == {"not_an_image": 1, "outside_class_folder": 1}
    assert data.source == str(pets.resolve())
    assert "10 images in 3 classes" in data.summary()
    assert read_images(pets).paths == data.paths


def test_folder_pipeline_yields_float_batches_with_right_labels(pets):
    data = read_image_folder(pets)
    images, labels = batches(make_image_dataset(data, image_size=SIZE, batch_size=4))
    assert images.shape == (10, 32, 32, 3)
    assert labels.tolist() == data.labels.tolist()  # not training: input order
    assert_colors_match(images, labels, data.classes, COLORS)


@pytest.mark.parametrize("cache", [True, False])
def test_training_shuffles_each_epoch_and_keeps_pairs(pets, cache):
    data = read_image_folder(pets)
    ds = make_image_dataset(data, image_size=SIZE, batch_size=3, training=True, cache=cache, shuffle_seed=1)
    epochs = [batches(ds) for _ in range(3)]
    for images, labels in epochs:
        assert sorted(labels.tolist()) == sorted(data.labels.tolist())
        assert_colors_match(images, labels, data.classes, COLORS)
    orders = {tuple(labels.tolist()) for _, labels in epochs}
    assert len(orders) > 1 and tuple(data.labels.tolist()) not in orders


def test_prediction_mode_yields_images_in_input_order(pets):
    data = read_image_folder(pets)
    ds = make_image_dataset(data.paths, image_size=SIZE, batch_size=4)
    images = np.concatenate([x.numpy() for x in ds])
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.float32
    assert_colors_match(images, data.labels, data.classes, COLORS)


def test_subset_keeps_classes_and_pairs(pets):
    data = read_image_folder(pets)
    train = data.subset(np.array([0, 3, 4, 8, 9]))  # e.g. Split.train from train_valid_test_split(data.labels)
    assert train.labels.tolist() == [0, 0, 1, 2, 2] and train.classes == data.classes
    assert train.paths == [data.paths[i] for i in (0, 3, 4, 8, 9)]
    images, labels = batches(make_image_dataset(train, image_size=SIZE, training=True))
    assert_colors_match(images, labels, train.classes, COLORS)


def test_probe_reports_sizes_and_channels(pets):
    probe = probe_images(read_image_folder(pets))
    assert probe.checked == 10 and probe.unreadable == []
    assert probe.height == (1, 40, 300) and probe.width == (1, 47, 260)
    assert probe.channels == {1: 2, 3: 7, 4: 1}  # palette PNG, GIF and BMP decode as RGB
    assert "height 1/40/300" in probe.summary()
    sample = probe_images(read_image_folder(pets), sample=4, seed=0)
    assert sample.checked == 4


def test_throughput_is_measured(pets):
    rate = pipeline_throughput(read_image_folder(pets), image_size=SIZE, batch_size=4, seconds=0.2)
    assert rate > 0


# --- the CSV layout ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def csv_data(tmp_path_factory) -> Path:
    """Classes 2, 7, 10 (numbers, so '2' sorts before '10'); relative paths, one absolute, one gray PNG."""
    root = tmp_path_factory.mktemp("csvdata")
    colors = {2: BIRD, 7: CAT, 10: DOG}
    rows = ["species,note,file"]
    for i in range(9):
        label = (2, 7, 10)[i % 3]
        path = write(root / "img" / f"{i}.png", png(20 + i, 30, colors[label], channels=1 if label == 7 else 3))
        shown = str(path) if i == 0 else f"img/{i}.png"
        rows.append(f"{label},n{i},{shown}")
    write(root / "labels.csv", ("\n".join(rows) + "\n").encode())
    return root / "labels.csv"


def test_csv_path_column_detected_and_paths_resolved(csv_data):
    data = read_image_csv(csv_data, target="species")
    assert data.classes == ["2", "7", "10"]
    assert data.labels.tolist() == [0, 1, 2] * 3
    assert data.paths[1] == str(csv_data.parent / "img" / "1.png")
    assert data.skipped == {} and data.source == str(csv_data)
    images, labels = batches(make_image_dataset(data, image_size=SIZE, batch_size=4))
    assert images.shape == (9, 32, 32, 3)
    assert_colors_match(images, labels, data.classes, {"2": BIRD, "7": CAT, "10": DOG})
    assert read_images(csv_data, target="species").paths == data.paths


def test_csv_target_guessed_when_one_other_column(tmp_path):
    for i in range(4):
        write(tmp_path / f"{i}.jpg", jpeg(16, 16, BIRD if i % 2 else DOG))
    write(tmp_path / "t.csv", b"path,y\n0.jpg,dog\n1.jpg,bird\n2.jpg,dog\n3.jpg,bird\n")
    data = read_images(tmp_path / "t.csv")
    assert data.classes == ["bird", "dog"] and data.labels.tolist() == [1, 0, 1, 0]


def test_csv_missing_files_and_values_are_skipped_and_counted(tmp_path, one_line):
    for i in range(4):
        write(tmp_path / f"{i}.png", png(8, 8, BIRD))
    text = "file,y\n0.png,a\n1.png,b\n2.png,a\n3.png,b\ngone.png,a\n,b\n1.png,\n"
    write(tmp_path / "t.csv", text.encode())
    with pytest.warns(UserWarning, match="1 of 5 image paths .* do not exist"):
        data = read_image_csv(tmp_path / "t.csv", target="y")
    assert len(data) == 4
    assert data.skipped == {"missing_file": 1, "missing_path": 1, "missing_target": 1}


# --- corrupt files ----------------------------------------------------------------------------------


@pytest.fixture
def with_corrupt(tmp_path) -> Path:
    for i in range(3):
        write(tmp_path / "a" / f"{i}.png", png(10, 10, BIRD))
        write(tmp_path / "b" / f"{i}.png", png(10, 10, DOG))
    write(tmp_path / "a" / "broken.jpg", np.random.default_rng(0).bytes(500))
    whole = jpeg(64, 64, BIRD)
    write(tmp_path / "a" / "truncated.jpg", whole[: len(whole) // 2])  # a valid header, half the data
    write(tmp_path / "b" / "pointer.png", b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    return tmp_path


def test_probe_finds_corrupt_files_and_they_can_be_dropped(with_corrupt):
    data = read_image_folder(with_corrupt)
    with pytest.warns(UserWarning, match="3 of 9 image files cannot be decoded"):
        probe = probe_images(data)
    assert sorted(Path(p).name for p in probe.unreadable) == ["broken.jpg", "pointer.png", "truncated.jpg"]
    assert "Git LFS" in probe.reasons[str(with_corrupt / "b" / "pointer.png")]
    assert probe.reasons[str(with_corrupt / "a" / "broken.jpg")].startswith("Unknown image file format")
    assert probe.channels == {3: 6}
    clean = data.without(probe.unreadable)
    assert len(clean) == 6 and clean.skipped == {"unreadable": 3} and clean.classes == ["a", "b"]


def test_pipeline_drops_corrupt_files_and_counts_them(with_corrupt):
    data = read_image_folder(with_corrupt)
    stats = PipelineStats()
    ds = make_image_dataset(data, image_size=SIZE, batch_size=4, training=True, stats=stats)
    for _ in range(2):  # the second epoch reads the cache, and must not change the count
        images, labels = batches(ds)
        assert images.shape[0] == 6
        assert_colors_match(images, labels, data.classes, {"a": BIRD, "b": DOG})
    assert stats.skipped == 3 and stats.loaded == 6
    assert sorted(Path(p).name for p in stats.skipped_paths()) == ["broken.jpg", "pointer.png", "truncated.jpg"]


def test_mostly_corrupt_files_are_an_error(tmp_path, one_line):
    rng = np.random.default_rng(1)
    for name in ("a/0.jpg", "a/1.jpg", "b/0.jpg", "b/1.png"):
        write(tmp_path / name, rng.bytes(200))
    write(tmp_path / "b" / "ok.png", png(8, 8, DOG))
    with pytest.raises(DataError) as excinfo:
        probe_images(read_image_folder(tmp_path))
    assert "4 of 5 image files cannot be decoded (first: '" in one_line(excinfo)


def test_dropping_leaves_too_few_classes(with_corrupt, one_line):
    data = read_image_folder(with_corrupt)
    with pytest.raises(DataError) as excinfo:
        data.without([p for p in data.paths if "/b/" in p])
    assert "only 1 class keeps images ('a')" in one_line(excinfo)


# --- bad input: one-line errors ---------------------------------------------------------------------


def test_missing_and_empty_folders(tmp_path, one_line):
    with pytest.raises(DataError) as excinfo:
        read_images(tmp_path / "nope")
    assert "does not exist" in one_line(excinfo)
    with pytest.raises(DataError) as excinfo:
        read_images(write(tmp_path / "one.png", png(8, 8, CAT)))
    assert "is a single image; pass the folder" in one_line(excinfo)
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty" / ".DS_Store", b"x")
    with pytest.raises(DataError) as excinfo:
        read_image_folder(tmp_path / "empty")
    assert one_line(excinfo).endswith("is empty; put one sub-folder of images per class in it")


def test_folder_without_images(tmp_path, one_line):
    write(tmp_path / "a" / "x.txt", b"x")
    write(tmp_path / "b" / "y.csv", b"y")
    with pytest.raises(DataError) as excinfo:
        read_image_folder(tmp_path)
    assert "has no image files (.jpg, .jpeg, .png, .bmp, .gif) in its sub-folders" in one_line(excinfo)


def test_images_without_class_folders(tmp_path, one_line):
    write(tmp_path / "x.png", png(8, 8, CAT))
    write(tmp_path / "y.png", png(8, 8, CAT))
    with pytest.raises(DataError) as excinfo:
        read_image_folder(tmp_path)
    assert "has 2 images but no class sub-folders holding images" in one_line(excinfo)


def test_single_class(tmp_path, one_line):
    write(tmp_path / "cat" / "x.png", png(8, 8, CAT))
    with pytest.raises(DataError) as excinfo:
        read_image_folder(tmp_path)
    assert "images for a single class 'cat'; a classifier needs at least two" in one_line(excinfo)
    (tmp_path / "dog").mkdir()
    with pytest.raises(DataError) as excinfo:
        read_image_folder(tmp_path)
    assert "single class 'cat' (empty: 'dog')" in one_line(excinfo)


def test_empty_class_folder_is_skipped_with_a_warning(tmp_path):
    write(tmp_path / "cat" / "x.png", png(8, 8, CAT))
    write(tmp_path / "dog" / "y.png", png(8, 8, DOG))
    write(tmp_path / "eel" / "readme.txt", b"todo")
    with pytest.warns(UserWarning, match="class folder 'eel' .* has no images and is left out"):
        data = read_image_folder(tmp_path)
    assert data.classes == ["cat", "dog"]
    assert data.skipped == {"empty_class_folder": 1, "not_an_image": 1}


def test_csv_mostly_missing_files(tmp_path, one_line):
    write(tmp_path / "img" / "0.png", png(8, 8, CAT))
    text = "file,y\nimg/0.png,a\nimg/1.png,b\nimg/2.png,a\nimg/3.png,b\n"
    write(tmp_path / "t.csv", text.encode())
    with pytest.raises(DataError) as excinfo:
        read_image_csv(tmp_path / "t.csv", target="y")
    message = one_line(excinfo)
    assert "3 of 4 image paths in" in message and "(first: 'img/1.png')" in message
    assert f"relative paths are read from the CSV's folder '{tmp_path}'" in message


def test_csv_column_errors(tmp_path, one_line):
    write(tmp_path / "0.png", png(8, 8, CAT))
    write(tmp_path / "no_paths.csv", b"name,y\nfoo,a\nbar,b\n")
    with pytest.raises(DataError) as excinfo:
        read_image_csv(tmp_path / "no_paths.csv", target="y")
    assert "has no image-path column (no column whose values end in .jpg" in one_line(excinfo)
    write(tmp_path / "t.csv", b"file,y,z\n0.png,a,1\n0.png,b,2\n")
    with pytest.raises(DataError) as excinfo:
        read_image_csv(tmp_path / "t.csv")
    assert "2 columns besides the image paths 'file'; name the target column (columns: y, z)" in one_line(excinfo)
    with pytest.raises(DataError) as excinfo:
        read_image_csv(tmp_path / "t.csv", path_column="File", target="y")
    assert "image path column 'File' is not a column; did you mean 'file'?" in one_line(excinfo)
    with pytest.raises(DataError) as excinfo:
        read_image_csv(tmp_path / "t.csv", target="Y")
    assert "target 'Y' is not a column" in one_line(excinfo)
    write(tmp_path / "one.csv", b"file,y\n0.png,a\n0.png,a\n")
    with pytest.raises(DataError) as excinfo:
        read_image_csv(tmp_path / "one.csv")
    assert "target 'y' in" in one_line(excinfo) and "has a single class 'a'" in one_line(excinfo)


def test_folder_with_a_target_is_a_user_error(pets, one_line):
    with pytest.raises(UserError) as excinfo:
        read_images(pets, target="label")
    assert "leave out the target ('label')" in one_line(excinfo)


def test_pipeline_argument_errors(pets, one_line):
    data = read_image_folder(pets)
    with pytest.raises(UserError) as excinfo:
        make_image_dataset(data, image_size=(0, 32))
    assert "image_size must be (height, width) in pixels" in one_line(excinfo)
    with pytest.raises(UserError) as excinfo:
        make_image_dataset(data.paths, data.labels[:3])
    assert "10 images but labels of shape (3,)" in one_line(excinfo)
    with pytest.raises(DataError) as excinfo:
        make_image_dataset([], None)
    assert "list of image paths is empty" in one_line(excinfo)


def test_docstring_examples_run():
    result = doctest.testmod(autodl.data.images)
    assert result.attempted > 0 and result.failed == 0


def test_image_dataset_round_trips_to_a_record(pets):
    record = read_image_folder(pets).to_dict()
    assert record["n_images"] == 10 and record["n_per_class"] == {"bird": 4, "cat": 3, "dog": 3}
    assert isinstance(ImageDataset(["/x.png", "/y.png"], [0, 1], ["a", "b"], "/").labels, np.ndarray)
