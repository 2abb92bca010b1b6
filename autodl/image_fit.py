"""The image pipeline of ``autodl fit``: read → probe → split → search → evaluate → write.

``autodl fit photos/`` (one sub-folder per class) or ``autodl fit images.csv``
(an image-path column and a target) come here instead of the table pipeline
(``autodl.fit``). The stages reuse the table pipeline's pieces where the job is
the same (the run directory and its resume rules, the oracles, the budget, the
leaderboard) and the image pieces of ``autodl finetune`` (reading, probing and
splitting images, evaluating a model on them):

- **search**: keras-tuner over zoo image backbones (``ImageHyperModel``), each
  trial trained with the transfer-learning recipe (pretrained backbones) or
  from scratch, under the same trial and time budgets; running the command
  again resumes an interrupted search;
- **final model**: the best trial's weights (the recipe already picked its best
  epoch on the validation images);
- **evaluate**: accuracy and the other classification metrics on the test
  images, per-image predictions in ``test_predictions.csv``.

The run directory reads like ``autodl finetune``'s (``"input": "image"``), so
``autodl predict`` and ``autodl export`` work on it unchanged.

Example (a few minutes on CPU):

>>> from autodl import AutoModel
>>> model = AutoModel(max_trials=4, time_limit="10m").fit("photos/")  # doctest: +SKIP
>>> model.predict("new_photos/")[:3]  # doctest: +SKIP
array(['cat', 'dog', 'cat'], dtype=object)
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from autodl.errors import UserError
from autodl.finetune import evaluate_images, predict_image_output, prepare_images
from autodl.fit import FitConfig, FitResult, _load_split, leaderboard_frame, open_run, versions
from autodl.progress import NullReporter, Reporter
from autodl.run import RunDir, atomic_write, atomic_write_text

__all__ = ["default_architectures", "image_fingerprint", "run_image_fit"]

METRIC = "accuracy"
# Backbones above this many parameters train too slowly on a CPU to search by default;
# name them with --models (ResNet50V2, ConvNeXtTiny).
DEFAULT_MAX_PARAMETERS = 10_000_000


def default_architectures(models: tuple[str, ...] | None) -> tuple[list[str], list[str]]:
    """The image backbones to search, and one note per default backbone left out (and why).

    Named ``models`` are all searched; pretrained weights not cached yet are fetched
    (offline, a clear error names ``autodl zoo pull``). Without ``models``: every
    light backbone whose weights are in the cache, and those trained from scratch,
    smallest first, so a short budget tries the quick ones first.
    """
    from autodl import zoo
    from autodl.zoo.weights import fetch, is_cached

    if models:
        for name in models:
            if zoo.get(name).card.pretrained is not None:
                fetch(name)  # fails in a second, before any image is read, when it cannot be had
        return list(models), []
    chosen: list[tuple[int, str]] = []
    large: list[str] = []
    not_cached: list[str] = []
    for entry in zoo.list_entries("image"):
        card = entry.card
        if (card.parameters or 0) > DEFAULT_MAX_PARAMETERS:
            large.append(card.name)
        elif card.pretrained is not None and not is_cached(card.pretrained):
            not_cached.append(card.name)
        else:
            chosen.append((card.parameters or 0, card.name))
    left_out = []
    if not_cached:
        left_out.append(f"{', '.join(not_cached)} (weights not cached: autodl zoo pull NAME)")
    if large:
        left_out.append(f"{', '.join(large)} (large for a CPU search: add with --models)")
    return [name for _, name in sorted(chosen)], left_out


def image_fingerprint(paths: list[str]) -> str:
    """Tells a resumed run whether it sees the same images: their paths, sizes and modification times."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return "images:" + digest.hexdigest()[:32]


def run_image_fit(config: FitConfig, data: str | os.PathLike[str], *, reporter: Reporter | None = None) -> FitResult:
    """Searches zoo image models for the images in ``data``; writes the run directory, returns its result."""
    from autodl.search.image_hypermodel import default_image_sizes

    start = time.monotonic()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    reporter = reporter or NullReporter()
    config.validate(kind="image")
    architectures, left_out = default_architectures(config.models)
    if not architectures:
        raise UserError("no image backbone can be searched: pull pretrained weights with 'autodl zoo pull NAME' "
                        "or name models with --models")
    dataset, probe, split = prepare_images(data, target=config.target, seed=config.seed, valid_fraction=config.valid_fraction,
                                           test_fraction=config.test_fraction, reporter=reporter)
    attributes = None
    if config.sensitive:
        from autodl.audit.audit import sensitive_groups
        from autodl.data import image_attributes

        attributes = image_attributes(data, config.sensitive, dataset.paths)
        sensitive_groups(attributes, config.sensitive)  # a clear error for a one-valued column, before the search
        if config.positive is not None and config.positive not in dataset.classes:
            raise UserError(f"--positive {config.positive!r} is not a class; classes are: {', '.join(dataset.classes)}")
    fingerprint = image_fingerprint(dataset.paths)
    run, resume = open_run(config, data, fingerprint)
    if resume:
        split = _load_split(run)
    else:
        atomic_write(run.split_path, lambda p: np.savez(p, train=split.train, valid=split.valid, test=split.test))
    if left_out:
        reporter.message("not searched: " + "; ".join(left_out))
    median_side = min(probe.height[1], probe.width[1]) if probe.checked > len(probe.unreadable) else None
    sizes = list(config.image_size) or default_image_sizes(median_side)
    task = "binary" if len(dataset.classes) == 2 else "multiclass"
    manifest: dict[str, Any] = {
        "status": "running",
        "command": "fit",
        "input": "image",
        "started_at": started_at,
        "config": asdict(config),
        "data": {
            **dataset.to_dict(),
            "fingerprint": fingerprint,
            "probe": {"checked": probe.checked, "unreadable": len(probe.unreadable), "summary": probe.summary()},
        },
        "task": task,
        "target": config.target or "class",
        "metric": METRIC,
        "split": {"train": len(split.train), "valid": len(split.valid), "test": len(split.test), "cv_folds": 0},
        "search_space": {"architectures": architectures, "image_sizes": sizes, "left_out": left_out},
        "seed": config.seed,
        "versions": versions(),
    }
    run.write_manifest(manifest)
    timings: dict[str, float] = {"prepare": time.monotonic() - start}
    deadline = None
    if config.time_limit is not None:
        # Evaluating and saving takes seconds, not the refit a table run may need.
        reserve = max(0.05 * config.time_limit, min(20.0, 0.2 * config.time_limit))
        deadline = start + config.time_limit - reserve
    try:
        t0 = time.monotonic()
        tuner = search_images(dataset, split, config, run, architectures=architectures, image_sizes=sizes,
                              deadline=deadline, reporter=reporter, resume=resume)
        timings["search"] = time.monotonic() - t0
        t0 = time.monotonic()
        ranked = tuner.ranked_trials()
        if not ranked:
            failures = [t for t in tuner.oracle.trials.values() if t.status != "COMPLETED"]
            detail = f": {failures[-1].message.strip().splitlines()[-1]}" if failures and failures[-1].message else ""
            raise UserError(f"no trial finished within the budget{detail}; raise --time-limit or --max-trials")
        best = ranked[0]
        model = tuner.load_model(best)
        size = int(best.hyperparameters.values["image_size"])
        test = dataset.subset(split.test)
        test_outputs = predict_image_output(model, test.paths, size)
        metrics = {
            "validation": evaluate_images(model, dataset.subset(split.valid), size, task),
            "test": evaluate_images(model, test, size, task, run=run, outputs=test_outputs),
        }
        if attributes is not None:
            audit = audit_images(run, dataset, split.test, test_outputs, attributes, config, task=task)
            manifest["audit"] = {"file": "audit.json", "verdict": audit["verdict"], "sensitive": list(config.sensitive),
                                 "sensitive_as_feature": False}
        leaderboard = leaderboard_frame(tuner, METRIC)
        atomic_write_text(run.leaderboard_path, leaderboard.to_csv(index=False))
        tuner.prune_checkpoints(keep=[best.trial_id])
        atomic_write(run.model_path, model.save)
        timings["evaluate_and_save"] = time.monotonic() - t0
    except BaseException as exc:  # noqa: BLE001 - record why the run stopped, then re-raise
        run.record_stop(manifest, exc)
        raise
    timings["total"] = time.monotonic() - start
    values = {k: v for k, v in best.hyperparameters.values.items() if not k.startswith("tuner/")}
    manifest.update(_finished(run, model, best, values, dataset, config, metrics, leaderboard, tuner))
    manifest["timings"] = {k: round(v, 2) for k, v in timings.items()}
    manifest["disk_bytes"] = run.size_bytes()
    # Written last: "complete" in run.json means model.keras is there and whole.
    run.write_manifest(manifest)
    return FitResult(run_dir=run.path, manifest=manifest, leaderboard=leaderboard, model=model)


def search_images(
    dataset: Any, split: Any, config: FitConfig, run: RunDir, *, architectures: list[str], image_sizes: list[int],
    deadline: float | None, reporter: Reporter, resume: bool,
) -> Any:
    """Runs (or resumes) the keras-tuner search over image backbones; returns the tuner with its trials."""
    import keras_tuner as kt

    from autodl.search import Budget, ImageHyperModel, ImageTuner, make_oracle

    hypermodel = ImageHyperModel(dataset.classes, architectures=architectures, image_sizes=image_sizes,
                                 flip=config.flip, max_epochs=config.max_epochs, metric=METRIC)
    oracle = make_oracle(config.tuner, kt.Objective(f"val_{METRIC}", "max"), max_trials=config.max_trials,
                         seed=config.seed, initial_configs=[{"architecture": a} for a in architectures])
    tuner = ImageTuner(
        oracle=oracle, hypermodel=hypermodel, directory=str(run.path), project_name="tuner", overwrite=not resume,
        budget=Budget(deadline=deadline), reporter=reporter, seed=config.seed, max_epochs=config.max_epochs,
        keep_top_k=1,
    )
    tuner.search(dataset.subset(split.train), dataset.subset(split.valid))
    return tuner


def audit_images(
    run: RunDir, dataset: Any, test_rows: np.ndarray, test_outputs: tuple[np.ndarray, list[str]], attributes: Any,
    config: FitConfig, *, task: str,
) -> dict[str, Any]:
    """The Fairlearn audit of the test images' predictions (``predict_image_output``'s) across the image CSV's sensitive columns."""
    from autodl.audit.report import audit_frame, write_audit
    from autodl.data import Schema

    part = dataset.subset(test_rows)
    output, kept = test_outputs
    index = {p: i for i, p in enumerate(part.paths)}
    rows = np.asarray([index[p] for p in kept], dtype=np.int64)
    target = config.target or "class"
    frame = attributes.iloc[np.asarray(test_rows)[rows]].reset_index(drop=True)
    frame[target] = [part.classes[i] for i in part.labels[rows]]
    schema = Schema(target=target, task=task, columns=[], classes=list(dataset.classes))  # type: ignore[arg-type]
    positive = (config.positive or dataset.classes[-1]) if task == "binary" else None
    audit = audit_frame(schema, frame, output, config.sensitive, positive=positive, seed=config.seed)
    write_audit(run.path, audit)
    return audit


def _finished(
    run: RunDir, model: Any, best: Any, values: dict[str, Any], dataset: Any, config: FitConfig,
    metrics: dict[str, Any], leaderboard: Any, tuner: Any,
) -> dict[str, Any]:
    """The manifest entries of a finished image fit."""
    import json

    from autodl import zoo

    architecture = values["architecture"]
    card = zoo.get(architecture).card
    size = int(values["image_size"])
    how = "fine-tuned from pretrained weights" if card.pretrained is not None else "trained from scratch"
    return {
        "status": "complete",
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "schema": {"input": "image", "target": config.target, "classes": list(dataset.classes), "image_size": [size, size]},
        "final_model": {
            "kind": "single",
            "members": [best.trial_id],
            "reason": f"best trial on the validation images: {architecture} at {size}x{size}, {how}",
            f"val_{METRIC}": float(best.score),
            "parameters": int(model.count_params()),
        },
        "best_trial": {"trial": best.trial_id, "hyperparameters": values},
        "search": {
            "tuner": config.tuner,
            "objective": f"val_{METRIC}",
            "direction": "max",
            "trials": int(len(leaderboard)),
            "completed": int((leaderboard["status"] == "COMPLETED").sum()) if len(leaderboard) else 0,
        },
        "metrics": metrics,
        "leaderboard": json.loads(leaderboard.drop(columns=["hyperparameters"]).to_json(orient="records")),
        "zoo": {"entry": architecture, "title": card.title, "licence": card.licence},
        "run_dir": str(run.path),
    }
