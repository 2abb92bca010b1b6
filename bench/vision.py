"""Vision benchmark: does transfer learning pay, and what does training on images cost here?

    python bench/vision.py                 # everything (a few minutes on 2 cores)
    python bench/vision.py --contenders digits-finetune,digits-scratch --seeds 3

Data available offline: scikit-learn's bundled digits (8x8 grey, upscaled to
32x32 RGB). The zoo's ``small_cnn`` is pretrained on classes 0-4 with the zoo's
own from-scratch recipe; its weights are saved, pinned by SHA-256, put in the
weights cache through ``autodl.zoo.weights.fetch`` (the path ``autodl zoo pull
small_cnn --from FILE`` takes) and loaded into a fresh backbone. Then, with 5, 10
and 20 labelled images per class of the disjoint task (classes 5-9):

* ``digits-finetune`` - the two-phase recipe (``autodl.recipes.fine_tune``) on
  the pretrained backbone;
* ``digits-scratch`` - the same architecture trained from scratch
  (``autodl.recipes.train_from_scratch``), the same epoch budget;

both scored on every other 5-9 image, averaged over ``--seeds`` draws of the
labelled set. And the cost of images on this machine:

* ``mobilenet-train-224`` - training throughput (images/s) of MobileNetV3Small at
  224x224, the whole network trainable, on synthetic batches;
* ``pipeline-224`` - the input pipeline alone (``autodl.data.pipeline_throughput``):
  JPEG read, decode and resize to 224x224, first epoch and cached epochs.

Needs no data directory; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (  # noqa: E402
    RESULTS_DIR,
    Job,
    MetricColumn,
    add_child_args,
    child_main,
    environment_info,
    make_console,
    print_results,
    run_matrix,
    save_results,
)

CONTENDERS = ("digits-finetune", "digits-scratch", "mobilenet-train-224", "pipeline-224")
IMAGE = 32
LABELS_PER_CLASS = (5, 10, 20)
PRETRAIN_EPOCHS = 40
HEAD_EPOCHS, FINETUNE_EPOCHS = 30, 20
# All four blocks of small_cnn at a learning rate 3x below the head's: the pretraining task is
# close (other digits), so every layer adapts, just more gently than the new head.
UNFREEZE_BLOCKS, FINETUNE_LR = 4, 3e-4
AUGMENTATION = 0.3  # rotation, zoom, contrast; no flips: a mirrored digit is another shape
METRICS = (
    *(MetricColumn(f"accuracy_{k}", f"acc {k}/class") for k in LABELS_PER_CLASS),
    *(MetricColumn(f"accuracy_{k}_std", f"± std {k}") for k in LABELS_PER_CLASS),
    MetricColumn("images_per_s", "images/s", "{:.1f}"),
    MetricColumn("cached_images_per_s", "cached images/s", "{:.0f}"),
)


def digits(classes: range) -> tuple[np.ndarray, np.ndarray]:
    """Digits of ``classes`` as ``(n, 32, 32, 3)`` float32 pixels in [0, 255] and labels 0..len(classes)-1."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = np.isin(data.target, list(classes))
    images = data.images[keep][..., None] * (255.0 / 16.0)
    images = tf.image.resize(images, (IMAGE, IMAGE), method="bilinear").numpy()
    return np.repeat(images, 3, axis=-1).astype(np.float32), (data.target[keep] - classes.start).astype(np.int64)


def dataset(x: np.ndarray, y: np.ndarray, *, batch: int = 32, shuffle: bool = False, seed: int = 0) -> Any:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def few_labels(y: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` training rows per class and every other row for testing."""
    rng = np.random.default_rng(seed)
    train = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)])
    return train, np.setdiff1d(np.arange(len(y)), train)


def pretrained_backbone(work: Path) -> tuple[Any, dict[str, Any]]:
    """small_cnn pretrained on digits 0-4, saved, pinned by SHA-256, fetched through the zoo cache, reloaded."""
    import keras

    from autodl.recipes import classifier, train_from_scratch
    from autodl.zoo import get
    from autodl.zoo.weights import Weights, fetch

    x, y = digits(range(0, 5))
    order = np.random.default_rng(0).permutation(len(y))
    cut = int(0.85 * len(y))
    train, valid = order[:cut], order[cut:]
    keras.utils.set_random_seed(0)
    backbone = get("small_cnn").build((IMAGE, IMAGE, 3))
    model = classifier(backbone, 5, pretrained=False)
    started = time.perf_counter()
    phase = train_from_scratch(model, dataset(x[train], y[train], shuffle=True), dataset(x[valid], y[valid]),
                               epochs=PRETRAIN_EPOCHS, patience=8)
    pretrain_s = time.perf_counter() - started
    path = work / "small_cnn_digits04.weights.h5"
    backbone.save_weights(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    weights = Weights(path.as_uri(), digest, path.name, "digits 0-4 (bench/vision.py)", "BSD-3-Clause (scikit-learn data)")
    cached = fetch(weights, source=path)
    fresh = get("small_cnn").build((IMAGE, IMAGE, 3))
    fresh.load_weights(cached)
    return fresh, {"pretrain_s": round(pretrain_s, 1), "pretrain_val_accuracy": phase.best_metric,
                   "pretrain_epochs": phase.epochs, "weights_sha256": digest}


def run_digits(*, finetune: bool, seeds: int, **_: Any) -> dict[str, Any]:
    import keras

    from autodl.recipes import FineTuneConfig, classifier, fine_tune, train_from_scratch
    from autodl.zoo import get

    x, y = digits(range(5, 10))
    metrics: dict[str, float] = {}
    accuracies: dict[int, list[float]] = {k: [] for k in LABELS_PER_CLASS}
    seconds: list[float] = []
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="autodl-bench-vision-") as tmp:
        os.environ["AUTODL_HOME"] = tmp  # the weights cache of this run only
        if finetune:
            pretrained, extra = pretrained_backbone(Path(tmp))
            pretrained_state = pretrained.get_weights()
        for per_class in LABELS_PER_CLASS:
            for seed in range(seeds):
                train, test = few_labels(y, per_class, seed)
                keras.utils.set_random_seed(seed)
                backbone = get("small_cnn").build((IMAGE, IMAGE, 3))
                started = time.perf_counter()
                if finetune:
                    backbone.set_weights(pretrained_state)
                    model = classifier(backbone, 5, augmentation_strength=AUGMENTATION, flip=False, seed=seed)
                    config = FineTuneConfig(head_epochs=HEAD_EPOCHS, finetune_epochs=FINETUNE_EPOCHS,
                                            unfreeze_blocks=UNFREEZE_BLOCKS, finetune_learning_rate=FINETUNE_LR, patience=5)
                    fine_tune(model, dataset(x[train], y[train], batch=16, shuffle=True, seed=seed),
                              blocks=get("small_cnn").blocks, config=config, backbone=backbone)
                else:
                    model = classifier(backbone, 5, augmentation_strength=AUGMENTATION, flip=False, pretrained=False, seed=seed)
                    train_from_scratch(model, dataset(x[train], y[train], batch=16, shuffle=True, seed=seed),
                                       epochs=HEAD_EPOCHS + FINETUNE_EPOCHS, patience=5)
                seconds.append(time.perf_counter() - started)
                predicted = model.predict(dataset(x[test], y[test]), verbose=0).argmax(axis=1)
                accuracies[per_class].append(float((predicted == y[test]).mean()))
            metrics[f"accuracy_{per_class}"] = float(np.mean(accuracies[per_class]))
            metrics[f"accuracy_{per_class}_std"] = float(np.std(accuracies[per_class]))
    note = (f"{seeds} seeds per label count; test on every unlabelled 5-9 image"
            + (f"; pretrain on 0-4 {extra['pretrain_s']} s (val acc {extra['pretrain_val_accuracy']:.3f})" if finetune else ""))
    return {"metrics": metrics, "fit_s": float(np.mean(seconds)), "note": note,
            "extra": {**extra, "accuracies": {str(k): v for k, v in accuracies.items()}, "seconds": seconds}}


def run_mobilenet_throughput(*, steps: int = 6, batch: int = 32, **_: Any) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from autodl.recipes import classifier
    from autodl.zoo import get

    keras.utils.set_random_seed(0)
    model = classifier(get("mobilenet_v3_small").build((224, 224, 3)), 10)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, batch)
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)  # traces the step function
    started = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    elapsed = time.perf_counter() - started
    return {"metrics": {"images_per_s": steps * batch / elapsed}, "fit_s": elapsed,
            "note": f"whole network trainable, batch {batch}, {steps} steps after warm-up, random weights (same cost)"}


def run_pipeline_throughput(**_: Any) -> dict[str, Any]:
    import tensorflow as tf

    from autodl.data import pipeline_throughput

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="autodl-bench-images-") as tmp:
        paths = []
        for i in range(240):
            pixels = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
            path = Path(tmp) / f"img_{i:03d}.jpg"
            path.write_bytes(tf.io.encode_jpeg(pixels, quality=90).numpy())
            paths.append(str(path))
        started = time.perf_counter()
        cold = pipeline_throughput(paths, image_size=(224, 224), seconds=8.0, cache=False)
        cached = pipeline_throughput(paths, image_size=(224, 224), seconds=5.0, cache=True)
        elapsed = time.perf_counter() - started
    return {"metrics": {"images_per_s": cold, "cached_images_per_s": cached}, "fit_s": elapsed,
            "note": "240 JPEGs 500x375: read + decode + resize to 224x224, batch 32; first epoch / cached epochs"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated (default: all)")
    parser.add_argument("--seeds", type=int, default=3, help="draws of the labelled set per label count (digits contenders)")
    add_child_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runners = {
        "digits-finetune": lambda: run_digits(finetune=True, seeds=args.seeds),
        "digits-scratch": lambda: run_digits(finetune=False, seeds=args.seeds),
        "mobilenet-train-224": run_mobilenet_throughput,
        "pipeline-224": run_pipeline_throughput,
    }
    if args.contender:
        return child_main(runners[args.contender], args.json_out)
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown:
        raise SystemExit(f"unknown contender {unknown[0]!r}; choose from {', '.join(CONTENDERS)}")
    console = make_console()
    jobs = [Job("digits" if c.startswith("digits") else "synthetic", c, 1800, ("--seeds", str(args.seeds)))
            for c in contenders]
    rows = run_matrix(Path(__file__).resolve(), jobs, log_dir=RESULTS_DIR / "logs" / "vision", console=console)
    print_results(rows, METRICS, title="Vision: transfer learning with few labels, and the cost of images (2 CPU cores)",
                  caption="digits 5-9 with 5, 10 or 20 labels per class; fine-tune = small_cnn pretrained on 0-4 with the "
                          "zoo recipe, scratch = same architecture and epoch budget", console=console)
    meta = {"seeds": args.seeds, "labels_per_class": LABELS_PER_CLASS, "image": IMAGE, "unfreeze_blocks": UNFREEZE_BLOCKS,
            "finetune_learning_rate": FINETUNE_LR, "augmentation": AUGMENTATION,
            **environment_info(["autodl", "keras", "tensorflow", "scikit-learn"])}
    path = save_results("vision", rows, meta)
    console.print(f"results saved to {path}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
