"""Pretrained weights: verified, atomic, cached downloads over a loopback server; loading by layer order."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from autodl.errors import UserError
from autodl.zoo import Weights, cache_dir, fetch, get, load_pretrained
from autodl.zoo.weights import cached_path, file_digest, is_cached
from tests.zoo.conftest import save_legacy_h5, sha256


def payload(n: int = 2_500_000, seed: int = 0) -> bytes:
    # More than two read chunks (1 MiB), so streaming and progress are exercised.
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def weights_for(url: str, data: bytes, filename: str = "demo.h5", *, md5: bool = False) -> Weights:
    digest = hashlib.md5(data).hexdigest() if md5 else sha256(data)
    return Weights(url=url, file_hash=digest, filename=filename, source="test", licence="CC0")


def cache_files() -> list[str]:
    """Everything in the cache folder, temp files included."""
    return sorted(os.listdir(cache_dir())) if cache_dir().exists() else []


def test_cache_dir_follows_autodl_home_then_xdg(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AUTODL_HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / "weights"
    monkeypatch.delenv("AUTODL_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "autodl" / "weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert cache_dir() == tmp_path / "user" / ".cache" / "autodl" / "weights"


def test_weights_record_checks_its_hash() -> None:
    assert Weights("u", "A" * 64, "f.h5", "s", "l").hash_algorithm == "sha256"
    assert Weights("u", "a" * 32, "f.h5", "s", "l").hash_algorithm == "md5"
    with pytest.raises(ValueError, match="hex digest"):
        Weights("u", "abc", "f.h5", "s", "l")
    with pytest.raises(ValueError, match="bare file name"):
        Weights("u", "a" * 32, "../f.h5", "s", "l")


@pytest.mark.parametrize("md5", [False, True])
def test_download_is_verified_cached_and_not_repeated(server, md5) -> None:
    data = payload()
    weights = weights_for(server.serve("/good.h5", data), data, md5=md5)
    progress: list[tuple[int, int | None]] = []
    path = fetch(weights, on_progress=lambda done, total: progress.append((done, total)))
    assert path == cached_path(weights) and path.read_bytes() == data
    assert progress[-1] == (len(data), len(data)) and len(progress) >= 3
    assert cache_files() == ["demo.h5"]  # no temp file left behind
    assert is_cached(weights, verify=True)
    assert fetch(weights) == path
    assert server.requests == ["/good.h5"]  # the second fetch came from the cache


def test_bad_checksum_is_rejected_and_leaves_nothing(server) -> None:
    data = payload()
    weights = weights_for(server.serve("/bad.h5", data), b"the published file")
    with pytest.raises(UserError, match="checksum mismatch") as e:
        fetch(weights)
    assert "\n" not in str(e.value) and weights.file_hash in str(e.value)
    assert cache_files() == []


def test_truncated_download_is_rejected_and_leaves_nothing(server) -> None:
    data = payload(300_000)
    weights = weights_for(server.serve("/cut.h5", data, truncate=True), data)
    with pytest.raises(UserError, match="truncated") as e:
        fetch(weights)
    assert f"got {len(data)} of {2 * len(data)} bytes" in str(e.value)
    assert cache_files() == []


def test_unreachable_url_says_how_to_pull_offline(closed_port_url) -> None:
    weights = Weights(closed_port_url, "0" * 64, "offline.h5", "test", "CC0")
    with pytest.raises(UserError, match="autodl zoo pull NAME --from FILE") as e:
        fetch(weights, timeout=5)
    assert "cannot reach" in str(e.value) and "\n" not in str(e.value)
    assert cache_files() == []


def test_http_error_is_a_user_error(server) -> None:
    weights = Weights(server.url + "/missing.h5", "0" * 64, "missing.h5", "test", "CC0")
    with pytest.raises(UserError, match="HTTP 404"):
        fetch(weights)


def test_corrupted_cache_is_fetched_again(server) -> None:
    data = payload(100_000)
    weights = weights_for(server.serve("/w.h5", data), data)
    path = fetch(weights)
    path.write_bytes(b"bit rot")
    assert fetch(weights).read_bytes() == data
    assert server.requests == ["/w.h5", "/w.h5"]


def test_local_path_and_file_url_sources(tmp_path) -> None:
    data = payload(50_000)
    local = tmp_path / "downloaded.h5"
    local.write_bytes(data)
    weights = weights_for("https://unreachable.invalid/w.h5", data)
    assert fetch(weights, source=local).read_bytes() == data
    cached_path(weights).unlink()
    assert fetch(weights, source=local.as_uri()).read_bytes() == data
    cached_path(weights).unlink()
    with pytest.raises(UserError, match="is not a file"):
        fetch(weights, source=tmp_path / "nope.h5")
    with pytest.raises(UserError, match="only local paths"):
        fetch(weights, source="ftp://example.org/w.h5")


def test_names_without_weights_are_user_errors() -> None:
    with pytest.raises(UserError, match="unknown zoo entry 'nope'"):
        fetch("nope")
    with pytest.raises(UserError, match="no pretrained weights"):
        fetch("small_cnn")


def test_load_pretrained_from_loopback_by_layer_order(server, patch_weights, tmp_path) -> None:
    """A Keras-Applications-style legacy .h5 of a random backbone, served, fetched and loaded into a fresh one."""
    entry = get("mobilenet_v3_small")
    source = entry.build((32, 32, 3))
    file = save_legacy_h5(source, tmp_path / "weights_mobilenet_v3_small_no_top.h5")
    data = file.read_bytes()
    patch_weights(entry.card.name, weights_for(server.serve("/mnv3.h5", data), data, filename=file.name))

    fresh = entry.build((32, 32, 3))
    path = load_pretrained(fresh, entry.card.name)
    assert file_digest(path, "sha256") == sha256(data)
    assert len(fresh.weights) == len(source.weights)
    for a, b in zip(source.weights, fresh.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(fresh.predict(x, verbose=0), source.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_load_pretrained_rejects_weights_of_another_model(patch_weights, tmp_path) -> None:
    small = get("small_cnn").build((32, 32, 3))
    file = save_legacy_h5(small, tmp_path / "other.h5")
    data = file.read_bytes()
    patch_weights("mobilenet_v3_small", weights_for("https://unreachable.invalid/other.h5", data, filename="other.h5"))
    backbone = get("mobilenet_v3_small").build((32, 32, 3))
    with pytest.raises(UserError, match="does not fit the mobilenet_v3_small backbone"):
        load_pretrained(backbone, "mobilenet_v3_small", source=file)
