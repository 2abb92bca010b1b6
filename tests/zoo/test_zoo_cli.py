"""`autodl zoo list / show / pull` through autodl.cli.main."""

from __future__ import annotations

import numpy as np

from autodl.cli import main
from autodl.zoo import Weights, cache_dir, get
from tests.zoo.conftest import sha256


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def local_weights(tmp_path, name: str = "downloaded.h5") -> tuple:
    data = np.random.default_rng(0).integers(0, 256, 40_000, dtype=np.uint8).tobytes()
    path = tmp_path / name
    path.write_bytes(data)
    return path, Weights("https://unreachable.invalid/w.h5", sha256(data), "w.h5", "ImageNet-1k, test", "CC0")


def test_list_shows_vision_and_tabular_entries(capsys) -> None:
    code, out, _ = run(["zoo", "list"], capsys)
    assert code == 0
    for name in ("mobilenet_v3_small", "convnext_tiny", "small_cnn", "mlp", "ft_transformer"):
        assert name in out
    assert "ImageNet top-1 68.1%" in out and "224x224x3" in out
    code, out, _ = run(["zoo", "list", "--task", "image"], capsys)
    assert code == 0 and "efficientnet_v2_b0" in out and "mlp_plr" not in out


def test_list_refuses_an_unknown_task(capsys) -> None:
    code, _, err = run(["zoo", "list", "--task", "audio"], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "--task takes one of" in err


def test_show_prints_the_card_with_url_and_hash(capsys) -> None:
    card = get("mobilenet_v3_small").card
    code, out, _ = run(["zoo", "show", "mobilenet_v3_small"], capsys)
    assert code == 0
    assert card.pretrained.url in out and card.pretrained.file_hash in out
    assert str(cache_dir() / card.pretrained.filename) in out and "not cached" in out
    assert "arxiv.org/abs/1905.02244" in out and f"parameters: {card.parameters:,}" in out


def test_show_json_has_every_card_field(capsys) -> None:
    import json

    code, out, _ = run(["zoo", "show", "convnext_tiny", "--json"], capsys)
    card = json.loads(out)
    assert code == 0 and card["pretrained"]["hash_algorithm"] == "sha256" and card["cache"]["cached"] is False
    assert set(card) >= {"paper", "licence", "input_shape", "reference_accuracy", "parameters", "flops"}


def test_show_unknown_entry_is_a_one_line_error(capsys) -> None:
    code, _, err = run(["zoo", "show", "nope"], capsys)
    assert code == 2 and err.startswith("error: unknown zoo entry 'nope'") and err.strip().count("\n") == 0


def test_pull_from_a_local_file_verifies_and_caches(tmp_path, patch_weights, capsys) -> None:
    path, weights = local_weights(tmp_path)
    patch_weights("mobilenet_v3_small", weights)
    code, out, err = run(["zoo", "pull", "mobilenet_v3_small", "--from", path], capsys)
    assert code == 0, err
    cached = cache_dir() / "w.h5"
    assert out.strip() == str(cached) and cached.read_bytes() == path.read_bytes()
    assert "checksum verified" in err
    code, out, _ = run(["zoo", "list", "--task", "image"], capsys)
    row = next(line for line in out.splitlines() if "mobilenet_v3_small" in line)
    assert "yes" in row


def test_pull_of_a_wrong_file_exits_2_and_caches_nothing(tmp_path, patch_weights, capsys) -> None:
    path, weights = local_weights(tmp_path)
    patch_weights("mobilenet_v3_small", weights)
    path.write_bytes(b"not the published weights")
    code, out, err = run(["zoo", "pull", "mobilenet_v3_small", "--from", path], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: checksum mismatch") and err.strip().count("\n") == 0
    assert not cache_dir().exists() or not any(cache_dir().iterdir())


def test_pull_refuses_unknown_names_and_entries_without_weights(capsys) -> None:
    code, _, err = run(["zoo", "pull", "nope"], capsys)
    assert code == 2 and "unknown zoo entry" in err
    code, _, err = run(["zoo", "pull", "small_cnn"], capsys)
    assert code == 2 and "no pretrained weights" in err and err.strip().count("\n") == 0
