"""`autodl finetune NAME DATA` end to end on generated images, and `autodl predict` on the run it writes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autodl.cli import main
from tests.imagedata import CLASSES, patch_weights, run_cli, write_images

PER_CLASS = 24
FAST = ["--image-size", "32", "--head-epochs", "4", "--finetune-epochs", "2", "--quiet"]

run = run_cli
pytestmark = pytest.mark.usefixtures("empty_weights_cache")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images") / "colours", CLASSES, PER_CLASS)


@pytest.fixture(scope="module")
def scratch_run(images, tmp_path_factory) -> Path:
    """One small_cnn run shared by the read-only tests."""
    out = tmp_path_factory.mktemp("runs") / "cnn"
    code = main(["finetune", "small_cnn", str(images), "--out", str(out), "--augmentation", "0", *FAST])
    assert code == 0
    return out


def test_small_cnn_from_scratch_writes_a_complete_run(scratch_run) -> None:
    manifest = json.loads((scratch_run / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["input"] == "image" and manifest["task"] == "multiclass"
    assert manifest["schema"] == {"input": "image", "target": None, "classes": ["blue", "green", "red"], "image_size": [32, 32]}
    assert manifest["final_model"]["kind"] == "scratch" and manifest["final_model"]["members"] == []
    assert manifest["metrics"]["test"]["accuracy"] >= 0.8  # colour classes: easy; chance is 1/3
    assert sum(manifest["split"].values()) == 3 * PER_CLASS and manifest["data"]["n_images"] == 3 * PER_CLASS
    assert manifest["zoo"]["entry"] == "small_cnn" and manifest["weights"] is None and manifest["seed"] == 0
    for name in ("model.keras", "split.npz", "test_predictions.csv"):
        assert (scratch_run / name).exists()
    preds = pd.read_csv(scratch_run / "test_predictions.csv")
    assert list(preds.columns) == ["path", "target", "prediction", "proba_blue", "proba_green", "proba_red"]
    assert len(preds) == manifest["split"]["test"]


def test_predict_on_a_folder_gives_one_row_per_image(scratch_run, images, tmp_path, capsys) -> None:
    new = write_images(tmp_path / "new", {"red": CLASSES["red"], "blue": CLASSES["blue"]}, 3, seed=1)
    (new / "notes.txt").write_text("not an image")
    out_csv = tmp_path / "preds.csv"
    code, _, err = run(["predict", scratch_run, new, "-o", out_csv], capsys)
    assert code == 0, err
    preds = pd.read_csv(out_csv)
    assert list(preds.columns) == ["path", "prediction", "proba_blue", "proba_green", "proba_red"]
    assert len(preds) == 6 and preds["path"].tolist() == sorted(preds["path"])
    truth = [Path(p).parent.name for p in preds["path"]]
    assert (preds["prediction"] == truth).mean() >= 0.8
    np.testing.assert_allclose(preds.filter(like="proba_").sum(axis=1), 1.0, atol=1e-4)

    from autodl import AutoModel

    auto = AutoModel.load(scratch_run)
    assert auto.is_image and len(auto.predict(sorted(map(str, new.rglob("*.png"))))) == 4
    assert list(auto.predict_proba(new).columns) == ["blue", "green", "red"]


def test_existing_run_is_refused_without_overwrite(scratch_run, images, capsys) -> None:
    code, _, err = run(["finetune", "small_cnn", images, "--out", scratch_run, *FAST], capsys)
    assert code == 2 and "already holds a finished run" in err and err.strip().count("\n") == 0


def test_mobilenet_fine_tunes_from_a_given_weights_file(images, tmp_path, monkeypatch, capsys) -> None:
    from autodl.zoo import get

    file = tmp_path / "mnv3.weights.h5"
    get("mobilenet_v3_small").build((32, 32, 3)).save_weights(file)
    patch_weights(monkeypatch, "mobilenet_v3_small", file)
    out = tmp_path / "run"
    args = ["finetune", "mobilenet_v3_small", images, "--weights", file, "--out", out, "--unfreeze-blocks", "1", *FAST]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert "test accuracy" in stdout
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["final_model"]["kind"] == "finetune" and "head" in manifest["recipe"]["phases"]
    assert manifest["weights"]["source"] == str(file)
    code, stdout, err = run(["predict", out, images / "red"], capsys)
    assert code == 0, err
    assert len(pd.read_csv(io.StringIO(stdout))) == PER_CLASS


@pytest.mark.parametrize(
    "name, message",
    [("nope", "unknown zoo entry 'nope'"), ("mlp", "zoo entry 'mlp' is a tabular model")],
)
def test_unknown_or_tabular_model_is_a_one_line_error(name, message, images, tmp_path, capsys) -> None:
    code, out, err = run(["finetune", name, images, "--out", tmp_path / "run", *FAST], capsys)
    assert code == 2 and out == "" and err.startswith(f"error: {message}") and err.strip().count("\n") == 0
    assert "mobilenet_v3_small" in err and "small_cnn" in err  # the image entries to choose from
    assert not (tmp_path / "run").exists()


def test_missing_pretrained_file_offline_names_zoo_pull(images, tmp_path, monkeypatch, capsys) -> None:
    patch_weights(monkeypatch, "mobilenet_v3_small")
    code, _, err = run(["finetune", "mobilenet_v3_small", images, "--out", tmp_path / "run", *FAST], capsys)
    assert code == 2 and err.strip().count("\n") == 0
    assert "autodl zoo pull mobilenet_v3_small --from FILE" in err


def test_predict_in_a_fresh_process_loads_the_saved_model(scratch_run, images) -> None:
    """A new interpreter has not imported the recipe, so loading must register its loss and optimizer itself."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "autodl.cli", "predict", str(scratch_run), str(images / "green")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    preds = pd.read_csv(io.StringIO(done.stdout))
    assert len(preds) == PER_CLASS and (preds["prediction"] == "green").mean() >= 0.8


def test_evaluate_scores_an_image_run_on_labelled_images(scratch_run, tmp_path, capsys) -> None:
    labelled = write_images(tmp_path / "labelled", {"red": CLASSES["red"], "green": CLASSES["green"]}, 4, seed=2)
    code, stdout, err = run(["evaluate", scratch_run, labelled, "--json"], capsys)
    assert code == 0, err
    scores = json.loads(stdout)
    assert scores["accuracy"] >= 0.75  # two of the run's three classes, relabelled to the run's indices
    odd = write_images(tmp_path / "odd", {"red": CLASSES["red"], "purple": (150, 20, 160)}, 2, seed=3)
    code, _, err = run(["evaluate", scratch_run, odd], capsys)
    assert code == 2 and "'purple'" in err and "not among the run's" in err
