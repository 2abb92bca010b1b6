"""``export_image_run``: an image run (``autodl finetune``, an image ``autodl fit``) → verified TF Serving and LiteRT artifacts.

``export_run`` hands image runs (``"input": "image"`` in ``run.json``) here; the
layout, the checks and ``report.json``'s shape are those of a table run, so
``autodl export`` prints both the same way::

    OUT/report.json
    OUT/serving/NAME/VERSION/     signatures serving_default (encoded image bytes) and serving_pixels
    OUT/edge/                     model*.tflite, schema.json ("input": "image"), labels.json, autodl_edge.py

The SavedModel's ``serving_default`` takes ``image_bytes`` (``string [None]``,
JPEG/PNG/BMP/GIF files as they are) and decodes and resizes them in the graph
with ``autodl.data.images.decode_and_resize``, the very function training used;
``serving_pixels`` takes ``pixels`` (``float32 [None, H, W, 3]`` in [0, 255]).
Both return ``probabilities`` and ``label``, like a table classifier's signature.

Each TFLite variant takes float32 pixels ``[1, H, W, 3]``; int8 is calibrated on
training images read through the training pipeline. The bundle's runner resizes
images in numpy the way the pipeline does, so it predicts from files or arrays.

Every artifact is checked on the run's test images (read again, and split as the
fit split them): the signatures on the files' bytes and on the pipeline's pixels,
each variant through the bundle's runner on those pixels.

Example:

    report = export_run("runs/pets-small_cnn", ExportOptions())     # dispatches here
    report["tflite"]["variants"]["int8"]["label_agreement"]
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from autodl.errors import UserError
from autodl.export.pipeline import (
    ExportOptions,
    _check_targets,
    _Reference,
    _set_default,
    _tree_size,
    _verify_variant,
    choose_default,
    compare,
    median_ms,
    place_and_report,
    score,
)
from autodl.run import RunDir

# Calibration images for int8: enough batches for stable activation ranges, few enough to
# keep 224-pixel images (600 KB each in float32) and the calibration pass cheap.
CALIBRATION_IMAGES = 128
# Images per serving / Keras call while checking: bounds memory for large test splits.
CHECK_BATCH = 32
# Throughput is measured on one batch of this many images (a table run uses 1024 rows).
THROUGHPUT_IMAGES = 32
PIXELS_SIGNATURE = "serving_pixels"
BYTES_KEY = "image_bytes"
PIXELS_KEY = "pixels"


@dataclass
class ImagePart:
    """One split part's images as the model sees them: uint8 pixels, labels, and the files they came from."""

    pixels: np.ndarray  # uint8 (n, height, width, 3), what decode_and_resize gives
    labels: np.ndarray  # int64 class indices
    paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class ImageSplits:
    """The run's images again: the training sample int8 calibrates on, and the test images every check uses."""

    train: ImagePart
    test: ImagePart
    classes: list[str]
    image_size: tuple[int, int]


def export_image_run(
    run: RunDir,
    manifest: dict[str, Any],
    options: ExportOptions,
    out: Path,
    *,
    data: Any = None,
    test_data: Any = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Writes and verifies an image run's artifacts; returns the report (also merged into ``OUT/report.json``)."""
    step = on_step or (lambda _: None)
    check_image_options(options, test_data)
    targets = _check_targets(out, options)
    from autodl.api import AutoModel

    model = AutoModel.load(run.path).model
    task = manifest["task"]
    step("reading the run's images")
    images = load_image_splits(run, manifest, data)
    reference = _image_reference(model, task, images.test)
    report: dict[str, Any] = {
        "run": str(run.path),
        "input": "image",
        "task": task,
        "test_rows": len(images.test),
        "image_size": list(images.image_size),
        "keras": reference.summary,
    }
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    try:
        if "serving" in options.formats:
            step("TF Serving SavedModel")
            report["serving"] = export_image_serving(model, task, images, reference, staging / "serving", options)
        if "tflite" in options.formats:
            report["tflite"] = export_image_tflite(model, task, images, reference, staging / "edge", options, step)
        return place_and_report(staging, targets, out, report, overwrite=options.overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_image_options(options: ExportOptions, test_data: Any = None) -> None:
    """One-line ``UserError`` for the export options an image run does not take (before anything slow)."""
    if options.prune is not None or options.qat:
        flag = "--prune" if options.prune is not None else "--qat"
        raise UserError(f"{flag} works on table runs only for now; export this image run without it")
    if test_data is not None:
        raise UserError("an image run is checked on its own test split; --test does not apply to it")


# -- inputs ------------------------------------------------------------------------------------


def load_image_splits(run: RunDir, manifest: dict[str, Any], data: Any = None) -> ImageSplits:
    """The run's training sample and test images, read and split exactly as the fit did.

    The images are read and probed again with the fit's own ``prepare_images`` (same
    target, split fractions, probe sample and seed), so the indices in ``split.npz``
    point at the same files; ``data`` is where they are now, if they moved.
    """
    from autodl.finetune import prepare_images

    recorded = manifest["data"]
    if data is not None and not isinstance(data, (str, Path)):
        raise UserError("an image run reads its images from a folder or CSV; pass --data with their location")
    source = data if data is not None else recorded["source"]
    if not Path(source).exists():
        raise UserError(f"the run's images '{source}' are not there any more; pass their new location with --data")
    config = manifest.get("config", {})
    dataset, _, _ = prepare_images(
        source, target=config.get("target"), seed=manifest.get("seed", config.get("seed", 0)),
        valid_fraction=config.get("valid_fraction", 0.15), test_fraction=config.get("test_fraction", 0.15),
    )
    classes = list(manifest["schema"]["classes"])
    if len(dataset) != recorded["n_images"] or list(dataset.classes) != classes:
        raise UserError(
            f"the images in '{source}' differ from what run '{run.path}' was fitted on ({len(dataset)} images in "
            f"{len(dataset.classes)} classes, not {recorded['n_images']} in {len(classes)}); pass the original with --data"
        )
    with np.load(run.split_path) as z:
        train_index, test_index = z["train"], z["test"]
    size = tuple(int(v) for v in manifest["schema"]["image_size"])
    sample = np.sort(np.random.default_rng(0).permutation(train_index)[:CALIBRATION_IMAGES])
    train = read_part(dataset.subset(sample), size)
    test = read_part(dataset.subset(test_index), size)
    if not len(test):
        raise UserError(f"none of the run's {len(test_index)} test images in '{source}' can be decoded any more")
    return ImageSplits(train=train, test=test, classes=classes, image_size=(size[0], size[1]))


def read_part(part: Any, image_size: tuple[int, ...]) -> ImagePart:
    """An ``ImageDataset`` part → its pixels through the training pipeline (``make_image_dataset``).

    Files that no longer decode are left out, as the pipeline leaves them out.
    """
    from autodl.data import make_image_dataset
    from autodl.data.images import PipelineStats

    stats = PipelineStats()
    ds = make_image_dataset(part.paths, image_size=(image_size[0], image_size[1]), batch_size=CHECK_BATCH,
                            cache=False, stats=stats)
    batches = [b.numpy() for b in ds]
    pixels = np.concatenate(batches) if batches else np.zeros((0, *image_size, 3), np.float32)
    skipped = set(stats.skipped_paths())
    keep = [i for i, p in enumerate(part.paths) if p not in skipped]
    # The pipeline's pixels are whole numbers in [0, 255]: uint8 holds them at a quarter of the memory.
    return ImagePart(pixels.astype(np.uint8), part.labels[keep], [part.paths[i] for i in keep])


def _image_reference(model: Any, task: str, test: ImagePart) -> _Reference:
    import tensorflow as tf

    from autodl import metrics as metrics_lib

    output = np.asarray(model.predict(test.pixels.astype(np.float32), batch_size=CHECK_BATCH, verbose=0), np.float64)
    metric = metrics_lib.default_metric(task)
    one = test.pixels[:1].astype(np.float32)
    tensor = tf.constant(one)
    summary = {
        metric: score(task, test.labels, output),
        "parameters": int(model.count_params()),
        "latency_ms": {
            "predict": median_ms(lambda: model.predict(one, verbose=0), repeats=30),
            "call": median_ms(lambda: model(tensor, training=False), repeats=100),
        },
    }
    return _Reference(output, test.labels, metric, summary)


# -- TF Serving --------------------------------------------------------------------------------


def _image_serving_module(model: Any, classes: list[str], image_size: tuple[int, int]) -> Any:
    """A ``tf.Module`` holding the model, with the bytes and the pixels serving functions."""
    import tensorflow as tf

    from autodl.data.images import decode_and_resize

    height, width = image_size
    labels = tf.constant([str(c) for c in classes], tf.string)
    module = tf.Module(name="autodl_image_serving")
    module.model = model
    # Every variable the call may capture, the augmentation layers' RNG seed states included
    # (idle at inference, but captured, and a SavedModel must reach each capture from its root).
    module.keras_variables = list(model.variables)

    def outputs(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = tf.cast(module.model(pixels, training=False), tf.float32)
        return {"probabilities": probabilities, "label": tf.gather(labels, tf.argmax(probabilities, axis=1))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_KEY)])
    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        # The training pipeline's own decode and resize, so a served file gets the pixels training saw.
        pixels = tf.map_fn(lambda contents: decode_and_resize(contents, (height, width)), image_bytes,
                           fn_output_signature=tf.TensorSpec([height, width, 3], tf.uint8))
        return outputs(tf.cast(pixels, tf.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name=PIXELS_KEY)])
    def serve_pixels(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return outputs(pixels)

    module.serve_bytes, module.serve_pixels = serve_bytes, serve_pixels
    return module


def export_image_serving(
    model: Any, task: str, images: ImageSplits, reference: _Reference, staging: Path, options: ExportOptions
) -> dict[str, Any]:
    """Writes ``staging/NAME/VERSION`` (signatures, warmup requests, a REST example) and checks both signatures."""
    import tensorflow as tf

    from autodl.export.serving import REQUEST_EXAMPLE_FILE, SIGNATURE, WARMUP_FILE, _dump_request, _write_warmup

    path = staging / options.name / str(options.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = _image_serving_module(model, images.classes, images.image_size)
    bytes_fn = module.serve_bytes.get_concrete_function()
    pixels_fn = module.serve_pixels.get_concrete_function()
    tf.saved_model.save(module, str(path), signatures={SIGNATURE: bytes_fn, PIXELS_SIGNATURE: pixels_fn})

    test = images.test
    # The smallest test files: warmup replays them at every load, and the example is read by people.
    smallest = sorted(test.paths, key=lambda p: Path(p).stat().st_size)[:3]
    contents = [Path(p).read_bytes() for p in smallest]
    extra = path / "assets.extra"
    extra.mkdir()
    warmup = _write_warmup(extra / WARMUP_FILE, {BYTES_KEY: np.asarray(contents, dtype=object)}, options.name)
    example = extra / REQUEST_EXAMPLE_FILE
    # TF Serving's REST API takes binary strings as {"b64": ...}.
    body = {"signature_name": SIGNATURE, "inputs": {BYTES_KEY: [{"b64": base64.b64encode(contents[0]).decode("ascii")}]}}
    example.write_text(_dump_request(body), encoding="utf-8")

    loaded = tf.saved_model.load(str(path))
    from_bytes = loaded.signatures[SIGNATURE]
    from_pixels = loaded.signatures[PIXELS_SIGNATURE]
    bytes_output, bytes_labels = _call_in_batches(
        lambda i, j: from_bytes(**{BYTES_KEY: tf.constant([Path(p).read_bytes() for p in test.paths[i:j]])}), len(test))
    pixels_output, _ = _call_in_batches(
        lambda i, j: from_pixels(**{PIXELS_KEY: tf.constant(test.pixels[i:j].astype(np.float32))}), len(test))
    predicted = [images.classes[k] for k in np.argmax(bytes_output, axis=1)]
    one_file = tf.constant([Path(test.paths[0]).read_bytes()])
    one_image = tf.constant(test.pixels[:1].astype(np.float32))

    def check(output: np.ndarray) -> dict[str, Any]:
        return {reference.metric: score(task, reference.y, output), **compare(task, reference.output, output)}

    return {
        "name": options.name,
        "version": options.version,
        "signature_inputs": {BYTES_KEY: "string"},
        "signature_outputs": {"label": "string", "probabilities": "float32"},
        "signatures": {
            SIGNATURE: {"inputs": {BYTES_KEY: "string [None] (encoded JPEG, PNG, BMP or GIF)"},
                        **check(bytes_output), "labels_match": bytes_labels == predicted,
                        "latency_ms": median_ms(lambda: from_bytes(**{BYTES_KEY: one_file}), repeats=50)},
            PIXELS_SIGNATURE: {"inputs": {PIXELS_KEY: f"float32 [None, {images.image_size[0]}, {images.image_size[1]}, 3] "
                                                      "in [0, 255]"},
                               **check(pixels_output),
                               "latency_ms": median_ms(lambda: from_pixels(**{PIXELS_KEY: one_image}), repeats=50)},
        },
        "warmup_records": warmup,
        "request_example": str(example.relative_to(staging)),
        # The table's row: the file-bytes signature, what a client calls by default.
        **check(bytes_output),
        "latency_ms": median_ms(lambda: from_bytes(**{BYTES_KEY: one_file}), repeats=50),
        "size_bytes": _tree_size(path),
    }


def _call_in_batches(call: Callable[[int, int], dict[str, Any]], n: int) -> tuple[np.ndarray, list[str]]:
    """A signature over ``n`` images in ``CHECK_BATCH`` slices: probabilities and labels."""
    probabilities, labels = [], []
    for i in range(0, n, CHECK_BATCH):
        result = call(i, min(n, i + CHECK_BATCH))
        probabilities.append(result["probabilities"].numpy())
        labels += [v.decode("utf-8") for v in result["label"].numpy()]
    return np.concatenate(probabilities), labels


# -- TFLite ------------------------------------------------------------------------------------


def convert_image_model(
    model: Any, variant: str, image_size: tuple[int, int], *, representative: np.ndarray | None = None,
    int8_io: bool = False,
) -> bytes:
    """One TFLite flatbuffer of an image classifier: float32 pixels ``[1, H, W, 3]`` in, probabilities out.

    The batch dimension is left open (``shape_signature`` -1), so the runner can resize it to check many images at once.
    """
    import tensorflow as tf

    from autodl.export.tflite import convert_function

    @tf.function(input_signature=[tf.TensorSpec([None, *image_size, 3], tf.float32, name=PIXELS_KEY)])
    def serve(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"probabilities": model(pixels, training=False)}

    calibration = None if representative is None else {PIXELS_KEY: representative.astype(np.float32)}
    return convert_function(serve.get_concrete_function(), variant, representative=calibration, int8_io=int8_io)


def export_image_tflite(
    model: Any,
    task: str,
    images: ImageSplits,
    reference: _Reference,
    staging: Path,
    options: ExportOptions,
    step: Callable[[str], None],
) -> dict[str, Any]:
    """Converts every variant, writes the bundle and checks each variant through the bundle's runner."""
    from autodl.export import tflite

    flatbuffers: dict[str, bytes] = {}
    for variant in tflite.variants_for(options.quantize):
        step(f"TFLite {variant}")
        flatbuffers[variant] = convert_image_model(model, variant, images.image_size, representative=images.train.pixels,
                                                   int8_io=options.int8_io)
    write_image_bundle(staging, flatbuffers=flatbuffers, task=task, images=images, int8_io=options.int8_io)
    step("verifying TFLite variants")
    # The pipeline's pixels: each variant is compared with the Keras model on exactly its inputs;
    # the runner's own decoding and resizing of files is checked by the tests.
    variants = {v: _verify_variant(staging, v, images.test.pixels, task, reference, throughput_batch=THROUGHPUT_IMAGES)[0]
                for v in flatbuffers}
    default = choose_default(variants)
    _set_default(staging, default)
    return {"host_steps": [], "default_variant": default, "variants": variants, "compression": {}}


def image_bundle_schema(task: str, images: ImageSplits, variants: dict[str, dict[str, Any]],
                        default_variant: str = "float32") -> dict[str, Any]:
    """``schema.json`` of an image bundle: what the runner feeds the interpreter."""
    from autodl.export.tflite import BUNDLE_FORMAT

    return {
        "format": BUNDLE_FORMAT,
        "input": "image",
        "task": task,
        "target": "class",
        "classes": list(images.classes),
        "image_size": list(images.image_size),
        "channels": 3,
        "input_name": PIXELS_KEY,
        "pixels": "float32 RGB in [0, 255]; other sizes are resized bilinearly (half-pixel centres) and rounded",
        "output": "probabilities",
        "variants": variants,
        "default_variant": default_variant,
    }


def write_image_bundle(directory: Path, *, flatbuffers: dict[str, bytes], task: str, images: ImageSplits,
                       int8_io: bool, default_variant: str = "float32") -> None:
    """``model_<variant>.tflite`` each, ``model.tflite``, schema/labels JSON, the runner and its README."""
    from autodl.export.tflite import write_bundle_files

    write_bundle_files(
        directory, flatbuffers=flatbuffers, int8_io=int8_io, default_variant=default_variant,
        document=lambda variants: image_bundle_schema(task, images, variants, default_variant),
        labels=[str(c) for c in images.classes], readme=image_bundle_readme,
    )


def image_bundle_readme(document: dict[str, Any], variants: list[str]) -> str:
    from autodl.export.tflite import RUNTIME_SUPPORT

    rows = "\n".join(f"| {runtime} | " + " | ".join(support.get(v, "?") for v in variants) + " |"
                     for runtime, support in RUNTIME_SUPPORT.items())
    height, width = document["image_size"]
    return f"""# autodl edge bundle (images)

Classifies images into {', '.join(f'`{c}`' for c in document['classes'])} with only numpy and a LiteRT interpreter.

    pip install numpy ai-edge-litert Pillow     # Pillow decodes JPEG and the rest; without it PNG files and arrays work
    python autodl_edge.py . photo.jpg more_photos/ -o predictions.csv [--variant {'|'.join(variants)}]

From Python: `from autodl_edge import EdgeModel; labels, probabilities = EdgeModel(".").predict(["photo.jpg"])`;
`predict` also takes `(h, w, 3)` RGB arrays (values 0-255) of any size.

The model takes float32 RGB pixels `[1, {height}, {width}, 3]` in [0, 255] (the rescaling is inside it); the runner
resizes other sizes bilinearly with half-pixel centres and rounds, as autodl's training pipeline does.

Files: `model.tflite` (the default variant, `{document['default_variant']}`), `model_<variant>.tflite`,
`schema.json`, `labels.json` (class labels, by output index), `autodl_edge.py` (the runner).

## Which runtime runs which variant

| runtime | {' | '.join(variants)} |
|---|{'---|' * len(variants)}
{rows}
"""


__all__ = ["ImagePart", "ImageSplits", "check_image_options", "convert_image_model", "export_image_run",
           "export_image_serving", "export_image_tflite", "image_bundle_schema", "load_image_splits", "read_part",
           "write_image_bundle"]
