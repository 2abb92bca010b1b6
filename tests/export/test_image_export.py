"""Exporting an image run: the two serving signatures, the TFLite variants through the bundle's runner, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autodl.errors import UserError

COLOURS = {"blue": (30, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}
PER_CLASS = 20


def make_photos(root: Path) -> Path:
    """3 classes of noisy images with a coloured square; sizes vary (the resize is exercised), PNG and JPEG mixed."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            height, width = 32 + 8 * (i % 3), 32 + 5 * (i % 2)
            image = rng.integers(0, 80, size=(height, width, 3))
            image[6:26, 6:26] = np.array(colour) + rng.integers(-25, 25, size=3)
            image = np.clip(image, 0, 255).astype(np.uint8)
            if i % 2:
                (root / name / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
            else:
                (root / name / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(image, quality=90).numpy())
    # The fit's probe drops it, so the export must drop it too for split.npz's indices to match.
    (root / "red" / "broken.png").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def image_export(tmp_path_factory):
    from autodl.export.pipeline import ExportOptions, export_run
    from autodl.finetune import FinetuneConfig, run_finetune

    tmp = tmp_path_factory.mktemp("image_export")
    photos = make_photos(tmp / "photos")
    run = tmp / "run"
    run_finetune(FinetuneConfig(model="small_cnn", image_size=32, head_epochs=2, finetune_epochs=0, out=str(run)), photos)
    report = export_run(run, ExportOptions())
    return run, photos, report


def _test_images(run: Path, photos: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The test split's paths, their pipeline pixels and the Keras model's probabilities (independently of the export)."""
    from autodl.api import AutoModel
    from autodl.data import make_image_dataset, read_images

    with np.load(run / "split.npz") as z:
        test = z["test"]
    data = read_images(photos)
    paths = data.without([p for p in data.paths if p.endswith("broken.png")]).subset(test).paths
    pixels = np.concatenate([b.numpy() for b in make_image_dataset(paths, image_size=(32, 32), cache=False)])
    keras_output = AutoModel.load(run).model.predict(pixels, verbose=0)
    return paths, pixels, keras_output


def test_serving_signatures_agree_with_keras_from_bytes_and_pixels(image_export):
    import tensorflow as tf

    run, photos, report = image_export
    paths, pixels, keras_output = _test_images(run, photos)
    loaded = tf.saved_model.load(report["serving"]["path"])
    assert set(loaded.signatures) == {"serving_default", "serving_pixels"}
    from_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant([Path(p).read_bytes() for p in paths]))
    from_pixels = loaded.signatures["serving_pixels"](pixels=tf.constant(pixels))
    for out in (from_bytes, from_pixels):
        assert set(out) == {"probabilities", "label"}
        np.testing.assert_allclose(out["probabilities"].numpy(), keras_output, atol=1e-5)
        classes = sorted(COLOURS)
        assert [v.decode() for v in out["label"].numpy()] == [classes[i] for i in keras_output.argmax(axis=1)]
    serving = report["serving"]
    assert serving["label_agreement"] == 1.0 and serving["max_abs_diff"] < 1e-5
    assert serving["signatures"]["serving_pixels"]["label_agreement"] == 1.0
    assert serving["signatures"]["serving_default"]["labels_match"] is True
    example = json.loads((Path(serving["path"]) / "assets.extra" / "request_example.json").read_text())
    assert set(example["inputs"]["image_bytes"][0]) == {"b64"}
    assert (Path(serving["path"]) / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0


def test_every_tflite_variant_runs_in_the_bundle_runner_and_agrees(image_export):
    from autodl.edge.autodl_edge import EdgeModel

    run, photos, report = image_export
    _, pixels, keras_output = _test_images(run, photos)
    bundle = Path(report["tflite"]["path"])
    schema = json.loads((bundle / "schema.json").read_text())
    assert schema["input"] == "image" and schema["image_size"] == [32, 32] and schema["classes"] == sorted(COLOURS)
    assert json.loads((bundle / "labels.json").read_text()) == sorted(COLOURS)
    assert schema["default_variant"] == report["tflite"]["default_variant"]
    tolerance = {"float32": 1e-4, "float16": 1e-2, "dynamic": 0.05, "int8": 0.1}
    assert set(report["tflite"]["variants"]) == set(tolerance)
    for variant, atol in tolerance.items():
        model = EdgeModel(bundle, variant)
        detail = model.interpreter.get_input_details()[0]
        assert list(detail["shape"]) == [1, 32, 32, 3] and detail["dtype"] == np.float32
        output = model.predict_output(pixels)
        assert np.max(np.abs(output - keras_output)) <= atol, variant
        assert np.mean(output.argmax(axis=1) == keras_output.argmax(axis=1)) >= 0.85, variant
        checked = report["tflite"]["variants"][variant]
        assert checked["max_abs_diff"] <= atol and checked["label_agreement"] >= 0.85
        assert checked["size_bytes"] == (bundle / f"model_{variant}.tflite").stat().st_size
    sizes = {v: r["size_bytes"] for v, r in report["tflite"]["variants"].items()}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]


def test_runner_resizes_and_decodes_like_the_pipeline():
    import tensorflow as tf

    from autodl.edge.autodl_edge import decode_png, resize_bilinear

    rng = np.random.default_rng(1)
    for shape in [(37, 23, 3), (13, 50, 3), (64, 64, 3), (32, 32, 3)]:
        image = rng.uniform(0, 255, size=shape).astype(np.float32)
        expected = tf.image.resize(image, (32, 32), method="bilinear").numpy()
        np.testing.assert_allclose(resize_bilinear(image, (32, 32)), expected, atol=1e-3)
    rgb = rng.integers(0, 256, size=(19, 27, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(tf.io.encode_png(rgb).numpy()), rgb)
    grey_alpha = rng.integers(0, 256, size=(11, 9, 2), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(tf.io.encode_png(grey_alpha).numpy()), grey_alpha)
    deep = rng.integers(0, 65536, size=(7, 5, 4), dtype=np.uint16)
    np.testing.assert_array_equal(decode_png(tf.io.encode_png(deep).numpy()), (deep >> 8).astype(np.uint8))


def test_runner_predicts_from_files(image_export, tmp_path):
    from autodl.edge import autodl_edge
    from autodl.edge.autodl_edge import EdgeModel

    run, photos, report = image_export
    paths, pixels, keras_output = _test_images(run, photos)
    bundle = Path(report["tflite"]["path"])
    png = [i for i, p in enumerate(paths) if p.endswith(".png")]
    assert png
    model = EdgeModel(bundle, "float32")
    # PNG files: decoded without Pillow when it is absent, resized in numpy; the pipeline's pixels to rounding.
    runner_pixels = autodl_edge.image_batch(model.schema, [paths[i] for i in png])
    assert np.max(np.abs(runner_pixels - pixels[png])) <= 1.0
    labels, output = model.predict([paths[i] for i in png])
    assert labels == [sorted(COLOURS)[k] for k in keras_output[png].argmax(axis=1)]
    np.testing.assert_allclose(output, keras_output[png], atol=0.02)
    # Arrays of any size work too.
    labels_from_arrays, _ = model.predict([np.asarray(a, dtype=np.uint8) for a in runner_pixels])
    assert labels_from_arrays == labels

    # The copied runner as a stand-alone script, on files and a folder, writing the CSV autodl predict writes.
    folder = tmp_path / "new"
    folder.mkdir()
    for i in png:
        shutil.copy(paths[i], folder / f"{i}.png")
    result = subprocess.run([sys.executable, str(bundle / "autodl_edge.py"), str(bundle), str(folder), "-o",
                             str(tmp_path / "out.csv")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "path,prediction," + ",".join(f"proba_{c}" for c in sorted(COLOURS))
    assert len(lines) == len(png) + 1

    jpeg = next(p for p in paths if p.endswith(".jpg"))
    try:
        import PIL  # noqa: F401
    except ImportError:
        with pytest.raises(SystemExit, match="Pillow"):
            model.predict([jpeg])
    else:
        assert model.predict([jpeg])[1].shape == (1, 3)


def test_bad_input_is_a_user_error(image_export, tmp_path):
    from autodl.export.pipeline import ExportOptions, export_run

    run, photos, _ = image_export
    with pytest.raises(UserError, match="--prune works on table runs only"):
        export_run(run, ExportOptions(prune=0.5, out=str(tmp_path / "a")))
    with pytest.raises(UserError, match="--qat works on table runs only"):
        export_run(run, ExportOptions(qat=True, out=str(tmp_path / "a")))

    # A run whose images moved: a clear error, then --data with the new place, which also exercises --int8-io.
    moved = tmp_path / "run"
    shutil.copytree(run, moved, ignore=shutil.ignore_patterns("export"))
    manifest = json.loads((moved / "run.json").read_text())
    manifest["data"]["source"] = str(tmp_path / "gone")
    (moved / "run.json").write_text(json.dumps(manifest))
    options = ExportOptions(formats=("tflite",), quantize="int8", int8_io=True, out=str(tmp_path / "b"))
    with pytest.raises(UserError, match="not there any more; pass their new location with --data"):
        export_run(moved, options)
    fewer = tmp_path / "fewer"
    shutil.copytree(photos, fewer)
    next((fewer / "red").glob("*.png")).unlink()
    with pytest.raises(UserError, match="differ from what run"):
        export_run(moved, options, data=fewer)
    report = export_run(moved, options, data=photos)
    int8 = report["tflite"]["variants"]["int8"]
    assert int8["label_agreement"] >= 0.85
    schema = json.loads((tmp_path / "b" / "edge" / "schema.json").read_text())
    assert schema["variants"]["int8"]["int8_io"] is True


def test_cli_table_prints_an_image_report(image_export, capsys):
    from autodl.cli import _print_export
    from autodl.export.pipeline import report_rows

    _, _, report = image_export
    rows = report_rows(report)
    assert [r["artifact"] for r in rows] == ["keras model", "serving model/1", "tflite float32", "tflite float16",
                                             "tflite dynamic", "tflite int8"]
    _print_export(report)
    printed = capsys.readouterr().out
    assert "images)" in printed and "rows)" not in printed  # the title counts images (it may wrap)
    assert f"edge bundle: {report['tflite']['path']}" in printed.replace("\n", "")
