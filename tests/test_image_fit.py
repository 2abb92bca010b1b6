"""`autodl fit` on images: the keras-tuner search over zoo backbones, resume, and bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.imagedata import CLASSES, patch_weights, run_cli, write_images

PER_CLASS = 20
FAST = ["--image-size", "32", "--max-epochs", "4", "--quiet"]

run = run_cli
pytestmark = pytest.mark.usefixtures("empty_weights_cache")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images") / "colours", CLASSES, PER_CLASS)


def test_is_image_data_tells_images_from_tables(images, tmp_path, csv_path) -> None:
    from autodl.data import is_image_data

    listing = tmp_path / "listing.csv"
    pd.DataFrame({"file": [str(p) for p in sorted(images.rglob("*.png"))], "label": "x"}).to_csv(listing, index=False)
    assert is_image_data(images) and is_image_data(listing)
    assert not is_image_data(csv_path) and not is_image_data(tmp_path / "missing.csv")


def test_fit_on_a_folder_searches_pretrained_and_scratch_backbones(images, tmp_path, monkeypatch, capsys) -> None:
    """A cached pretrained backbone and small_cnn are both searched (warm start: one trial each)."""
    from autodl.zoo import get
    from autodl.zoo.weights import fetch

    file = tmp_path / "mnv3.weights.h5"
    get("mobilenet_v3_small").build((32, 32, 3)).save_weights(file)
    patch_weights(monkeypatch, "mobilenet_v3_small", file)
    fetch("mobilenet_v3_small", source=file)  # what 'autodl zoo pull mobilenet_v3_small --from FILE' does
    out = tmp_path / "run"
    code, stdout, err = run(["fit", images, "--out", out, "--max-trials", "2", *FAST, "--max-epochs", "2"], capsys)
    assert code == 0, err
    assert "test accuracy" in stdout and "images train/valid/test" in stdout
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["input"] == "image" and manifest["command"] == "fit"
    assert manifest["search_space"]["architectures"] == ["small_cnn", "mobilenet_v3_small"]  # smallest first
    assert manifest["schema"] == {"input": "image", "target": None, "classes": ["blue", "green", "red"], "image_size": [32, 32]}
    board = pd.read_csv(out / "leaderboard.csv")
    assert sorted(board["architecture"]) == ["mobilenet_v3_small", "small_cnn"]
    assert (board["status"] == "COMPLETED").all() and board["val_accuracy"].notna().all()
    hps = json.loads(board.loc[board["architecture"] == "mobilenet_v3_small", "hyperparameters"].iloc[0])
    assert {"image_size", "learning_rate", "dropout", "augmentation", "mobilenet_v3_small/unfreeze_blocks",
            "mobilenet_v3_small/finetune_lr_ratio"} <= set(hps)
    # The trial's score is the saved model's: the shipped model reproduces it on the validation images.
    assert manifest["metrics"]["validation"]["accuracy"] == pytest.approx(manifest["final_model"]["val_accuracy"], abs=1e-6)
    assert manifest["metrics"]["test"]["accuracy"] >= 0.8  # colour classes; chance is 1/3
    assert len(list((out / "tuner").rglob("checkpoint.weights.h5"))) == 1  # only the shipped trial's weights stay
    code, stdout, err = run(["predict", out, images / "green"], capsys)
    assert code == 0, err
    assert (pd.read_csv(io.StringIO(stdout))["prediction"] == "green").mean() >= 0.8


def test_fit_on_a_csv_of_image_paths_through_the_api(images, tmp_path) -> None:
    from autodl import AutoModel

    rows = [(str(p.relative_to(images)), p.parent.name) for p in sorted(images.rglob("*.*"))]
    rows.append(("red/gone.png", "red"))  # a missing file is counted and left out
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")  # so is one that does not decode
    rows.append((str(broken), "green"))
    listing = images / "listing.csv"
    pd.DataFrame(rows, columns=["file", "colour"]).to_csv(listing, index=False)
    try:
        with pytest.warns(UserWarning, match="1 of 62 image paths"):
            model = AutoModel(target="colour", max_trials=1, image_size=[32], max_epochs=3, out=tmp_path / "run",
                              verbosity=0).fit(listing)
    finally:
        listing.unlink()
    manifest = model.manifest
    assert manifest["target"] == "colour" and manifest["data"]["skipped"] == {"missing_file": 1, "unreadable": 1}
    assert sum(manifest["split"][k] for k in ("train", "valid", "test")) == 3 * PER_CLASS
    assert model.leaderboard()["architecture"].tolist() == ["small_cnn"]
    assert AutoModel.load(tmp_path / "run").evaluate(listing.parent)["accuracy"] >= 0.8


def test_an_interrupted_image_search_resumes(images, tmp_path) -> None:
    from autodl import AutoModel
    from autodl.progress import NullReporter

    class StopAfterFirstTrial(NullReporter):
        def on_trial_end(self, summary) -> None:
            raise KeyboardInterrupt()

    out = tmp_path / "run"
    options = dict(max_trials=2, image_size=[32], max_epochs=2, out=out, tuner="random")
    with pytest.raises(KeyboardInterrupt):
        AutoModel(**options, reporter=StopAfterFirstTrial()).fit(images)
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    log = json.loads((out / "tuner" / "autodl_trials.json").read_text())
    assert list(log) == ["0"]
    model = AutoModel(**options, verbosity=0).fit(images)
    after = json.loads((out / "tuner" / "autodl_trials.json").read_text())
    assert list(after) == ["0", "1"] and after["0"] == log["0"]  # trial 0 was not trained again
    assert model.manifest["status"] == "complete" and model.manifest["search"]["completed"] == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sensitive-as-feature"], "--sensitive-as-feature applies to tables only"),
        (["--tuner", "hyperband"], "--tuner hyperband works on tables only"),
        (["--models", "mlp"], "unknown image model 'mlp'"),
        (["--image-size", "8"], "--image-size takes sizes in pixels of at least 16"),
    ],
)
def test_table_options_on_images_are_one_line_errors(extra, message, images, tmp_path, capsys) -> None:
    code, out, err = run(["fit", images, "--out", tmp_path / "run", *extra], capsys)
    assert code == 2 and out == "" and err.startswith(f"error: {message}") and err.strip().count("\n") == 0
    assert not (tmp_path / "run").exists()


def test_bad_image_folders_are_one_line_errors(tmp_path, monkeypatch, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    one = write_images(tmp_path / "one", {"red": CLASSES["red"]}, 2)
    no_images = tmp_path / "texts"
    (no_images / "a").mkdir(parents=True)
    (no_images / "a" / "note.txt").write_text("hello")
    for folder, message in ((empty, "is empty"), (one, "single class 'red'"), (no_images, "has no image files")):
        code, _, err = run(["fit", folder, "--out", tmp_path / "run"], capsys)
        assert code == 2 and message in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "run").exists()
    patch_weights(monkeypatch, "mobilenet_v3_small")
    code, _, err = run(["fit", one, "--models", "mobilenet_v3_small", "--out", tmp_path / "run"], capsys)
    assert code == 2 and "autodl zoo pull mobilenet_v3_small --from FILE" in err


def test_a_table_still_needs_a_target(csv_path, tmp_path, capsys) -> None:
    code, _, err = run(["fit", csv_path, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "--target is required for a table" in err


def test_docstrings_run() -> None:
    import doctest

    import autodl.image_fit
    import autodl.search.image_hypermodel

    for module in (autodl.search.image_hypermodel, autodl.image_fit):
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__


def test_sensitive_columns_of_an_image_csv_are_audited(images, tmp_path, capsys) -> None:
    paths = [p for p in sorted(images.rglob("*.*")) if p.parent.name in ("red", "blue")]
    listing = tmp_path / "listing.csv"
    pd.DataFrame({"file": [str(p) for p in paths], "colour": [p.parent.name for p in paths],
                  "site": ["north", "south"] * (len(paths) // 2)}).to_csv(listing, index=False)
    out = tmp_path / "run"
    code, stdout, err = run(["fit", listing, "--target", "colour", "--sensitive", "site", "--positive", "red",
                             "--max-trials", "1", "--out", out, *FAST], capsys)
    assert code == 0, err
    report = json.loads((out / "audit.json").read_text())
    assert report["sensitive"] == ["site"] and report["rows"] == json.loads((out / "run.json").read_text())["split"]["test"]
    assert "demographic_parity_difference" in json.dumps(report)
    assert json.loads((out / "run.json").read_text())["audit"]["verdict"] in ("pass", "warn", "fail", "info")
    code, _, err = run(["fit", images, "--sensitive", "site", "--out", tmp_path / "other", *FAST], capsys)
    assert code == 2 and "has no columns like 'site'" in err
