#!/usr/bin/env python3
"""Run an autodl edge bundle on a CSV or on images: needs only numpy and a LiteRT interpreter.

    python autodl_edge.py BUNDLE_DIR data.csv -o predictions.csv [--variant int8]
    python autodl_edge.py BUNDLE_DIR photo.jpg more_photos/ -o predictions.csv     (an image bundle)

The interpreter comes from ``ai-edge-litert`` (``pip install ai-edge-litert``) or,
on older boards, ``tflite-runtime``; whichever is installed is used. No
TensorFlow, pandas or autodl is needed: this file is copied into every bundle.

The bundle's ``schema.json`` says which columns the model reads and which
preprocessing steps run here in numpy because LiteRT's builtin ops cannot run
them (integer-category lookups, TF-IDF of text columns, date parts, BERT WordPiece
tokenization for the MiniLM text encoder); the rest
(imputation, scaling, string lookups) is inside ``model*.tflite``.

An image bundle (``"input": "image"`` in ``schema.json``) takes image files or
numpy arrays (``HxWx3`` RGB, any size, values 0-255): they are resized here in
numpy exactly as autodl's training pipeline resizes them (bilinear, half-pixel
centres, rounded to whole values). Decoding files uses Pillow when it is
installed; without it PNG files are still read (zlib and numpy) and other
formats give a clear error, while arrays always work.

Example (Python):

    from autodl_edge import EdgeModel, read_csv
    model = EdgeModel("bundle")
    rows = read_csv("new.csv", model.schema["missing_markers"])
    labels, probabilities = model.predict(rows)

    images = EdgeModel("image_bundle")
    labels, probabilities = images.predict(["cat.jpg", "dog.png"])   # or a list of HxWx3 arrays
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import struct
import sys
import time
import unicodedata
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

FORMAT = "autodl-edge/1"
_DELIMITERS = ",;\t|"
# Keras' TextVectorization "lower_and_strip_punctuation" removes exactly these characters.
_PUNCTUATION = re.compile(r"[!\"#$%&()\*\+,\-\./:;<=>?@\[\\\]^_`{|}~']")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# TensorFlow's (RE2's) \s, which autodl's "collapse_whitespace" standardization joins into one space.
_WHITESPACE = re.compile(r"[\t\n\f\r ]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INT_MISSING = np.iinfo(np.int64).min


def load_interpreter_class() -> tuple[Any, str]:
    """The LiteRT ``Interpreter`` class and the runtime's name, whichever package is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]

        return Interpreter, "tflite-runtime"
    except ImportError:
        raise SystemExit("error: no LiteRT interpreter; pip install ai-edge-litert (or tflite-runtime)") from None


# -- reading raw rows ------------------------------------------------------------------------


def read_csv(path: str | Path, missing_markers: Sequence[str] = ("",)) -> dict[str, list[str | None]]:
    """Columns of a CSV file as lists of strings, ``None`` where a value is missing."""
    text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    sample = "\n".join(text.splitlines()[:50])
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, skipinitialspace=True)
    header = [h.strip() for h in next(reader)]
    markers = set(missing_markers)
    columns: dict[str, list[str | None]] = {h: [] for h in header}
    for row in reader:
        if not row:
            continue
        for name, value in zip(header, row + [""] * (len(header) - len(row))):
            value = value.strip()
            columns[name].append(None if value in markers else value)
    return columns


def _floats(values: Iterable[str | float | None]) -> np.ndarray:
    out = []
    for v in values:
        try:
            out.append(float(v) if v is not None else math.nan)
        except (TypeError, ValueError):
            out.append(math.nan)
    return np.asarray(out, dtype=np.float64)


def _string(v: str | float | None) -> str:
    # The same spelling autodl's lookups were built from: missing → "", 3.0 → "3".
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else str(v)
    s = str(v).strip()
    try:
        f = float(s)
    except ValueError:
        return s
    return str(int(f)) if f.is_integer() and not s.lower().startswith(("inf", "nan", "-inf")) else s


def epoch_seconds(values: Iterable[str | None]) -> np.ndarray:
    """ISO-8601 dates or date-times (UTC unless an offset is given) → seconds since 1970; NaN if unparsable."""
    out = []
    for v in values:
        try:
            t = datetime.fromisoformat(str(v).strip().replace("Z", "+00:00")) if v else None
        except ValueError:
            t = None
        if t is None:
            out.append(math.nan)
            continue
        t = t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)
        out.append((t - _EPOCH).total_seconds())
    return np.asarray(out, dtype=np.float64)


# -- the host-side preprocessing steps ---------------------------------------------------------


def integer_lookup(values: np.ndarray, vocabulary: Sequence[int]) -> np.ndarray:
    """Index 1.. for known integers, 0 (the OOV bucket) for unseen or missing ones."""
    index = {int(v): i + 1 for i, v in enumerate(vocabulary)}
    return np.asarray([index.get(int(v), 0) for v in values], dtype=np.int64)


# TextVectorization standardizations the runner implements: what replaces punctuation.
_STANDARDIZE = {"split_punctuation": " ", "lower_and_strip_punctuation": ""}


def words(text: str, standardize: str = "split_punctuation") -> list[str]:
    """ASCII lower case, punctuation as spaces (autodl's ``split_punctuation``) or deleted (Keras' default), whitespace split."""
    return _PUNCTUATION.sub(_STANDARDIZE[standardize], text.translate(_ASCII_LOWER)).split()


def char_ngrams(text: str, widths: Sequence[int]) -> list[str]:
    """autodl's character n-grams: ASCII lower case, whitespace runs as one space, trimmed; characters joined by a space."""
    chars = list(_WHITESPACE.sub(" ", text.translate(_ASCII_LOWER)).strip(" "))
    return [" ".join(chars[i : i + n]) for n in widths for i in range(len(chars) - n + 1)]


def tfidf(
    texts: Sequence[str], vocabulary: Sequence[str], idf: Sequence[float], ngrams: int | Sequence[int] = 1,
    standardize: str = "split_punctuation", split: str = "whitespace",
) -> np.ndarray:
    """Keras TextVectorization(output_mode="tf_idf"): counts of terms times IDF.

    Terms are words (``ngrams`` 1), words and word pairs (``ngrams`` 2), or, with
    ``split="character"``, the character n-grams of the widths ``ngrams`` lists.
    """
    index = {w: i for i, w in enumerate(vocabulary)}
    counts = np.zeros((len(texts), len(vocabulary)), dtype=np.float32)
    for row, text in enumerate(texts):
        if split == "character":
            terms = char_ngrams(text, ngrams)  # type: ignore[arg-type]
        else:
            tokens = words(text, standardize)
            terms = tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])] if ngrams == 2 else tokens
        for term in terms:
            counts[row, index.get(term, 0)] += 1.0
    return counts * np.asarray(idf, dtype=np.float32)


def token_ids(
    texts: Sequence[str], vocabulary: Sequence[str], sequence_length: int, standardize: str = "split_punctuation",
) -> np.ndarray:
    """Keras TextVectorization(output_mode="int"): word indices (1 for unknown words), padded with 0, truncated."""
    index = {w: i for i, w in enumerate(vocabulary) if i >= 2}
    ids = np.zeros((len(texts), sequence_length), dtype=np.int64)
    for row, text in enumerate(texts):
        tokens = words(text, standardize)[:sequence_length]
        ids[row, : len(tokens)] = [index.get(t, 1) for t in tokens]
    return ids


# -- BERT WordPiece (the MiniLM encoder's tokenizer, keras-hub's WordPieceTokenizer + StartEndPacker) --

# CJK ideographs, each its own word (google-research/bert tokenization.py, as keras-hub splits them).
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
# Default-ignorable code points, dropped by tensorflow-text's case_fold_utf8 (NFKC_Casefold).
_DEFAULT_IGNORABLE_RANGES = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
                             (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
                             (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
                             (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF))
_VOCABULARY_INDEX: dict[int, tuple[Sequence[str], dict[str, int]]] = {}


def _in_ranges(c: str, ranges: Sequence[tuple[int, int]]) -> bool:
    cp = ord(c)
    return any(lo <= cp <= hi for lo, hi in ranges)


def _bert_punctuation(c: str) -> bool:
    """All non-alphanumeric printable ASCII (``$``, ``^``, `````...) and Unicode punctuation (category P*)."""
    cp = ord(c)
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or unicodedata.category(c)[0] == "P"


def _bert_space(c: str) -> bool:
    """ASCII whitespace (RE2's ``\\s``) and control / format characters (Cc, Cf): split on, dropped."""
    return c in " \t\n\r\f" or unicodedata.category(c) in ("Cc", "Cf")


def case_fold(text: str) -> str:
    """tensorflow-text's ``case_fold_utf8``: NFKC, full case folding, NFKC again, default ignorables dropped."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return "".join(c for c in text if not _in_ranges(c, _DEFAULT_IGNORABLE_RANGES))


def bert_words(text: str, lowercase: bool = True, strip_accents: bool = True, split_on_cjk: bool = True) -> list[str]:
    """BERT's basic tokenization as keras-hub does it: strip accents (NFD, drop Mn), split, then case-fold each word.

    Splits on whitespace and control characters (dropped) and on punctuation and CJK
    ideographs (each kept as a word of its own).

    >>> bert_words("Héllo, WORLD!  北京")
    ['hello', ',', 'world', '!', '北', '京']
    """
    return list(_bert_words(text, lowercase, strip_accents, split_on_cjk))


def _bert_words(text: str, lowercase: bool, strip_accents: bool, split_on_cjk: bool) -> Iterator[str]:
    """``bert_words`` one word at a time (a long text is only read as far as the sequence length needs)."""
    if strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    start = 0
    for i, c in enumerate(text):
        alone = _bert_punctuation(c) or (split_on_cjk and _in_ranges(c, _CJK_RANGES))
        if alone or _bert_space(c):
            if i > start:
                yield case_fold(text[start:i]) if lowercase else text[start:i]
            if alone:
                yield case_fold(c) if lowercase else c
            start = i + 1
    if len(text) > start:
        yield case_fold(text[start:]) if lowercase else text[start:]


def wordpiece_word(word: str, index: dict[str, int], unk_id: int, suffix: str = "##", max_bytes: int = 100) -> list[int]:
    """Greedy longest-match-first WordPiece of one word; ``[unk_id]`` when it cannot be split or is too long (bytes)."""
    if not word:
        return []
    if len(word.encode("utf-8")) > max_bytes:
        return [unk_id]
    ids = []
    start = 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else suffix + word[start:end]
            if piece in index:
                ids.append(index[piece])
                break
            end -= 1
        else:
            return [unk_id]
        start = end
    return ids


def _vocabulary_index(vocabulary: Sequence[str]) -> dict[str, int]:
    cached = _VOCABULARY_INDEX.get(id(vocabulary))
    if cached is None or cached[0] is not vocabulary:
        cached = (vocabulary, {t: i for i, t in enumerate(vocabulary)})
        _VOCABULARY_INDEX[id(vocabulary)] = cached
    return cached[1]


def wordpiece(texts: Sequence[str], params: dict[str, Any]) -> dict[str, np.ndarray]:
    """The MiniLM encoder's ``BertTokens`` layer: texts → ``token_ids`` and ``padding_mask``, int32 ``(rows, L)``.

    ``[CLS]`` + word pieces (the first L - 2) + ``[SEP]``, padded with ``pad_id``; the mask is 1
    on the packed positions. ``params``: the ``wordpiece`` step's parameters in ``schema.json``.
    """
    index = _vocabulary_index(params["vocabulary"])
    length = int(params["sequence_length"])
    ids = np.full((len(texts), length), params["pad_id"], dtype=np.int32)
    mask = np.zeros((len(texts), length), dtype=np.int32)
    for row, text in enumerate(texts):
        pieces = []
        for word in _bert_words(text, params["lowercase"], params["strip_accents"], params["split_on_cjk"]):
            pieces += wordpiece_word(word, index, params["unk_id"], params["suffix_indicator"], params["max_bytes_per_word"])
            if len(pieces) >= length - 2:
                break
        packed = [params["cls_id"], *pieces[:length - 2], params["sep_id"]]
        ids[row, :len(packed)] = packed
        mask[row, :len(packed)] = 1
    return {"token_ids": ids, "padding_mask": mask}


def datetime_parts(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds → (year, month, day, weekday Mon=0, hour), NaN where missing (as the model does)."""
    days = np.floor(seconds / 86400.0)
    hour = np.floor((seconds - days * 86400.0) / 3600.0)
    weekday = np.mod(days + 3.0, 7.0)
    z = days + 719468.0
    era = np.floor(z / 146097.0)
    doe = z - era * 146097.0
    yoe = np.floor((doe - np.floor(doe / 1460.0) + np.floor(doe / 36524.0) - np.floor(doe / 146096.0)) / 365.0)
    doy = doe - (365.0 * yoe + np.floor(yoe / 4.0) - np.floor(yoe / 100.0))
    mp = np.floor((5.0 * doy + 2.0) / 153.0)
    day = doy - np.floor((153.0 * mp + 2.0) / 5.0) + 1.0
    month = np.where(mp < 10.0, mp + 3.0, mp - 9.0)
    year = yoe + era * 400.0 + (month <= 2.0)
    return np.stack([year, month, day, weekday, hour], axis=-1).astype(np.float32)


def prepare_inputs(schema: dict[str, Any], columns: Any) -> dict[str, np.ndarray]:
    """Raw column values → float32 / int64 / UTF-8 byte-string arrays, one per model input tensor.

    For an image bundle, ``columns`` is the images instead (see ``image_batch``).
    """
    if schema.get("input") == "image":
        return {schema["input_name"]: image_batch(schema, columns)}
    missing = [c for c in schema["columns_read"] if c not in columns]
    if missing:
        raise SystemExit(f"error: input is missing column(s) {', '.join(missing)} that the model was trained on")
    feeds: dict[str, np.ndarray] = {}
    computed: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # ops with several outputs, once per column
    for name, spec in schema["inputs"].items():
        raw = columns[spec["column"]]
        if spec["source"] == "column":
            if spec["dtype"] == "string":
                feeds[name] = np.asarray([_string(v).encode("utf-8") for v in raw], dtype=bytes)
            else:
                feeds[name] = _floats(raw).astype(np.float32)
        elif spec["op"] == "integer_lookup":
            numbers = _floats(raw)
            ints = np.where(np.isnan(numbers), _INT_MISSING, np.round(np.nan_to_num(numbers))).astype(np.int64)
            feeds[name] = integer_lookup(ints, spec["params"]["vocabulary"])
        elif spec["op"] == "tfidf":
            params = spec["params"]
            feeds[name] = tfidf([_string(v) for v in raw], params["vocabulary"], params["idf"], params.get("ngrams", 1),
                                params.get("standardize", "lower_and_strip_punctuation"), params.get("split", "whitespace"))
        elif spec["op"] == "token_ids":
            params = spec["params"]
            feeds[name] = token_ids([_string(v) for v in raw], params["vocabulary"], params["sequence_length"],
                                    params.get("standardize", "lower_and_strip_punctuation"))
        elif spec["op"] == "numeric":
            feeds[name] = numeric_features(columns, spec["params"])
        elif spec["op"] == "wordpiece":
            # One step, two inputs (token_ids, padding_mask): the second's params say {"shared_with": first input}.
            source = spec["params"].get("shared_with", name)
            key = (spec["column"], source)
            if key not in computed:
                computed[key] = wordpiece([_string(v) for v in raw], schema["inputs"][source]["params"])
            feeds[name] = computed[key][spec["output"]]
        else:
            raise SystemExit(f"error: unknown preprocessing step '{spec['op']}' in schema.json")
    return feeds


def numeric_features(columns: dict[str, Sequence[Any]], params: dict[str, Any]) -> np.ndarray:
    """autodl's numeric block, in float32 as the Keras model computes it: dates → parts, impute, scale, indicators."""
    parts = []
    for spec in params["columns"]:
        values = columns[spec["column"]]
        if spec["kind"] == "datetime":
            parts.append(datetime_parts(epoch_seconds(values)))
        else:
            parts.append(_floats(values).astype(np.float32)[:, None])
    raw = np.concatenate(parts, axis=1).astype(np.float32)
    filled = np.where(np.isnan(raw), np.asarray(params["fill"], dtype=np.float32), raw)
    if params["transform"] == "quantile":
        q = np.asarray(params["quantiles"], dtype=np.float64)
        lo = q[:, :-1].astype(np.float32)
        inv_width = (1.0 / np.maximum(np.diff(q, axis=1), 1e-6)).astype(np.float32)
        ramps = np.clip((filled[:, :, None] - lo) * inv_width, 0.0, 1.0)
        scaled = (ramps.mean(axis=-1) - np.float32(0.5)) * np.float32(np.sqrt(12.0))
    else:
        std = np.maximum(np.sqrt(np.asarray(params["variance"], dtype=np.float32)), np.float32(1e-7))
        scaled = (filled - np.asarray(params["mean"], dtype=np.float32)) / std
    if params["missing"]:
        indicators = np.isnan(raw[:, params["missing"]]).astype(np.float32)
        scaled = np.concatenate([scaled, indicators], axis=1)
    return scaled.astype(np.float32)


# -- images (image bundles) ------------------------------------------------------------------

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def resize_bilinear(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``(h, w, c)`` → float32 ``(height, width, c)``: TensorFlow's bilinear resize, half-pixel centres, no antialias.

    The same arithmetic as ``tf.image.resize(..., "bilinear")`` in float32, so pixels
    match autodl's training pipeline (to rounding).

    >>> resize_bilinear(np.array([[[0.0], [10.0]]]), (1, 4))[0, :, 0].tolist()
    [0.0, 2.5, 7.5, 10.0]
    """
    height, width = int(size[0]), int(size[1])
    image = np.asarray(image, dtype=np.float32)

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = np.float32(n_in) / np.float32(n_out)
        x = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
        floor = np.floor(x)
        lower = np.maximum(floor, 0).astype(np.int64)
        upper = np.minimum(np.ceil(x), n_in - 1).astype(np.int64)
        return lower, upper, (x - floor).astype(np.float32)

    y0, y1, ylerp = axis(image.shape[0], height)
    x0, x1, xlerp = axis(image.shape[1], width)
    xlerp = xlerp[None, :, None]
    top = image[y0][:, x0] + (image[y0][:, x1] - image[y0][:, x0]) * xlerp
    bottom = image[y1][:, x0] + (image[y1][:, x1] - image[y1][:, x0]) * xlerp
    return (top + (bottom - top) * ylerp[:, None, None]).astype(np.float32)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Grey ``(h, w)`` / ``(h, w, 1)``, grey+alpha, RGB or RGBA → ``(h, w, 3)``; alpha is dropped, as TensorFlow does."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise SystemExit(f"error: an image must be (height, width) or (height, width, 1-4 channels), got shape {image.shape}")
    if image.shape[2] in (1, 2):
        return np.repeat(image[:, :, :1], 3, axis=2)
    return image[:, :, :3]


def _unfilter_png(raw: np.ndarray, height: int, stride: int, bpp: int) -> np.ndarray:
    """Undoes the per-row PNG filters (None, Sub, Up, Average, Paeth)."""
    out = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        kind, line = int(raw[y, 0]), raw[y, 1:].astype(np.int64)
        if kind == 0:
            row = line
        elif kind == 1:
            row = np.zeros(stride, dtype=np.int64)
            for j in range(bpp):  # each byte adds the one bpp before it: a running sum per byte lane
                row[j::bpp] = np.cumsum(line[j::bpp]) % 256
        elif kind == 2:
            row = (line + previous) % 256
        elif kind in (3, 4):
            cur, up = [0] * stride, previous.tolist()
            values = line.tolist()
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b = up[i]
                if kind == 3:
                    cur[i] = (values[i] + (a + b) // 2) & 255
                    continue
                c = up[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[i] = (values[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            row = np.asarray(cur, dtype=np.int64)
        else:
            raise ValueError(f"bad PNG filter type {kind}")
        out[y] = row
        previous = row
    return out


def decode_png(data: bytes) -> np.ndarray:
    """A non-interlaced 8- or 16-bit PNG → uint8 ``(h, w, channels)``, with only zlib and numpy (no Pillow).

    16-bit samples keep their high byte, as TensorFlow's uint8 decode does.
    """
    if not data.startswith(_PNG_MAGIC):
        raise ValueError("not a PNG file")
    pos, chunks, palette, header = 8, [], None, None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without a header")
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour)
    if channels is None or interlace or depth not in (8, 16) or (colour == 3 and (depth != 8 or palette is None)):
        raise ValueError("interlaced or low-bit-depth PNG; install Pillow to read it")
    bpp = channels * depth // 8
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), dtype=np.uint8)[:height * (width * bpp + 1)]
    pixels = _unfilter_png(raw.reshape(height, width * bpp + 1), height, width * bpp, bpp)
    if depth == 16:
        pixels = pixels.reshape(height, width * channels, 2)[:, :, 0]
    pixels = pixels.reshape(height, width, channels)
    if colour == 3:
        pixels = palette[np.minimum(pixels[:, :, 0], len(palette) - 1)]
    return pixels


def read_image(path: str | Path, size: Sequence[int] | None = None) -> np.ndarray:
    """An image file → uint8 RGB ``(h, w, 3)``, decoded with Pillow when installed (PNG also without it).

    With ``size`` (height, width), a large JPEG is decoded at 1/2, 1/4 or 1/8 scale as autodl's
    pipeline decodes it (``Image.draft``, the JPEG decoder's own DCT scaling).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SystemExit(f"error: cannot read image '{path}' ({e.strerror or e})") from None
    try:
        from PIL import Image
    except ImportError:
        if not data.startswith(_PNG_MAGIC):
            raise SystemExit(f"error: reading '{path}' needs Pillow (pip install Pillow); without it only PNG files "
                             "are read, or pass numpy arrays") from None
        try:
            return as_rgb(decode_png(data))
        except (ValueError, zlib.error) as e:
            raise SystemExit(f"error: cannot decode '{path}' ({e})") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if size is not None and image.format == "JPEG":
                image.draft("RGB", (int(size[1]), int(size[0])))
            return as_rgb(np.asarray(image.convert("RGB")))
    except (OSError, ValueError, SyntaxError) as e:
        raise SystemExit(f"error: cannot decode '{path}' ({e})") from None


def fit_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """One RGB image → float32 ``(height, width, 3)``: as is when already that size, else resized and rounded.

    Rounding to whole values after the resize is what the training pipeline does (it caches uint8).
    """
    image = as_rgb(image)
    if tuple(image.shape[:2]) == (int(size[0]), int(size[1])):
        return image.astype(np.float32)
    return np.clip(np.round(resize_bilinear(image, size)), 0.0, 255.0).astype(np.float32)


def image_batch(schema: dict[str, Any], images: Any) -> np.ndarray:
    """Images → the model's float32 ``(n, height, width, 3)`` pixels in [0, 255].

    ``images``: a ``(n, height, width, 3)`` array, or a sequence of file paths and/or
    ``(h, w[, c])`` arrays of any size.
    """
    size = schema["image_size"]
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images) if tuple(images.shape[1:]) != (size[0], size[1], 3) else images
        if isinstance(images, np.ndarray):
            return images.astype(np.float32)
    if isinstance(images, (str, Path)):
        images = [images]
    out = np.zeros((len(images), int(size[0]), int(size[1]), 3), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = fit_image(read_image(image, size) if isinstance(image, (str, Path)) else image, size)
    return out


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """Files and folders (searched recursively, sorted) → the image files among them."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
        elif p.is_file():
            found.append(p)
        else:
            raise SystemExit(f"error: '{p}' does not exist")
    if not found:
        raise SystemExit(f"error: no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


# -- per-group fairness thresholds (autodl fit --mitigate threshold) ----------------------------

THRESHOLDS_FILE = "fairness_thresholds.json"
MISSING_GROUP = "(missing)"


def favourable_probability(groups_rules: dict[str, Any], scores: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Probability of the favourable decision per row, and how many rows fell in groups without rules.

    For a row of group ``g`` with favourable-class score ``s`` it is
    ``p0 * [s op0 t0] + p1 * [s op1 t1]`` (Fairlearn's ``InterpolatedThresholder``);
    rows of unknown groups keep the model's own decision (score above 0.5). This is
    the one implementation: autodl's ``GroupThresholds`` calls it too.
    """
    def apply(operation: Sequence[Any], s: np.ndarray) -> np.ndarray:
        threshold = float(operation[1])  # "inf" / "-inf" as stored in JSON, or a number
        return s > threshold if operation[0] == ">" else s < threshold

    scores = np.asarray(scores, dtype=float)
    out = (scores > 0.5).astype(float)
    seen = np.zeros(len(scores), dtype=bool)
    for group, rule in groups_rules.items():
        rows = groups == group
        seen |= rows
        p = rule["p0"] * apply(rule["operation0"], scores[rows]) + rule["p1"] * apply(rule["operation1"], scores[rows])
        if "p_ignore" in rule:
            p = rule["p_ignore"] * rule["prediction_constant"] + (1 - rule["p_ignore"]) * p
        out[rows] = p
    return out, int((~seen).sum())


def favourable_decisions(probability: np.ndarray, seed: int) -> np.ndarray:
    """0/1 draws as Fairlearn's ``predict(random_state=seed)`` makes them: deterministic where p is 0 or 1."""
    return (probability >= np.random.RandomState(seed).rand(len(probability))).astype(int)


def group_keys(columns: dict[str, Sequence[Any]], sensitive: Sequence[str]) -> np.ndarray:
    """The intersection group of each row ("F & White"), as autodl names groups."""
    values = [[MISSING_GROUP if v is None or v == "" else str(v) for v in columns[c]] for c in sensitive]
    return np.asarray([" & ".join(parts) for parts in zip(*values)], dtype=object)


# -- the model -------------------------------------------------------------------------------


class EdgeModel:
    """One variant of an edge bundle, predicting from raw column values."""

    def __init__(self, bundle: str | Path, variant: str | None = None, num_threads: int | None = None) -> None:
        self.bundle = Path(bundle)
        self.schema = json.loads((self.bundle / "schema.json").read_text(encoding="utf-8"))
        if self.schema.get("format") != FORMAT:
            raise SystemExit(f"error: {self.bundle / 'schema.json'} is not an {FORMAT} bundle")
        self.labels = json.loads((self.bundle / "labels.json").read_text(encoding="utf-8"))
        rules = self.bundle / THRESHOLDS_FILE
        self.fairness = json.loads(rules.read_text(encoding="utf-8")) if rules.exists() else None
        variants = self.schema["variants"]
        self.variant = variant or self.schema["default_variant"]
        if self.variant not in variants:
            raise SystemExit(f"error: bundle has no variant '{self.variant}'; it has {', '.join(variants)}")
        interpreter_class, self.runtime = load_interpreter_class()
        path = self.bundle / variants[self.variant]["file"]
        self.interpreter = interpreter_class(model_path=str(path), num_threads=num_threads)
        # Tensors by name, not signature runners: a signature needs the converter to keep the
        # weights as resource variables, which blocks quantization (see autodl/export/tflite.py).
        # Pruned and QAT variants (converted from tf_keras) do carry a signature; its keys are the names.
        if self.interpreter.get_signature_list():
            runner = self.interpreter.get_signature_runner()
            self.input_details = runner.get_input_details()
            self.output_detail = next(iter(runner.get_output_details().values()))
        else:
            self.input_details = {d["name"]: d for d in self.interpreter.get_input_details()}
            self.output_detail = self.interpreter.get_output_details()[0]
        self._batch = -1

    @property
    def is_image(self) -> bool:
        return self.schema.get("input") == "image"

    def inputs(self, columns: Any) -> dict[str, np.ndarray]:
        """Raw column values (an image bundle: images) → the arrays this variant's interpreter takes."""
        return {name: self._quantize(name, value) for name, value in prepare_inputs(self.schema, columns).items()}

    def _quantize(self, name: str, value: np.ndarray) -> np.ndarray:
        detail = self.input_details[name]
        dtype = detail["dtype"]
        if dtype in (np.int8, np.uint8) and value.dtype.kind == "f":
            scale, zero_point = detail["quantization"]
            info = np.iinfo(dtype)
            # Clip before the cast: an out-of-range value must saturate, not wrap around.
            q = np.clip(np.round(np.nan_to_num(value) / scale + zero_point), info.min, info.max)
            return q.astype(dtype)
        return value if value.dtype.kind in "SO" else value.astype(dtype)

    def raw_output(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One invoke on a batch of already-prepared inputs (resizing the interpreter when the batch changes)."""
        batch = len(next(iter(feeds.values())))
        if batch != self._batch:
            for name, value in feeds.items():
                self.interpreter.resize_tensor_input(self.input_details[name]["index"], list(value.shape))
            self.interpreter.allocate_tensors()
            self._batch = batch
        for name, value in feeds.items():
            self.interpreter.set_tensor(self.input_details[name]["index"], value)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output_detail["index"])
        if self.output_detail["dtype"] in (np.int8, np.uint8):
            scale, zero_point = self.output_detail["quantization"]
            out = (out.astype(np.float32) - zero_point) * scale
        return np.asarray(out, dtype=np.float32)

    def predict_output(self, columns: Any, batch_size: int | None = None) -> np.ndarray:
        """Probabilities ``(rows, classes)`` or values ``(rows,)``; an image bundle takes images (``image_batch``)."""
        # Images are large: smaller batches keep the interpreter's buffers small.
        batch_size = batch_size or (32 if self.is_image else 1024)
        feeds = self.inputs(columns)
        n = len(next(iter(feeds.values())))
        parts = [self.raw_output({k: v[i:i + batch_size] for k, v in feeds.items()}) for i in range(0, n, batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0,), dtype=np.float32)

    def predict(self, columns: Any) -> tuple[list[Any], np.ndarray]:
        """Labels (or values) and the raw output.

        A bundle exported from a run mitigated with per-group thresholds carries them;
        they decide the labels when the sensitive columns are present (as ``autodl
        predict`` does), and a warning says so when they are not.
        """
        output = self.predict_output(columns)
        if self.schema["task"] == "regression":
            return [float(v) for v in output], output
        chosen = decide(output, self.schema.get("threshold"))
        if self.fairness is not None:
            missing = [c for c in self.fairness["sensitive"] if c not in columns]
            if missing:
                print(f"warning: the bundle's fairness thresholds need column(s) {', '.join(missing)}; "
                      "without them the labels are the model's own", file=sys.stderr)
            else:
                positive = [str(label) for label in self.labels].index(str(self.fairness["positive"]))
                probability, _ = favourable_probability(self.fairness["groups"], output[:, positive],
                                                        group_keys(columns, self.fairness["sensitive"]))
                decided = favourable_decisions(probability, int(self.fairness.get("seed", 0)))
                chosen = np.where(decided == 1, positive, 1 - positive)
        return [self.labels[int(i)] for i in chosen], output


def decide(output: np.ndarray, threshold: float | None) -> np.ndarray:
    """Class indices: a binary bundle's second label where its probability reaches the run's threshold, else argmax."""
    if threshold is None or output.ndim != 2 or output.shape[1] != 2:
        return np.argmax(output, axis=1)
    return (output[:, 1] >= threshold).astype(np.int64)


def write_predictions(path: str | Path | None, schema: dict[str, Any], labels: list[Any], output: np.ndarray,
                      classes: Sequence[Any], paths: Sequence[str | Path] | None = None) -> None:
    """The same columns as ``autodl predict``: prediction, then proba_<class> for classifiers (``path`` first for images)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    first = ["path"] if paths is not None else []
    keys = [[str(p)] for p in paths] if paths is not None else [[] for _ in labels]
    if schema["task"] == "regression":
        writer.writerow(first + ["prediction"])
        writer.writerows([key + [repr(float(v))] for key, v in zip(keys, output)])
    else:
        writer.writerow(first + ["prediction"] + [f"proba_{c}" for c in classes])
        for key, label, row in zip(keys, labels, output):
            writer.writerow(key + [label] + [repr(float(p)) for p in row])
    if path is None:
        sys.stdout.write(buffer.getvalue())
    else:
        Path(path).write_text(buffer.getvalue(), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Predict a CSV or images with an autodl edge bundle (numpy + LiteRT only).")
    parser.add_argument("bundle", help="bundle directory (schema.json, labels.json, model*.tflite)")
    parser.add_argument("data", nargs="+",
                        help="CSV with the columns the model was trained on; for an image bundle, image files and/or folders")
    parser.add_argument("-o", "--output", help="CSV to write (default: standard output)")
    parser.add_argument("--variant", help="float32, float16, dynamic or int8 (default: the bundle's choice)")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model = EdgeModel(args.bundle, args.variant, args.threads)
    if model.is_image:
        paths = image_files(args.data)
        labels, output = model.predict([str(p) for p in paths])
        write_predictions(args.output, model.schema, labels, output, model.labels, paths=paths)
    else:
        if len(args.data) != 1:
            parser.error("a table bundle predicts one CSV file")
        columns = read_csv(args.data[0], model.schema["missing_markers"])
        labels, output = model.predict(columns)
        write_predictions(args.output, model.schema, labels, output, model.labels)
    print(f"{len(labels)} rows predicted with {model.variant} on {model.runtime} in {time.perf_counter() - start:.2f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
