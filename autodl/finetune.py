"""``autodl finetune``: one named zoo image model, trained with its recipe; no search.

The pipeline reuses the pieces the rest of autodl is built from:

read (``read_images``) -> probe and drop unreadable files (``probe_images``) ->
stratified train/valid/test split (``train_valid_test_split``) -> tf.data
(``make_image_dataset``) -> backbone (``zoo.get(name).build``) with its
pretrained weights (``load_pretrained``) -> ``classifier`` -> ``fine_tune``
(pretrained) or ``train_from_scratch`` (no weights) -> test metrics
(``metrics.compute``) -> a run directory that ``AutoModel.load`` and
``autodl predict`` read like a tabular one (``"input": "image"`` in ``run.json``).

Example (a folder with one sub-folder per class):

>>> config = FinetuneConfig(model="small_cnn", image_size=64, head_epochs=5)  # doctest: +SKIP
>>> manifest = run_finetune(config, "pets/")  # doctest: +SKIP
>>> manifest["metrics"]["test"]["accuracy"]  # doctest: +SKIP
0.91
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autodl.data.images import quiet_unknown_length as _unknown_length_is_expected
from autodl.errors import RunError, UserError
from autodl.progress import NullReporter, Reporter
from autodl.run import RunDir, atomic_write, atomic_write_text

__all__ = [
    "FinetuneConfig",
    "default_run_dir",
    "evaluate_images",
    "image_prediction_frame",
    "prepare_images",
    "predict_image_output",
    "run_finetune",
]

# Decoding every file of a large set only to find the odd broken one costs minutes;
# a seeded sample finds systematic problems (LFS pointers, wrong format), and the
# pipeline drops any unreadable file it still meets.
PROBE_SAMPLE = 2000
# Prediction batches hold no gradients, so they can be larger than training ones.
PREDICT_BATCH = 64


@dataclass
class FinetuneConfig:
    """Options of ``autodl finetune NAME DATA`` (the CLI flags).

    Attributes:
        model: a zoo image entry, e.g. ``mobilenet_v3_small`` or ``small_cnn``.
        target: the label column of a CSV of image paths; ``None`` for a folder of class folders.
        image_size: images are resized to ``image_size x image_size``.
        head_epochs, finetune_epochs, unfreeze_blocks, batch_size: the recipe (``FineTuneConfig``);
            entries trained from scratch get ``head_epochs + finetune_epochs`` epochs in one phase.
        augmentation: strength in [0, 1] of the random flip/rotation/zoom/contrast.
        flip: include the horizontal flip (off for digits, text, documents).
        weights: where the pretrained file comes from when it is not cached (what
            ``autodl zoo pull NAME --from`` takes); ``None`` uses the cache or the published URL.
        from_scratch: ignore the pretrained weights and train everything from random initialization.
        valid_fraction, test_fraction, seed: the split and every random choice.
        out: the run directory (default ``runs/<data stem>-<model>``); overwrite replaces a finished run.
    """

    model: str
    target: str | None = None
    image_size: int = 160
    head_epochs: int = 10
    finetune_epochs: int = 10
    unfreeze_blocks: int = 2
    batch_size: int = 32
    augmentation: float = 0.3
    flip: bool = True
    weights: str | None = None
    from_scratch: bool = False
    valid_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    out: str | None = None
    overwrite: bool = False

    def validate(self) -> "FinetuneConfig":
        """Checks the options before any data is read; raises a one-line ``UserError``."""
        from autodl import zoo

        images = [e.card.name for e in zoo.list_entries("image")]
        try:
            entry = zoo.get(self.model)
        except KeyError:
            raise UserError(f"unknown zoo entry {self.model!r}; fine-tune one of the image entries: {', '.join(images)}") from None
        if entry.task != "image":
            raise UserError(
                f"zoo entry {self.model!r} is a {entry.task} model; fine-tune one of the image entries: "
                f"{', '.join(images)} (use 'autodl fit' for tables)"
            )
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 1:
            raise UserError(f"--image-size must be a positive number of pixels, got {self.image_size!r}")
        if not 0.0 <= self.augmentation <= 1.0:
            raise UserError(f"--augmentation must be between 0 and 1, got {self.augmentation!r}")
        for name in ("head_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("finetune_epochs", "unfreeze_blocks"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must be 0 or more")
        if self.weights is not None and (entry.card.pretrained is None or self.from_scratch):
            why = "has no pretrained weights" if entry.card.pretrained is None else "is trained --from-scratch"
            raise UserError(f"--weights does not apply: {self.model!r} {why}")
        return self

    @property
    def pretrained(self) -> bool:
        """Whether the backbone starts from its published weights (else the one-phase scratch recipe)."""
        from autodl import zoo

        return zoo.get(self.model).card.pretrained is not None and not self.from_scratch


def default_run_dir(data: str | os.PathLike[str], model: str) -> Path:
    """``runs/<data stem>-<model>``, with characters that are awkward in paths replaced."""
    stem = Path(data).stem or Path(data).resolve().name
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in f"{stem}-{model}")
    return Path("runs") / safe


def run_finetune(config: FinetuneConfig, data: str | os.PathLike[str], reporter: Reporter | None = None) -> dict[str, Any]:
    """Fine-tunes ``config.model`` on the images in ``data``; writes the run directory, returns its manifest."""
    config.validate()
    reporter = reporter or NullReporter()
    start = time.monotonic()
    timings: dict[str, float] = {}
    weights_path = None
    if config.pretrained:
        from autodl.zoo.weights import fetch

        # First of all: a missing file offline should fail in a second, before the probe, and leave no run folder.
        weights_path = fetch(config.model, config.weights)
    run = _open_run(config, data)
    # Marks the folder as this run's, so after a crash the same command starts over instead of refusing it.
    run.write_manifest({"status": "running", "command": "finetune", "input": "image", "config": asdict(config)})

    dataset, probe, split = prepare_images(data, target=config.target, seed=config.seed, valid_fraction=config.valid_fraction,
                                           test_fraction=config.test_fraction, reporter=reporter)
    # Indices into the readable images in read order, which reading the same data again reproduces.
    atomic_write(run.split_path, lambda p: np.savez(p, train=split.train, valid=split.valid, test=split.test))
    timings["prepare"] = time.monotonic() - start
    task = "binary" if len(dataset.classes) == 2 else "multiclass"

    t0 = time.monotonic()
    model, recipe, kind = _train(config, dataset, split, reporter)
    timings["train"] = time.monotonic() - t0

    t0 = time.monotonic()
    metrics = {
        "validation": evaluate_images(model, dataset.subset(split.valid), config.image_size, task),
        "test": evaluate_images(model, dataset.subset(split.test), config.image_size, task, run=run),
    }
    atomic_write(run.model_path, model.save)
    timings["evaluate_and_save"] = time.monotonic() - t0
    timings["total"] = time.monotonic() - start

    from autodl.fit import versions
    from autodl.zoo import get

    card = get(config.model).card
    s = config.image_size
    manifest: dict[str, Any] = {
        "status": "complete",
        "command": "finetune",
        "input": "image",
        "task": task,
        "target": config.target or "class",
        "schema": {"input": "image", "target": config.target, "classes": list(dataset.classes), "image_size": [s, s]},
        "final_model": {
            "kind": kind,
            "members": [],
            "reason": _reason(kind, recipe, config),
            "parameters": int(model.count_params()),
        },
        "metrics": metrics,
        "recipe": recipe,
        "data": {
            **dataset.to_dict(),
            "probe": {"checked": probe.checked, "unreadable": len(probe.unreadable), "summary": probe.summary()},
        },
        "split": {"train": len(split.train), "valid": len(split.valid), "test": len(split.test)},
        "zoo": {"entry": config.model, "title": card.title, "licence": card.licence},
        "weights": None
        if weights_path is None
        else {"path": str(weights_path), "source": config.weights or card.pretrained.url},  # type: ignore[union-attr]
        "config": asdict(config),
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "seed": config.seed,
        "versions": versions(),
        "run_dir": str(run.path),
    }
    manifest["disk_bytes"] = run.size_bytes()
    # Written last: "complete" in run.json means model.keras is there and whole.
    run.write_manifest(manifest)
    return manifest


def _open_run(config: FinetuneConfig, data: str | os.PathLike[str]) -> RunDir:
    """The run directory, emptied with ``overwrite``; a finished run or a foreign folder is refused."""
    run = RunDir(config.out or default_run_dir(data, config.model))
    if config.overwrite:
        run.clear()
        return run
    if run.exists():
        if run.read_manifest()["status"] == "complete":
            raise RunError(f"'{run.path}' already holds a finished run; pass --overwrite to replace it or --out to write elsewhere")
        # Fine-tuning has no checkpoints to resume from, so an unfinished run just starts over.
        run.clear()
        return run
    if run.path.exists() and any(run.path.iterdir()):
        raise RunError(f"'{run.path}' exists and is not an autodl run; choose another --out")
    run.create()
    return run


def prepare_images(
    data: str | os.PathLike[str], *, target: str | None, seed: int, valid_fraction: float, test_fraction: float,
    reporter: Reporter | None = None,
) -> tuple[Any, Any, Any]:
    """Reads, probes (dropping unreadable files) and splits the images: ``(ImageDataset, ImageProbe, Split)``.

    The same data and arguments give the same images and split, which is how a
    resumed fit and ``autodl export`` find a run's train and test images again.
    """
    from autodl.data import probe_images, read_images, train_valid_test_split

    dataset = read_images(data, target=target)
    probe = probe_images(dataset, sample=min(PROBE_SAMPLE, len(dataset)), seed=seed)
    if probe.unreadable:
        dataset = dataset.without(probe.unreadable, "unreadable")
    (reporter or NullReporter()).message(dataset.summary())
    split = train_valid_test_split(
        dataset.labels, stratify=True, valid_fraction=valid_fraction,
        test_fraction=test_fraction, seed=seed, class_names=dataset.classes,
    )
    return dataset, probe, split


def _train(config: FinetuneConfig, dataset: Any, split: Any, reporter: Reporter) -> tuple[Any, dict[str, Any], str]:
    """Builds and trains the classifier; returns it, the recipe's result and the final-model kind."""
    with _unknown_length_is_expected():
        return _build_and_fit(config, dataset, split, reporter)


def _build_and_fit(config: FinetuneConfig, dataset: Any, split: Any, reporter: Reporter) -> tuple[Any, dict[str, Any], str]:
    import keras

    from autodl.data import make_image_dataset
    from autodl.recipes.finetune import FineTuneConfig, classifier, fine_tune, train_from_scratch
    from autodl.zoo import get, load_pretrained

    keras.utils.set_random_seed(config.seed)
    size = (config.image_size, config.image_size)
    train = make_image_dataset(dataset.subset(split.train), image_size=size, batch_size=config.batch_size,
                               training=True, shuffle_seed=config.seed)
    valid = make_image_dataset(dataset.subset(split.valid), image_size=size, batch_size=config.batch_size)
    entry = get(config.model)
    try:
        backbone = entry.build((*size, 3))
    except ValueError as e:  # e.g. an image size below what the architecture pools down to
        raise UserError(f"{e}; pass a larger --image-size") from None
    pretrained = config.pretrained
    if pretrained:
        load_pretrained(backbone, config.model, source=config.weights)
    model = classifier(backbone, len(dataset.classes), augmentation_strength=config.augmentation,
                       flip=config.flip, pretrained=pretrained, seed=config.seed)
    if pretrained:
        n_blocks = len(entry.blocks(backbone)) if entry.blocks else 0
        recipe = FineTuneConfig(
            head_epochs=config.head_epochs, finetune_epochs=config.finetune_epochs,
            unfreeze_blocks=min(config.unfreeze_blocks, n_blocks), batch_size=config.batch_size,
        )
        reporter.message(f"fine-tuning {config.model}: head {config.head_epochs} epochs, then top {recipe.unfreeze_blocks} blocks")
        result = fine_tune(model, train, valid, blocks=entry.blocks, config=recipe)
        return model, result.to_dict(), "finetune"
    epochs = config.head_epochs + config.finetune_epochs
    reporter.message(f"training {config.model} from scratch: up to {epochs} epochs")
    phase = train_from_scratch(model, train, valid, epochs=epochs, batch_size=config.batch_size)
    return model, phase.to_dict(), "scratch"


def evaluate_images(
    model: Any, part: Any, image_size: int | tuple[int, int], task: str, run: RunDir | None = None,
    outputs: tuple[np.ndarray, list[str]] | None = None,
) -> dict[str, float]:
    """Metrics on one split part (an ``ImageDataset``); with ``run``, also writes its per-image predictions.

    ``outputs`` is ``predict_image_output``'s result for ``part.paths`` when the caller
    already has it (the image fit audits the same predictions).
    """
    from autodl import metrics as metrics_lib

    proba, kept = outputs if outputs is not None else predict_image_output(model, part.paths, image_size)
    index = {p: i for i, p in enumerate(part.paths)}
    y = part.labels[[index[p] for p in kept]]
    if run is not None:
        frame = image_prediction_frame(part.classes, proba, kept)
        frame.insert(1, "target", [part.classes[i] for i in y])
        atomic_write_text(run.predictions_path, frame.to_csv(index=False))
    return metrics_lib.compute(task, y, proba)


def predict_image_output(model: Any, paths: list[str], image_size: int | tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    """Class probabilities for the images that decode, and those images' paths (input order).

    Unreadable files have no row: the pipeline drops them, and ``PipelineStats`` names them.
    """
    from autodl.data import make_image_dataset
    from autodl.data.images import PipelineStats

    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    stats = PipelineStats()
    ds = make_image_dataset(paths, image_size=size, batch_size=PREDICT_BATCH, cache=False, stats=stats)
    with _unknown_length_is_expected():
        proba = np.asarray(model.predict(ds, verbose=0), dtype=np.float64)
    skipped = set(stats.skipped_paths())
    kept = [p for p in paths if p not in skipped]
    return proba.reshape(len(kept), -1), kept


def image_prediction_frame(classes: list[str], proba: np.ndarray, paths: list[str]) -> pd.DataFrame:
    """``path``, ``prediction`` and one ``proba_<class>`` column per class."""
    frame = pd.DataFrame({"path": paths, "prediction": [classes[i] for i in proba.argmax(axis=1)]})
    for j, name in enumerate(classes):
        frame[f"proba_{name}"] = proba[:, j]
    return frame


def _reason(kind: str, recipe: dict[str, Any], config: FinetuneConfig) -> str:
    """One sentence on what was trained, for the summary and run.json."""
    if kind == "scratch":
        why = "it has no pretrained weights" if not config.from_scratch else "--from-scratch was given"
        return f"{config.model} trained from scratch ({why}) for {recipe['epochs']} epochs, best epoch {recipe['best_epoch'] + 1}"
    kept = recipe["kept"]
    detail = "the frozen-backbone head" if kept == "head" else f"the top {config.unfreeze_blocks} blocks fine-tuned"
    return f"{config.model} fine-tuned from pretrained weights in {recipe['epochs']} epochs; kept {detail}"

