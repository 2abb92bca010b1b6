"""Generated image folders and patched zoo weights for the image tests (no network, no real photos)."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
from pathlib import Path

import numpy as np
import tensorflow as tf

CLASSES = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def write_images(root: Path, classes: dict[str, tuple[int, int, int]], n: int, seed: int = 0) -> Path:
    """``root/<class>/<i>.png|jpg``: 32x32 noisy images whose colour is the class (half PNG, half JPEG)."""
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            if i % 2:
                (root / name / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(pixels, quality=90).numpy())
            else:
                (root / name / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


def unreachable_url() -> str:
    """A loopback URL nothing listens on: a download that fails at once, like being offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/weights.weights.h5"


def patch_weights(monkeypatch, name: str, file: Path | None = None) -> None:
    """Points ``name``'s card at ``file``'s checksum (no file: a made-up hash), published at an unreachable URL."""
    from autodl.zoo import Weights, get, registry

    digest = hashlib.sha256(file.read_bytes()).hexdigest() if file is not None else "0" * 64
    weights = Weights(url=unreachable_url(), file_hash=digest, filename=f"{name}.weights.h5", source="test", licence="CC0")
    entry = get(name)
    patched = dataclasses.replace(entry, card=dataclasses.replace(entry.card, pretrained=weights))
    monkeypatch.setitem(registry._ENTRIES, name, patched)


def run_cli(args: list, capsys) -> tuple[int, str, str]:
    """``autodl ARGS`` in-process: exit code, stdout, stderr."""
    from autodl.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err
