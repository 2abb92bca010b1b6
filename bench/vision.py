"""Vision benchmark: does transfer learning pay, and what does training on images cost here?

    python bench/vision.py                 # everything (about 15 minutes on 2 cores)
    python bench/vision.py --contenders clutter-finetune,clutter-scratch --seeds 3

The transfer task is "cluttered digits", generated offline from scikit-learn's bundled
8x8 digits: a 48x48 RGB canvas holds one digit upscaled to 18-30 px at a random position
and intensity, over a noisy background with a gradient, fragments of other digits and
random strokes (``cluttered``). Clean upscaled digits were too easy for transfer to
matter: from scratch, 5 labels a class already scored 0.93.

The zoo's ``small_cnn`` is pretrained on 4,000 cluttered images of 0-4 with the zoo's own
from-scratch recipe; its weights are saved, pinned by SHA-256, put in the weights cache
through ``autodl.zoo.weights.fetch`` (the path ``autodl zoo pull small_cnn --from FILE``
takes) and loaded into a fresh backbone. Then, with 5, 10 and 20 labelled images per
class of the disjoint task (cluttered 5-9):

* ``clutter-finetune`` - the two-phase recipe (``autodl.recipes.fine_tune``) on the
  pretrained backbone;
* ``clutter-scratch`` - the same architecture trained from scratch
  (``autodl.recipes.train_from_scratch``), the same epoch budget and augmentation;
* ``clutter-autodl-fit`` - the product path: the pretrained backbone registered as a zoo
  entry (``small_cnn_clutter04``), the 20-per-class images written as PNGs in class
  folders, and ``AutoModel(...).fit(folder)`` searching it and a fresh ``small_cnn`` under a
  4-minute budget (one draw);

both given the same labelled images and scored on the same test set (two renderings of
each 5-9 digit in the half of the digits no labelled image is drawn from), averaged over
``--seeds`` draws of the labelled set. And the cost of images on this machine:

* ``mobilenet-train-224`` - training throughput (images/s) of MobileNetV3Small at
  224x224, the whole network trainable, on synthetic batches;
* ``pipeline-224`` - the input pipeline alone (``autodl.data.pipeline_throughput``):
  JPEG read, decode and resize to 224x224, first epoch and cached epochs.

Needs no data directory; nothing is downloaded; every image is generated from fixed seeds.
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

CONTENDERS = ("clutter-finetune", "clutter-scratch", "clutter-autodl-fit", "mobilenet-train-224", "pipeline-224")
# autodl fit on the 20-labels-per-class set: the search picks between the pretrained and the fresh small_cnn.
FIT_LABELS_PER_CLASS = 20
FIT_TIME_LIMIT = 240.0
CANVAS = 48
DIGIT_PX = (18, 30)  # side of the upscaled 8x8 digit on the canvas
SOURCE_IMAGES, SOURCE_VALID_IMAGES = 4000, 600
TEST_RENDERS = 2  # renderings of each held-out 5-9 digit in the test set
LABELS_PER_CLASS = (5, 10, 20)
PRETRAIN_EPOCHS = 20  # validation accuracy on new 0-4 digits levels off near 0.92 by then
HEAD_EPOCHS, FINETUNE_EPOCHS = 30, 20
# Early stopping watches training loss (5 labels a class leave nothing to validate on); with
# augmentation it is noisy, and a patience of 5 ended some head phases after 8 epochs.
PATIENCE = 10
HEAD_LR = 3e-3  # the head is a single softmax layer on fixed features: large steps are safe
# All four blocks of small_cnn at a learning rate 10x below the head's: the source task has the
# target's nuisances (clutter, noise, scale, position), so every layer may adapt, gently.
# Tried: 2 blocks at 1e-3 and a head rate of 1e-3 scored within noise of this.
UNFREEZE_BLOCKS, FINETUNE_LR = 4, 3e-4
# Scratch's rate was tuned too (1e-3, 3e-3, 6e-3 tried): 3e-3 and 6e-3 were best, 1e-3 below.
SCRATCH_LR = 3e-3
# Rotation up to 18 degrees, zoom and contrast, no flips (a mirrored digit is another shape);
# 0.5 beat 0.3 for both contenders.
AUGMENTATION = 0.5
METRICS = (
    *(MetricColumn(f"accuracy_{k}", f"acc {k}/class") for k in LABELS_PER_CLASS),
    *(MetricColumn(f"accuracy_{k}_std", f"± std {k}") for k in LABELS_PER_CLASS),
    MetricColumn("images_per_s", "images/s", "{:.1f}"),
    MetricColumn("cached_images_per_s", "cached images/s", "{:.0f}"),
)


def base_digits(classes: range) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits of ``classes`` as float32 in [0, 1] and labels 0..len(classes)-1."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = np.isin(data.target, list(classes))
    return (data.images[keep] / 16.0).astype(np.float32), (data.target[keep] - classes.start).astype(np.int64)


def _upscaled(digit: np.ndarray, size: int) -> np.ndarray:
    from scipy import ndimage

    return np.clip(ndimage.zoom(digit, size / digit.shape[0], order=1), 0.0, 1.0)


def _paste(canvas: np.ndarray, patch: np.ndarray, top: int, left: int, gain: float) -> None:
    """Brightest-wins compositing of ``patch * gain`` at (top, left), clipped to the canvas."""
    height, width = canvas.shape
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + patch.shape[0], height), min(left + patch.shape[1], width)
    if t1 > t0 and l1 > l0:
        region = patch[t0 - top:t1 - top, l0 - left:l1 - left] * gain
        np.maximum(canvas[t0:t1, l0:l1], region, out=canvas[t0:t1, l0:l1])


def cluttered(digits: np.ndarray, clutter_pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One ``CANVAS``-square RGB image per digit, as float32 pixels in [0, 255].

    Each digit is upscaled to a random size, placed at a random position with a random
    intensity, over a background with a random level and gradient, 2-5 fragments of
    other digits from ``clutter_pool`` (a crop of 35-60% of each side, so never a whole
    digit), 1-3 random strokes and Gaussian noise of random strength. The network must
    find the digit and ignore digit-like clutter: features a source task with the same
    nuisances can teach, and a few labelled images cannot.
    """
    n = len(digits)
    images = np.empty((n, CANVAS, CANVAS), np.float32)
    rows, cols = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32) / CANVAS
    for i in range(n):
        angle = rng.uniform(0.0, 2 * np.pi)
        image = (rng.uniform(0.0, 0.3) + rng.uniform(0.0, 0.25) * (np.cos(angle) * cols + np.sin(angle) * rows))
        image = image.astype(np.float32)
        for _ in range(rng.integers(2, 6)):
            other = _upscaled(clutter_pool[rng.integers(len(clutter_pool))], int(rng.integers(16, 31)))
            side = other.shape[0]
            height, width = int(side * rng.uniform(0.35, 0.6)), int(side * rng.uniform(0.35, 0.6))
            top, left = rng.integers(0, side - height + 1), rng.integers(0, side - width + 1)
            # Fragments may hang over the edge, as clutter does in a real crop.
            _paste(image, other[top:top + height, left:left + width],
                   int(rng.integers(-4, CANVAS - height + 4)), int(rng.integers(-4, CANVAS - width + 4)),
                   rng.uniform(0.3, 0.9))
        for _ in range(rng.integers(1, 4)):
            start, end = rng.uniform(0, CANVAS, 2), rng.uniform(0, CANVAS, 2)
            points = start + np.linspace(0.0, 1.0, int(np.hypot(*(end - start))) * 2 + 2)[:, None] * (end - start)
            r, c = np.clip(points.astype(int), 0, CANVAS - 1).T
            gain = rng.uniform(0.3, 0.9)
            for dr in range(1 + int(rng.random() < 0.5)):  # one or two pixels thick
                rr = np.clip(r + dr, 0, CANVAS - 1)
                image[rr, c] = np.maximum(image[rr, c], gain)
        size = int(rng.integers(DIGIT_PX[0], DIGIT_PX[1] + 1))
        _paste(image, _upscaled(digits[i], size), int(rng.integers(0, CANVAS - size + 1)),
               int(rng.integers(0, CANVAS - size + 1)), rng.uniform(0.5, 1.0))
        image += rng.normal(0.0, rng.uniform(0.03, 0.15), image.shape).astype(np.float32)
        images[i] = np.clip(image, 0.0, 1.0)
    return np.repeat(images[..., None] * 255.0, 3, axis=-1)


def split_base(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random split of ``range(n)``: the first ``fraction`` and the rest."""
    order = np.random.default_rng(seed).permutation(n)
    cut = int(fraction * n)
    return order[:cut], order[cut:]


def source_task() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cluttered 0-4: ``SOURCE_IMAGES`` training and ``SOURCE_VALID_IMAGES`` validation images,
    rendered from disjoint base digits (so validation measures new digits, not new clutter)."""
    digits, labels = base_digits(range(0, 5))
    train, valid = split_base(len(labels), 0.85, seed=0)
    rng = np.random.default_rng(100)
    pick_train, pick_valid = rng.choice(train, SOURCE_IMAGES), rng.choice(valid, SOURCE_VALID_IMAGES)
    return (cluttered(digits[pick_train], digits[train], rng), labels[pick_train],
            cluttered(digits[pick_valid], digits[valid], rng), labels[pick_valid])


class TargetTask:
    """Cluttered 5-9. Half the base digits are the pool labelled images are drawn from; the other
    half, each rendered ``TEST_RENDERS`` times, is the test set, so no test digit was ever labelled."""

    def __init__(self) -> None:
        self.digits, self.labels = base_digits(range(5, 10))
        self.pool, test = split_base(len(self.labels), 0.5, seed=1)
        test = np.repeat(test, TEST_RENDERS)
        self.x_test = cluttered(self.digits[test], self.digits[np.unique(test)], np.random.default_rng(200))
        self.y_test = self.labels[test]

    def labelled(self, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``per_class`` rendered images a class; the same for every contender given (per_class, seed)."""
        rng = np.random.default_rng([seed, per_class])
        pick = np.concatenate([rng.choice(self.pool[self.labels[self.pool] == c], per_class, replace=False)
                               for c in range(5)])
        return cluttered(self.digits[pick], self.digits[self.pool], rng), self.labels[pick]


def dataset(x: np.ndarray, y: np.ndarray, *, batch: int = 32, shuffle: bool = False, seed: int = 0) -> Any:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def pretrained_backbone(work: Path) -> tuple[Any, dict[str, Any], Any]:
    """small_cnn pretrained on cluttered 0-4, saved, pinned by SHA-256, fetched through the zoo cache, reloaded."""
    import keras

    from autodl.recipes import classifier, train_from_scratch
    from autodl.zoo import get
    from autodl.zoo.weights import Weights, fetch

    x, y, x_valid, y_valid = source_task()
    keras.utils.set_random_seed(0)
    backbone = get("small_cnn").build((CANVAS, CANVAS, 3))
    model = classifier(backbone, 5, pretrained=False)
    started = time.perf_counter()
    # No augmentation layer: every source image is already a fresh random rendering.
    phase = train_from_scratch(model, dataset(x, y, shuffle=True), dataset(x_valid, y_valid),
                               epochs=PRETRAIN_EPOCHS, patience=6)
    pretrain_s = time.perf_counter() - started
    path = work / "small_cnn_clutter04.weights.h5"
    backbone.save_weights(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    weights = Weights(path.as_uri(), digest, path.name, "cluttered digits 0-4 (bench/vision.py)",
                      "BSD-3-Clause (scikit-learn data)")
    cached = fetch(weights, source=path)
    fresh = get("small_cnn").build((CANVAS, CANVAS, 3))
    fresh.load_weights(cached)
    return fresh, {"pretrain_s": round(pretrain_s, 1), "pretrain_val_accuracy": phase.best_metric,
                   "pretrain_epochs": phase.epochs, "pretrain_images": SOURCE_IMAGES, "weights_sha256": digest}, weights


def run_clutter(*, finetune: bool, seeds: int, **_: Any) -> dict[str, Any]:
    import keras

    from autodl.recipes import FineTuneConfig, classifier, fine_tune, train_from_scratch
    from autodl.zoo import get

    task = TargetTask()
    metrics: dict[str, float] = {}
    accuracies: dict[int, list[float]] = {k: [] for k in LABELS_PER_CLASS}
    seconds: list[float] = []
    phases: list[Any] = []
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="autodl-bench-vision-") as tmp:
        os.environ["AUTODL_HOME"] = tmp  # the weights cache of this run only
        if finetune:
            pretrained, extra, _ = pretrained_backbone(Path(tmp))
            pretrained_state = pretrained.get_weights()
        for per_class in LABELS_PER_CLASS:
            for seed in range(seeds):
                x, y = task.labelled(per_class, seed)
                train = dataset(x, y, batch=16, shuffle=True, seed=seed)
                keras.utils.set_random_seed(seed)
                backbone = get("small_cnn").build((CANVAS, CANVAS, 3))
                started = time.perf_counter()
                if finetune:
                    backbone.set_weights(pretrained_state)
                    model = classifier(backbone, 5, augmentation_strength=AUGMENTATION, flip=False, seed=seed)
                    config = FineTuneConfig(head_epochs=HEAD_EPOCHS, finetune_epochs=FINETUNE_EPOCHS,
                                            head_learning_rate=HEAD_LR, unfreeze_blocks=UNFREEZE_BLOCKS,
                                            finetune_learning_rate=FINETUNE_LR, patience=PATIENCE)
                    result = fine_tune(model, train, blocks=get("small_cnn").blocks, config=config, backbone=backbone)
                    phases.append({name: phase.epochs for name, phase in result.phases.items()})
                else:
                    model = classifier(backbone, 5, augmentation_strength=AUGMENTATION, flip=False, pretrained=False,
                                       seed=seed)
                    phase = train_from_scratch(model, train, epochs=HEAD_EPOCHS + FINETUNE_EPOCHS,
                                               learning_rate=SCRATCH_LR, patience=PATIENCE)
                    phases.append({"scratch": phase.epochs})
                seconds.append(time.perf_counter() - started)
                predicted = model.predict(dataset(task.x_test, task.y_test), verbose=0).argmax(axis=1)
                accuracies[per_class].append(float((predicted == task.y_test).mean()))
            metrics[f"accuracy_{per_class}"] = float(np.mean(accuracies[per_class]))
            metrics[f"accuracy_{per_class}_std"] = float(np.std(accuracies[per_class]))
    note = (f"{seeds} seeds per label count; test: {len(task.y_test)} images of held-out 5-9 digits"
            + (f"; pretrain on {SOURCE_IMAGES} cluttered 0-4 {extra['pretrain_s']} s "
               f"(val acc {extra['pretrain_val_accuracy']:.3f})" if finetune else ""))
    return {"metrics": metrics, "fit_s": float(np.mean(seconds)), "note": note,
            "extra": {**extra, "accuracies": {str(k): v for k, v in accuracies.items()}, "seconds": seconds,
                      "epochs": phases, "test_images": len(task.y_test)}}


def write_folder(root: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """PNG files in one sub-folder per class (``5`` .. ``9``): what a user hands ``autodl fit``."""
    import tensorflow as tf

    for i, (pixels, label) in enumerate(zip(x, y)):
        folder = root / str(int(label) + 5)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:04d}.png").write_bytes(tf.io.encode_png(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).numpy())
    return root


def run_autodl_fit(**_: Any) -> dict[str, Any]:
    """``AutoModel.fit(folder)`` searching the pretrained small_cnn (registered as a zoo entry) and a fresh one."""
    import dataclasses

    from autodl import AutoModel
    from autodl.zoo import get, register

    task = TargetTask()
    with tempfile.TemporaryDirectory(prefix="autodl-bench-vision-fit-") as tmp:
        os.environ["AUTODL_HOME"] = tmp
        _, extra, weights = pretrained_backbone(Path(tmp))
        # A user's own pretrained backbone joins the zoo with one register() call.
        base = get("small_cnn")
        card = dataclasses.replace(base.card, name="small_cnn_clutter04", title="Small CNN pretrained on cluttered 0-4",
                                   pretrained=weights)
        register(card, base.build, blocks=base.blocks)
        x, y = task.labelled(FIT_LABELS_PER_CLASS, 0)
        photos = write_folder(Path(tmp) / "photos", x, y)
        test = write_folder(Path(tmp) / "test", task.x_test, task.y_test)
        started = time.perf_counter()
        model = AutoModel(models=["small_cnn_clutter04", "small_cnn"], image_size=[CANVAS], flip=False,
                          time_limit=FIT_TIME_LIMIT, max_trials=20, out=str(Path(tmp) / "run"), verbosity=0).fit(photos)
        fit_s = time.perf_counter() - started
        scores = model.evaluate(test)
        board = model.leaderboard()
    best = board.iloc[0]
    by_arch = board.groupby("architecture")["val_accuracy"].max().round(3).to_dict()
    note = (f"{FIT_LABELS_PER_CLASS} labels/class, {FIT_TIME_LIMIT:.0f} s budget, {len(board)} trials "
            f"(best val accuracy per backbone {by_arch}); shipped {best['architecture']}; "
            f"test: {len(task.y_test)} held-out images")
    return {"metrics": {f"accuracy_{FIT_LABELS_PER_CLASS}": scores["accuracy"]}, "fit_s": fit_s, "note": note,
            "extra": {**extra, "leaderboard": board.drop(columns=["hyperparameters"]).to_dict(orient="records"),
                      "scores": scores}}


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
    parser.add_argument("--seeds", type=int, default=3, help="draws of the labelled set per label count (clutter contenders)")
    add_child_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runners = {
        "clutter-finetune": lambda: run_clutter(finetune=True, seeds=args.seeds),
        "clutter-scratch": lambda: run_clutter(finetune=False, seeds=args.seeds),
        "clutter-autodl-fit": run_autodl_fit,
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
    jobs = [Job("clutter-digits" if c.startswith("clutter") else "synthetic", c, 1800, ("--seeds", str(args.seeds)))
            for c in contenders]
    rows = run_matrix(Path(__file__).resolve(), jobs, log_dir=RESULTS_DIR / "logs" / "vision", console=console)
    print_results(rows, METRICS, title="Vision: transfer learning with few labels, and the cost of images (2 CPU cores)",
                  caption="cluttered digits 5-9 (48x48) with 5, 10 or 20 labels per class; fine-tune = small_cnn "
                          "pretrained on cluttered 0-4 with the zoo recipe, scratch = same architecture and epoch budget",
                  console=console)
    meta = {"seeds": args.seeds, "labels_per_class": LABELS_PER_CLASS, "canvas": CANVAS, "digit_px": DIGIT_PX,
            "source_images": SOURCE_IMAGES, "test_renders": TEST_RENDERS, "pretrain_epochs": PRETRAIN_EPOCHS,
            "head_epochs": HEAD_EPOCHS, "finetune_epochs": FINETUNE_EPOCHS, "patience": PATIENCE,
            "head_learning_rate": HEAD_LR, "unfreeze_blocks": UNFREEZE_BLOCKS, "finetune_learning_rate": FINETUNE_LR,
            "scratch_learning_rate": SCRATCH_LR, "augmentation": AUGMENTATION,
            **environment_info(["autodl", "keras", "tensorflow", "scikit-learn", "scipy"])}
    path = save_results("vision", rows, meta)
    console.print(f"results saved to {path}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
