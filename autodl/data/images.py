"""Image datasets: read a class-folder tree or a CSV of image paths, probe the files, stream them with tf.data.

Two layouts are read:

- a folder with one sub-folder per class (``pets/cat/1.jpg``, ``pets/dog/a/2.png``):
  ``read_image_folder``; files nested deeper inside a class folder count for it;
- a CSV with an image-path column and a target column: ``read_image_csv``;
  relative paths are read relative to the CSV's folder.

``read_images`` picks one by looking at the path. Both give an ``ImageDataset``
(absolute paths, int64 labels into sorted class names, and counts of what was
skipped and why). ``probe_images`` decodes the files (or a sample) to find
unreadable ones and to report the size distribution; ``make_image_dataset``
builds the tf.data pipeline a model trains on.

Example (no TensorFlow needed until ``probe_images``/``make_image_dataset``):

>>> import pathlib, tempfile
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for name in ("dog/1.jpg", "dog/2.JPG", "cat/a/3.png", "cat/notes.txt"):
...     (root / name).parent.mkdir(parents=True, exist_ok=True)
...     _ = (root / name).write_bytes(b"not decoded here")
>>> data = read_images(root)
>>> data.classes, data.labels.tolist(), data.n_per_class, data.skipped
(['cat', 'dog'], [0, 1, 1], {'cat': 1, 'dog': 2}, {'not_an_image': 1})

Nothing here imports TensorFlow at import time; the functions that need it
import it when called, so ``import autodl.data`` stays fast.
"""

from __future__ import annotations

import os
import re
import time
import contextlib
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import pandas as pd

from autodl.data.io import read_table
from autodl.data.schema import _not_a_column
from autodl.errors import DataError, UserError

if TYPE_CHECKING:  # only for annotations; importing tensorflow here would slow `import autodl.data`
    import tensorflow as tf

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "ImageProbe",
    "PipelineStats",
    "decode_and_resize",
    "make_image_dataset",
    "pipeline_throughput",
    "probe_images",
    "read_image_csv",
    "read_image_folder",
    "read_images",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# More missing (or unreadable) files than this means the paths or the files are
# wrong as a whole, not that a few files went astray: stop instead of skipping.
MAX_MISSING_FRACTION = 0.5
# A column is the image-path column when at least this share of its values end
# in an image extension (a few odd rows should not hide it).
PATH_COLUMN_MIN_FRACTION = 0.5
# The shuffle buffer after an in-memory cache holds references to cached
# images (no copies); the file list is permuted up front, so a bounded buffer
# still mixes classes well.
SHUFFLE_BUFFER = 4096
# Eagerly decoding an unreadable file again just to explain why it failed;
# a handful of reasons is enough for a message.
MAX_REASONS = 5

_EXTS = frozenset(IMAGE_EXTENSIONS)
_LFS_POINTER = b"version https://git-lfs"


@dataclass
class ImageDataset:
    """Image files and their classes.

    ``paths`` are absolute; ``labels[i]`` (int64) indexes ``classes`` (sorted
    names); ``source`` is the folder or CSV read; ``skipped`` counts files or
    rows left out, by reason (``not_an_image``, ``outside_class_folder``,
    ``empty_class_folder``, ``missing_file``, ``missing_path``,
    ``missing_target``, ``unreadable``).

    >>> d = ImageDataset(["/a/x.png", "/a/y.png", "/b/z.png"], np.array([0, 0, 1]), ["a", "b"], "/")
    >>> len(d), d.n_per_class, d.subset([2]).paths
    (3, {'a': 2, 'b': 1}, ['/b/z.png'])
    """

    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    source: str
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_per_class(self) -> dict[str, int]:
        """Images per class name, in class order."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counts)}

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageDataset":
        """The images at ``indices`` (e.g. ``Split.train``), with the same classes and skip counts."""
        idx = np.asarray(indices, dtype=np.int64)
        paths = np.asarray(self.paths, dtype=object)[idx].tolist() if len(idx) else []
        return ImageDataset(paths, self.labels[idx], list(self.classes), self.source, dict(self.skipped))

    def without(self, paths: Sequence[str], reason: str = "unreadable") -> "ImageDataset":
        """A copy without ``paths`` (counted under ``skipped[reason]``); classes left empty are dropped.

        Raises ``DataError`` when fewer than two classes keep images.
        """
        gone = set(paths)
        keep = np.array([p not in gone for p in self.paths], dtype=bool)
        removed = int((~keep).sum())
        skipped = dict(self.skipped)
        if removed:
            skipped[reason] = skipped.get(reason, 0) + removed
        labels = self.labels[keep]
        present = np.unique(labels)
        if len(present) < 2:
            left = ", ".join(repr(self.classes[i]) for i in present) or "none"
            raise DataError(
                f"after leaving out {removed} {reason.replace('_', ' ')} images only {len(present)} class keeps "
                f"images ({left}) in '{self.source}'; a classifier needs at least two classes, "
                "so fix or replace the files"
            )
        # Re-index so labels stay 0..k-1 over the classes that still have images.
        remap = np.full(len(self.classes), -1, dtype=np.int64)
        remap[present] = np.arange(len(present))
        return ImageDataset(
            [p for p, k in zip(self.paths, keep) if k],
            remap[labels],
            [self.classes[i] for i in present],
            self.source,
            skipped,
        )

    def summary(self) -> str:
        """One line: image and class counts, and what was skipped."""
        text = f"{len(self)} images in {len(self.classes)} classes from '{self.source}'"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in sorted(self.skipped.items()))
        return text

    def to_dict(self) -> dict[str, Any]:
        """What a run records about its data (no per-file lists)."""
        return {
            "source": self.source,
            "n_images": len(self),
            "classes": list(self.classes),
            "n_per_class": self.n_per_class,
            "skipped": dict(self.skipped),
        }


# --- reading ------------------------------------------------------------------------------


def read_images(data: str | os.PathLike[str], target: str | None = None, **kwargs: Any) -> ImageDataset:
    """Reads a class-folder tree (a directory) or a CSV of image paths (a file).

    ``target`` is the CSV's label column; a folder takes its labels from the
    sub-folder names, so ``target`` must be left out there. Extra keyword
    arguments go to ``read_image_csv`` (``path_column``).
    """
    p = _as_path(data, "image data")
    if not p.exists():
        raise DataError(f"image data '{p}' does not exist; pass a folder of class sub-folders or a CSV of image paths")
    if p.is_dir():
        if target is not None:
            raise UserError(
                f"'{p}' is a folder of class sub-folders, so the classes are the folder names; "
                f"leave out the target ({target!r}) or pass a CSV with a target column"
            )
        if kwargs:
            raise UserError(f"{', '.join(kwargs)} only applies to a CSV of image paths, but '{p}' is a folder")
        return read_image_folder(p)
    if _is_image_name(p.name):
        raise DataError(
            f"'{p}' is a single image; pass the folder of class sub-folders it belongs in, or a CSV of image paths"
        )
    return read_image_csv(p, target=target, **kwargs)


def read_image_folder(path: str | os.PathLike[str]) -> ImageDataset:
    """Reads a folder with one sub-folder of images per class.

    Image files are those ending in ``IMAGE_EXTENSIONS`` (any case); hidden
    files and folders (``.DS_Store``, ``.ipynb_checkpoints``) are ignored;
    images nested deeper in a class folder belong to that class. Other files,
    and images next to the class folders, are skipped and counted. A class
    folder without images is skipped with a warning. Raises ``DataError`` for
    a missing or empty folder, one without images, or fewer than two classes
    with images.
    """
    root = _as_path(path, "image folder").expanduser()
    if not root.exists():
        raise DataError(f"image folder '{root}' does not exist; check the path")
    if not root.is_dir():
        raise DataError(f"image folder '{root}' is a file; pass the folder that holds one sub-folder per class")
    root = root.resolve()
    entries = [e for e in _listdir(root) if not e.name.startswith(".")]
    if not entries:
        raise DataError(f"image folder '{root}' is empty; put one sub-folder of images per class in it")

    class_dirs = sorted((e for e in entries if e.is_dir()), key=lambda e: e.name)
    loose = [e for e in entries if not e.is_dir()]
    skipped: Counter[str] = Counter()
    n_loose_images = sum(1 for e in loose if _is_image_name(e.name))
    if n_loose_images:
        skipped["outside_class_folder"] += n_loose_images
    skipped["not_an_image"] += len(loose) - n_loose_images

    per_class: dict[str, list[str]] = {}
    for d in class_dirs:
        images, others = _images_under(Path(d.path))
        skipped["not_an_image"] += others
        per_class[d.name] = images

    with_images = [name for name, files in per_class.items() if files]
    empty = [name for name, files in per_class.items() if not files]
    if not with_images:
        if n_loose_images:
            raise DataError(
                f"image folder '{root}' has {n_loose_images} images but no class sub-folders holding images; "
                "move each class's images into a sub-folder named after the class"
            )
        raise DataError(
            f"image folder '{root}' has no image files ({', '.join(IMAGE_EXTENSIONS)}) in its sub-folders; "
            "put each class's images in a sub-folder named after the class"
        )
    if len(with_images) < 2:
        others = f" (empty: {', '.join(repr(n) for n in empty[:3])})" if empty else ""
        raise DataError(
            f"image folder '{root}' has images for a single class {with_images[0]!r}{others}; "
            "a classifier needs at least two class sub-folders with images"
        )
    if empty:
        skipped["empty_class_folder"] += len(empty)
        warnings.warn(
            f"class folder{'s' if len(empty) > 1 else ''} {', '.join(repr(n) for n in empty[:5])} in '{root}' "
            f"{'have' if len(empty) > 1 else 'has'} no images and {'are' if len(empty) > 1 else 'is'} left out",
            UserWarning,
            stacklevel=2,
        )

    paths: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(with_images):
        paths += per_class[name]
        labels += [index] * len(per_class[name])
    return ImageDataset(paths, np.asarray(labels, dtype=np.int64), with_images, str(root), _nonzero(skipped))


def read_image_csv(
    csv: str | os.PathLike[str], path_column: str | None = None, target: str | None = None
) -> ImageDataset:
    """Reads a CSV (or parquet) table with an image-path column and a target column.

    ``path_column`` is found when not given: the column whose values end in an
    image extension. ``target`` may be left out when the table has just one
    other column. Relative paths are read relative to the CSV's folder. Class
    names are the target values as strings (numbers sorted by value). Rows
    with no path or no target, and paths to missing files, are skipped and
    counted; more than half missing files is a ``DataError``.
    """
    p = _as_path(csv, "image CSV").expanduser().resolve()
    df = read_table(p, role="image CSV")
    path_column = _path_column(df, path_column, p)
    target = _target_column(df, target, path_column, p)

    skipped: Counter[str] = Counter()
    raw_paths = df[path_column]
    y = df[target]
    no_path = raw_paths.isna() | (raw_paths.astype(str).str.strip() == "")
    no_target = y.isna() & ~no_path
    skipped["missing_path"] += int(no_path.sum())
    skipped["missing_target"] += int(no_target.sum())
    rows = df.index[~no_path & ~no_target]
    if len(rows) == 0:
        raise DataError(f"image CSV '{p}' has no rows with both an image path and a '{target}' value; fill them in")

    base = p.parent
    resolved = [_resolve(str(v).strip(), base) for v in raw_paths.loc[rows]]
    exists = np.array([os.path.isfile(r) for r in resolved], dtype=bool)
    n_missing = int((~exists).sum())
    if n_missing:
        first = str(raw_paths.loc[rows[int(np.argmin(exists))]]).strip()
        if n_missing > MAX_MISSING_FRACTION * len(resolved):
            raise DataError(
                f"{n_missing} of {len(resolved)} image paths in '{p}' do not exist (first: '{first}'); "
                f"relative paths are read from the CSV's folder '{base}', so fix the paths or move the CSV"
            )
        skipped["missing_file"] += n_missing
        warnings.warn(
            f"{n_missing} of {len(resolved)} image paths in '{p}' do not exist (first: '{first}'); they are left out",
            UserWarning,
            stacklevel=2,
        )

    values = [_label_text(v) for v in y.loc[rows][exists]]
    paths = [r for r, ok in zip(resolved, exists) if ok]
    classes = _sorted_classes(values)
    if len(classes) < 2:
        only = f" {classes[0]!r}" if classes else ""
        raise DataError(
            f"target '{target}' in '{p}' has a single class{only} among the images found; "
            "a classifier needs at least two classes"
        )
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[v] for v in values], dtype=np.int64)
    return ImageDataset(paths, labels, classes, str(p), _nonzero(skipped))


def _as_path(value: object, role: str) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise DataError(f"{role} must be a path, got {type(value).__name__}")
    return Path(value)


def _listdir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError as exc:
        raise DataError(f"cannot list image folder '{path}': {exc.strerror or exc}; check its permissions") from exc


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in _EXTS


def _images_under(folder: Path) -> tuple[list[str], int]:
    """Sorted image paths anywhere under ``folder`` (hidden entries pruned), and the count of other files."""
    images: list[str] = []
    others = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        # Pruning in place stops os.walk from descending into hidden folders.
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            if _is_image_name(name):
                images.append(os.path.join(dirpath, name))
            else:
                others += 1
    return sorted(images), others


def _nonzero(counts: Counter[str]) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(counts.items()) if v}


def _looks_like_image_path(values: pd.Series) -> float:
    """Share of the present values that end in an image extension."""
    present = values.dropna()
    if len(present) == 0 or not (pd.api.types.is_string_dtype(present) or pd.api.types.is_object_dtype(present)):
        return 0.0
    text = present.astype(str).str.strip().str.lower()
    return float(text.str.endswith(IMAGE_EXTENSIONS).mean())


def _path_column(df: pd.DataFrame, path_column: str | None, p: Path) -> str:
    if path_column is not None:
        if path_column not in df.columns:
            raise _not_a_column("image path column", path_column, df.columns)
        return path_column
    scores = {name: _looks_like_image_path(df[name]) for name in df.columns}
    best = max(scores, key=lambda name: scores[name])
    if scores[best] < PATH_COLUMN_MIN_FRACTION:
        raise DataError(
            f"image CSV '{p}' has no image-path column (no column whose values end in "
            f"{', '.join(IMAGE_EXTENSIONS)}); name it with path_column "
            f"(columns: {', '.join(map(str, df.columns[:12]))})"
        )
    return best


def _target_column(df: pd.DataFrame, target: str | None, path_column: str, p: Path) -> str:
    if target is not None:
        if target not in df.columns:
            raise _not_a_column("target", target, df.columns)
        if target == path_column:
            raise DataError(f"target '{target}' is the image-path column; pick the column that holds the classes")
        return target
    rest = [c for c in df.columns if c != path_column]
    if len(rest) != 1:
        listing = ", ".join(map(str, rest[:12])) or "none"
        raise DataError(
            f"image CSV '{p}' has {len(rest)} columns besides the image paths '{path_column}'; "
            f"name the target column (columns: {listing})"
        )
    return rest[0]


def _resolve(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return os.path.normpath(path if path.is_absolute() else base / path)


def _label_text(value: Any) -> str:
    """Class name of a target value: 3.0 read from a CSV is class '3', not '3.0'."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _sorted_classes(values: Sequence[str]) -> list[str]:
    """Distinct names, sorted as numbers when all are numbers ('2' before '10'), else as text."""
    names = set(values)
    try:
        return sorted(names, key=float)
    except ValueError:
        return sorted(names)


# --- probing ------------------------------------------------------------------------------


def image_attributes(source: str | os.PathLike[str], columns: Sequence[str], paths: Sequence[str]) -> pd.DataFrame:
    """Columns of an image CSV (e.g. sensitive attributes), one row per image in ``paths``, in that order.

    ``paths`` are the resolved image paths (``ImageDataset.paths``); a path listed
    twice in the CSV takes its first row. A folder of class folders has no columns.

    >>> image_attributes("photos/", ["sex"], [])  # doctest: +SKIP
    Traceback (most recent call last):
    UserError: ...
    """
    p = Path(source)
    if p.is_dir():
        raise UserError(f"'{p}' is a folder of class folders: it has no columns like {', '.join(map(repr, columns))}; "
                        "pass a CSV with an image-path column, the target and those columns")
    df = read_table(p, role="image CSV")
    unknown = [c for c in columns if c not in df.columns]
    if unknown:
        raise DataError(f"column '{unknown[0]}' is not in '{p}'; columns are: {', '.join(map(str, df.columns))}")
    path_column = _path_column(df, None, p)
    base = p.resolve().parent
    keys = [_resolve(str(v).strip(), base) if pd.notna(v) else None for v in df[path_column]]
    first_row = {}
    for row, key in enumerate(keys):
        if key is not None:
            first_row.setdefault(key, row)
    rows = [first_row[path] for path in paths]
    return df.iloc[rows][list(columns)].reset_index(drop=True)


def is_image_data(data: object) -> bool:
    """Whether ``autodl fit DATA`` means images: a folder, or a CSV with an image-path column.

    Only the first rows of a CSV are read, so a large table is not loaded twice.

    >>> is_image_data("no/such/file.csv")
    False
    """
    if not isinstance(data, (str, os.PathLike)):
        return False
    p = Path(data).expanduser()
    if p.is_dir():
        return True
    if not p.is_file() or p.suffix.lower() not in (".csv", ".tsv", ".txt"):
        return False
    try:
        head = pd.read_csv(p, nrows=200, sep=None, engine="python")
    except Exception:  # noqa: BLE001 - empty, binary or malformed: the table reader gives the user the real error
        return False
    return any(_looks_like_image_path(head[c]) >= PATH_COLUMN_MIN_FRACTION for c in head.columns)


def image_paths(data: str | os.PathLike[str] | pd.DataFrame | list[str] | tuple[str, ...]) -> list[str]:
    """The images to predict, as absolute paths.

    ``data`` is a folder (every image inside, recursively, sorted), one image, a CSV
    (or DataFrame) with an image-path column (relative paths from the CSV's folder), or
    a list of paths. Unlike ``read_images`` it needs no labels and no class folders.
    """
    if isinstance(data, (list, tuple)):
        paths = [os.fspath(p) for p in data]
    elif isinstance(data, pd.DataFrame):
        column = _path_column(data, None, Path("the DataFrame"))
        paths = [_resolve(str(v).strip(), Path.cwd()) for v in data[column].dropna()]
    else:
        p = Path(data).expanduser()
        if not p.exists():
            raise DataError(f"'{p}' does not exist; pass a folder of images, an image, or a CSV of image paths")
        if p.is_dir():
            paths, _ = _images_under(p.resolve())
        elif _is_image_name(p.name):
            paths = [str(p.resolve())]
        else:
            df = read_table(p, role="image CSV")
            column = _path_column(df, None, p)
            paths = [_resolve(str(v).strip(), p.resolve().parent) for v in df[column].dropna() if str(v).strip()]
    if not paths:
        raise DataError(f"no images to predict in {data!r}; pass a folder of images or a CSV of image paths")
    return paths



@dataclass
class ImageProbe:
    """What decoding the files found.

    ``checked`` files were decoded (all, or a seeded sample); ``unreadable``
    lists those that failed, with a one-line reason for the first few in
    ``reasons``. ``height`` and ``width`` are (min, median, max) pixels over
    the readable ones; ``channels`` counts images by stored channels (1 gray,
    2 gray+alpha, 3 RGB, 4 RGBA).
    """

    checked: int
    unreadable: list[str]
    reasons: dict[str, str]
    height: tuple[int, int, int]
    width: tuple[int, int, int]
    channels: dict[int, int]

    def summary(self) -> str:
        """One line for the log, e.g. to choose an input size."""
        text = f"probed {self.checked} images: {len(self.unreadable)} unreadable"
        if self.checked > len(self.unreadable):
            h, w = self.height, self.width
            text += (
                f"; height {h[0]}/{h[1]}/{h[2]}, width {w[0]}/{w[1]}/{w[2]} (min/median/max); "
                f"channels {', '.join(f'{c}: {n}' for c, n in sorted(self.channels.items()))}"
            )
        return text


def probe_images(dataset: ImageDataset | Sequence[str], sample: int | None = None, *, seed: int = 0) -> ImageProbe:
    """Decodes every file (or ``sample`` of them, seeded) to find unreadable ones and measure sizes.

    Decoding runs as a parallel tf.data pass, so probing 10,000 small images
    takes seconds. Mixed sizes and channels are fine. Raises ``DataError``
    when more than half of the checked files are unreadable (the data is not
    images, e.g. Git LFS pointers); fewer are left for the caller to drop.

    Example::

        data = read_images("pets/")
        probe = probe_images(data)
        data = data.without(probe.unreadable, "unreadable")
    """
    paths = list(dataset.paths if isinstance(dataset, ImageDataset) else dataset)
    if not paths:
        raise DataError("no images to probe; read a folder or CSV with images first")
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
        raise UserError(f"sample must be a positive number of images, got {sample!r}")
    idx = np.arange(len(paths))
    if sample is not None and sample < len(paths):
        idx = np.sort(np.random.default_rng(seed).choice(len(paths), size=sample, replace=False))
    chosen = [paths[i] for i in idx]

    shapes = _decode_shapes(chosen)
    bad = [p for i, p in enumerate(chosen) if i not in shapes]
    reasons = {p: _why_unreadable(p) for p in bad[:MAX_REASONS]}
    if bad and len(bad) > MAX_MISSING_FRACTION * len(chosen):
        first = bad[0]
        raise DataError(
            f"{len(bad)} of {len(chosen)} image files cannot be decoded (first: '{first}': {reasons[first]}); "
            "check that they are JPEG, PNG, BMP or GIF images"
        )
    if bad:
        warnings.warn(
            f"{len(bad)} of {len(chosen)} image files cannot be decoded (first: '{bad[0]}': {reasons[bad[0]]}); "
            "they will be skipped",
            UserWarning,
            stacklevel=2,
        )
    dims = np.array(list(shapes.values()), dtype=np.int64).reshape(-1, 3)
    return ImageProbe(
        checked=len(chosen),
        unreadable=bad,
        reasons=reasons,
        height=_min_median_max(dims[:, 0]),
        width=_min_median_max(dims[:, 1]),
        channels={int(c): int(n) for c, n in sorted(Counter(dims[:, 2].tolist()).items())},
    )


def _decode_shapes(paths: list[str]) -> dict[int, tuple[int, int, int]]:
    """(height, width, channels) by position for the files that decode; failures are simply absent."""
    import tensorflow as tf

    def shape_of(i: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        contents = tf.io.read_file(path)

        def jpeg() -> tf.Tensor:
            # A 1/8-scale decode still reads every byte of the compressed data,
            # so it finds the same corrupt files at a fraction of the cost; the
            # header gives the full size.
            with tf.control_dependencies([tf.io.decode_jpeg(contents, ratio=8)]):
                return tf.io.extract_jpeg_shape(contents)

        def other() -> tf.Tensor:
            # channels=0 keeps the stored channels, which the probe reports.
            return tf.shape(tf.io.decode_image(contents, channels=0, expand_animations=False))

        return i, tf.cond(_is_jpeg(contents), jpeg, other)

    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths), dtype=np.int64), paths))
    # Order does not matter here, so let the fastest decode finish first.
    ds = ds.map(shape_of, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).ignore_errors()
    shapes: dict[int, tuple[int, int, int]] = {}
    for i, shape in ds.batch(1024).as_numpy_iterator():
        for j, s in zip(i.tolist(), shape.tolist()):
            shapes[j] = (s[0], s[1], s[2])
    return shapes


def _why_unreadable(path: str) -> str:
    """A short reason one file fails to decode (decoded again eagerly, only for the message)."""
    import tensorflow as tf

    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if not head:
        return "the file is empty"
    if head.startswith(_LFS_POINTER):
        return "it is a Git LFS pointer, not the image (run 'git lfs pull')"
    try:
        tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)
    except (tf.errors.OpError, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        # Drop TensorFlow's "{{function_node ...}}" prefix and "[Op:...]" suffix: they name the op, not the problem.
        line = " ".join(re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]|\s*name:\s*$", " ", message).split()) or type(exc).__name__
        return line if len(line) <= 120 else line[:117] + "..."
    return "decoding failed in the parallel pass"  # e.g. a file that changed between the two reads


def _min_median_max(values: np.ndarray) -> tuple[int, int, int]:
    if len(values) == 0:
        return (0, 0, 0)
    return (int(values.min()), int(np.median(values)), int(values.max()))


# --- the input pipeline --------------------------------------------------------------------


class PipelineStats:
    """Counts the images a ``make_image_dataset`` pipeline dropped because they failed to load.

    Pass one as ``stats=``; after at least one full pass over the dataset,
    ``skipped`` is the number of files that could not be decoded and
    ``skipped_paths()`` names them (in prediction mode, the inputs with no
    output row).
    """

    def __init__(self) -> None:
        self._seen: Any = None  # a tf.Variable(bool, [n]) once attached to a pipeline
        self._paths: list[str] = []

    def _attach(self, paths: list[str]) -> Any:
        import tensorflow as tf

        if self._seen is not None:
            raise UserError("a PipelineStats counts one pipeline; make a new one for each make_image_dataset call")
        self._paths = paths
        # tf.data runs on the CPU; a variable placed on a GPU could not be updated from it.
        with tf.device("/CPU:0"):
            self._seen = tf.Variable(tf.zeros([len(paths)], tf.bool), trainable=False, name="images_loaded")
        return self._seen

    @property
    def loaded(self) -> int:
        """Distinct images decoded so far."""
        return 0 if self._seen is None else int(np.count_nonzero(self._seen.numpy()))

    @property
    def skipped(self) -> int:
        """Images not decoded so far: the unreadable ones once a full pass is done."""
        return len(self._paths) - self.loaded

    def skipped_paths(self) -> list[str]:
        if self._seen is None:
            return []
        seen = self._seen.numpy()
        return [p for p, ok in zip(self._paths, seen) if not ok]


@contextlib.contextmanager
def quiet_unknown_length() -> Iterator[None]:
    """Silences Keras's "input ran out of data" warning around fit/predict on these pipelines.

    ``make_image_dataset`` drops unreadable files, so its length is unknown and
    Keras warns whenever a first pass over it ends, which is expected here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        yield


def decode_and_resize(contents: "tf.Tensor", image_size: tuple[int, int]) -> "tf.Tensor":
    """Encoded image bytes (JPEG, PNG, BMP, GIF) to a uint8 ``(height, width, 3)`` tensor.

    Grayscale and palette images become RGB, alpha is dropped, a GIF gives its
    first frame. The image is resized with bilinear interpolation to exactly
    ``image_size``, so the aspect ratio is not kept (a 2:1 photo is squeezed);
    that is what most image classifiers are trained with and keeps every image
    whole. A JPEG at least twice the target size is decoded at 1/2, 1/4 or 1/8
    scale by the JPEG decoder itself (DCT scaling): several times faster for
    large photos, and it averages pixels rather than skipping them. The result
    is rounded to uint8, so cached images take a quarter of the memory.
    Training, evaluation and prediction all use this one function.
    """
    import tensorflow as tf

    height, width = image_size

    def generic() -> tf.Tensor:
        return tf.io.decode_image(contents, channels=3, expand_animations=False, dtype=tf.uint8)

    def jpeg() -> tf.Tensor:
        shape = tf.io.extract_jpeg_shape(contents)
        # The largest scale-down (8, 4, 2) that still leaves at least the target size.
        fits = [tf.logical_and(shape[0] >= height * r, shape[1] >= width * r) for r in (8, 4, 2)]
        branch = tf.where(fits[0], 0, tf.where(fits[1], 1, tf.where(fits[2], 2, 3)))
        decoders = [lambda r=r: tf.io.decode_jpeg(contents, channels=3, ratio=r) for r in (8, 4, 2, 1)]
        return tf.switch_case(branch, decoders)

    image = tf.cond(_is_jpeg(contents), jpeg, generic)
    image = tf.ensure_shape(image, [None, None, 3])
    resized = tf.image.resize(image, (height, width), method="bilinear")
    return tf.saturate_cast(tf.round(resized), tf.uint8)


def _is_jpeg(contents: "tf.Tensor") -> "tf.Tensor":
    """Whether encoded bytes are a JPEG, by its magic number (file extensions lie)."""
    import tensorflow as tf

    return tf.equal(tf.strings.substr(contents, 0, 3), b"\xff\xd8\xff")


def make_image_dataset(
    dataset_or_paths: ImageDataset | Sequence[str],
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    image_size: tuple[int, int] = (224, 224),
    batch_size: int = 32,
    training: bool = False,
    cache: bool = True,
    shuffle_seed: int = 0,
    stats: PipelineStats | None = None,
) -> "tf.data.Dataset":
    """A batched tf.data pipeline of ``(images, labels)``, or of ``images`` when there are no labels.

    ``images`` are float32 in [0, 255], shape ``(batch, height, width, 3)``
    (scale them in the model); ``labels`` are int64 class indices. Given an
    ``ImageDataset``, its labels are used unless ``labels`` is passed; for
    prediction pass a list of paths and no labels. Files are read and decoded
    in parallel (``decode_and_resize``); ``cache`` keeps the decoded, resized
    uint8 images in memory after the first pass (about ``n*h*w*3`` bytes;
    turn it off for data larger than memory). ``training`` shuffles (seeded,
    differently each epoch); otherwise the order is the input order. A file
    that fails to decode is dropped, not raised: pass ``stats`` to count them.

    >>> train = make_image_dataset(data.subset(split.train), image_size=(128, 128), training=True)  # doctest: +SKIP
    >>> valid = make_image_dataset(data.subset(split.valid), image_size=(128, 128))  # doctest: +SKIP
    >>> model.fit(train, validation_data=valid)  # doctest: +SKIP
    """
    import tensorflow as tf

    paths, y = _paths_and_labels(dataset_or_paths, labels)
    size = _image_size(image_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = len(paths)
    order = np.arange(n, dtype=np.int64)
    if training and cache:
        # The cache keeps the first pass's order and the buffer after it is
        # bounded, so start from a permutation: class-sorted input would
        # otherwise give one-class batches.
        order = np.random.default_rng(shuffle_seed).permutation(n)
    columns: tuple[Any, ...] = (order, np.asarray(paths, dtype=object)[order].astype(str))
    if y is not None:
        columns += (y[order],)
    ds = tf.data.Dataset.from_tensor_slices(columns)
    if training and not cache:
        # Shuffling file names is cheap, so shuffle all of them every epoch.
        ds = ds.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)

    def load(i: tf.Tensor, path: tf.Tensor, *label: tf.Tensor) -> tuple[tf.Tensor, ...]:
        return (i, decode_and_resize(tf.io.read_file(path), size), *label)

    # deterministic keeps seeded runs reproducible and prediction rows in input order.
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    if stats is not None:
        seen = stats._attach(list(paths))

        def mark(i: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
            # Marking (not counting) keeps the tally right over repeated epochs.
            with tf.control_dependencies([seen.scatter_nd_update(tf.reshape(i, [1, 1]), tf.constant([True]))]):
                return tuple(tf.identity(t) for t in rest)

        ds = ds.map(mark)
    else:
        ds = ds.map(lambda i, *rest: rest)
    if y is None:
        ds = ds.map(lambda image: image)  # a 1-tuple element is the bare image
    if cache:
        ds = ds.cache()
        if training:
            ds = ds.shuffle(min(n, SHUFFLE_BUFFER), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    # Cast after batching: one op per batch, and the buffers above hold uint8.
    def to_float(images: tf.Tensor, *label: tf.Tensor) -> Any:
        images = tf.cast(images, tf.float32)
        return (images, *label) if label else images

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def pipeline_throughput(
    dataset: ImageDataset | Sequence[str],
    *,
    image_size: tuple[int, int] = (224, 224),
    batch_size: int = 32,
    seconds: float = 5.0,
    cache: bool = False,
) -> float:
    """Images per second the input pipeline alone delivers (no model), for benchmarks.

    The pipeline repeats over the data for ``seconds`` after one warm-up batch
    (which traces the graph and fills the prefetch buffer). With ``cache=False``
    every image is read and decoded each time: the cold, first-epoch rate; with
    ``cache=True`` a full untimed pass fills the cache first: the rate of later
    epochs.

    Example: ``pipeline_throughput(read_images("pets/"), image_size=(160, 160), seconds=10)``.
    """
    paths = dataset.paths if isinstance(dataset, ImageDataset) else list(dataset)
    if not seconds > 0:
        raise UserError(f"seconds must be positive, got {seconds!r}")
    ds = make_image_dataset(paths, image_size=image_size, batch_size=batch_size, cache=cache)
    if cache:
        for _ in ds:
            pass
    batches = iter(ds.repeat())
    next(batches)
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        count += int(next(batches).shape[0])
    return count / elapsed


def _paths_and_labels(
    dataset_or_paths: ImageDataset | Sequence[str], labels: Sequence[int] | np.ndarray | None
) -> tuple[list[str], np.ndarray | None]:
    if isinstance(dataset_or_paths, ImageDataset):
        paths = list(dataset_or_paths.paths)
        if labels is None:
            labels = dataset_or_paths.labels
    elif isinstance(dataset_or_paths, (str, os.PathLike)):
        raise UserError("make_image_dataset takes a list of image paths or an ImageDataset, not a single path")
    else:
        paths = [os.fspath(p) for p in dataset_or_paths]
    if not paths:
        raise DataError("no images to load; the list of image paths is empty")
    if labels is None:
        return paths, None
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(paths):
        raise UserError(f"labels must be one class index per image: {len(paths)} images but labels of shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"labels must be integer class indices, got dtype {y.dtype}; encode the classes first")
    return paths, y.astype(np.int64)


def _image_size(image_size: Sequence[int]) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in image_size)
        ok = all(not isinstance(v, bool) and int(v) == v for v in image_size)
    except (TypeError, ValueError):
        ok = False
    if not ok or height < 1 or width < 1:
        raise UserError(f"image_size must be (height, width) in pixels, both >= 1, got {image_size!r}")
    return height, width
