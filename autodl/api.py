"""``AutoModel``: the one object users fit, query, and reload.

Example (a few seconds on a small table):

>>> from sklearn.datasets import load_breast_cancer
>>> df = load_breast_cancer(as_frame=True).frame
>>> model = AutoModel(target="target", max_trials=2, time_limit="60s", out="runs/doc", overwrite=True, verbosity=0)
>>> model = model.fit(df)                                  # doctest: +SKIP
>>> model.predict(df.drop(columns="target"))[:3]           # doctest: +SKIP
array([0, 0, 0])
>>> AutoModel.load("runs/doc").leaderboard().columns[0]    # doctest: +SKIP
'rank'
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from autodl.data import Schema, prepare_target, read_table
from autodl.errors import DataError, RunError, UserError
from autodl.fit import FitConfig, parse_time_limit, predict_output, prediction_frame, run_fit
from autodl.features.frame import ModelData, to_model_inputs
from autodl.progress import NullReporter, Reporter, RichReporter
from autodl.run import RunDir


class AutoModel:
    """Searches zoo architectures for a table (or images) and keeps the best model.

    ``fit`` takes a table (CSV, Parquet, DataFrame), or images: a folder with one
    sub-folder per class, or a CSV with an image-path column (paths relative to the
    CSV) and a target column. Images are searched over the zoo's image backbones,
    pretrained ones fine-tuned with the transfer-learning recipe.

    Args:
        target: the column to predict; a folder of class folders needs none.
        task: ``"binary"``, ``"multiclass"`` or ``"regression"``; inferred when ``None``.
        metric: what the search optimizes (default accuracy / rmse).
        time_limit: seconds, or ``"90s"``, ``"10m"``, ``"1h"``: the whole fit ends within it.
        max_trials: the most search trials.
        tuner: ``"bayesian"`` (default), ``"hyperband"`` or ``"random"``.
        cv: folds for cross-validated selection; ``"auto"`` uses 5 on small data (≤ 3,000 rows), 0 = one split.
        seed: the split, folds, search proposals and initial weights. Without ``time_limit`` the same
            seed repeats a run exactly on the same machine; with it, the clock decides how many trials
            run and where a long trial is cut short, so scores vary between runs.
        out: the run directory (default ``runs/<data>-<target>``).
        overwrite: start fresh instead of resuming an unfinished run.
        weight_column: a column of per-row sample weights.
        drop: columns to leave out of the model.
        models: zoo architectures to search (default all tabular entries).
        ensemble: how many top trials may be averaged (1 disables).
        refit: ``"auto"`` (after CV), ``"always"`` or ``"never"``.
        class_weight: ``"auto"`` (balance the classes only for ``metric="balanced_accuracy"``), ``"balanced"`` or
            ``"none"``; metrics and trial selection always count rows as they come.
        sensitive: columns to audit for fairness (Fairlearn) on the test split; kept out of the model's
            inputs unless ``sensitive_as_feature``; the audit goes to ``RUN/audit.json``.
        positive: the favourable class of a binary target for the audit and fairness options
            (default: the second class in sorted order).
        fairness_constraint: e.g. ``"demographic_parity_difference<=0.05"``: ship the best searched
            model that meets it on validation rows (any metric of the audit; see ``autodl.audit.constraint``).
        mitigate: ``"threshold"`` (Fairlearn ThresholdOptimizer: per-group thresholds that ``predict``
            applies) or ``"reductions"`` (Fairlearn GridSearch retraining); with a constraint, only when no
            searched model meets it.
        grid_size: models the reductions grid trains.
        image_size: images only: square input sizes to search (default: chosen from the images' sizes).
        flip: images only: allow horizontal flips in augmentation (off for digits, text, documents).
        workers: tables: run the search's trials in this many local worker processes, on keras-tuner's
            chief/worker engine (0: in this process). More workers can join from other machines.
        listen: the chief's address for workers: loopback by default; ``"0.0.0.0"`` accepts other machines.
        stream: tables: read the file in chunks instead of into memory (``None``: only files over 1 GiB);
            the schema comes from a sample, statistics from streaming passes, training batches from tf.data.
        verbosity: 0 silent, 1 progress and summary.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        task: str | None = None,
        metric: str | None = None,
        time_limit: float | str | None = None,
        max_trials: int = 20,
        tuner: str = "bayesian",
        cv: int | str | None = "auto",
        seed: int = 0,
        out: str | Path | None = None,
        overwrite: bool = False,
        weight_column: str | None = None,
        drop: Sequence[str] = (),
        models: Sequence[str] | None = None,
        ensemble: int = 5,
        refit: str = "auto",
        max_epochs: int = 100,
        class_weight: str = "auto",
        sensitive: Sequence[str] = (),
        sensitive_as_feature: bool = False,
        positive: str | None = None,
        fairness_constraint: str | None = None,
        mitigate: str | None = None,
        grid_size: int = 7,
        image_size: Sequence[int] = (),
        flip: bool = True,
        workers: int = 0,
        listen: str = "127.0.0.1",
        stream: bool | None = None,
        verbosity: int = 1,
        reporter: Reporter | None = None,
    ) -> None:
        self.config = FitConfig(
            target=target, task=task, metric=metric, time_limit=parse_time_limit(time_limit),
            max_trials=max_trials, tuner=tuner, cv=cv, seed=seed, out=None if out is None else str(out),
            overwrite=overwrite, weight_column=weight_column, drop=tuple(drop),
            models=None if models is None else tuple(models), ensemble=ensemble, refit=refit,
            max_epochs=max_epochs, class_weight=class_weight, sensitive=tuple(sensitive),
            sensitive_as_feature=sensitive_as_feature, positive=positive, fairness_constraint=fairness_constraint,
            mitigate=mitigate, grid_size=grid_size, image_size=tuple(image_size), flip=flip,
            workers=workers, listen=listen, stream=stream,
        )
        self.verbosity = verbosity
        self._reporter = reporter
        self._run_dir: Path | None = None
        self._manifest: dict[str, Any] | None = None
        self._model: Any = None

    # -- fitting ---------------------------------------------------------------------------

    def fit(self, data: str | Path | pd.DataFrame, test_data: str | Path | pd.DataFrame | None = None) -> "AutoModel":
        """Reads, searches, evaluates on the test split (or ``test_data``) and saves the run."""
        from autodl.data import is_image_data

        reporter = self._reporter or (RichReporter() if self.verbosity else NullReporter())
        if is_image_data(data):
            if test_data is not None:
                raise UserError("a separate test set is not supported for images yet; the fit holds out 15% of the images")
            from autodl.image_fit import run_image_fit

            result = run_image_fit(self.config, data, reporter=reporter)  # type: ignore[arg-type]
        else:
            result = run_fit(self.config, data, test_data, reporter=reporter)
        self._run_dir = result.run_dir
        self._manifest = result.manifest
        self._model = result.model
        return self

    @classmethod
    def load(cls, run_dir: str | Path) -> "AutoModel":
        """The fitted model of a finished run directory."""
        run = RunDir(run_dir)
        manifest = run.read_complete_manifest()
        obj = cls(target=manifest["target"], verbosity=0)
        obj._run_dir = run.path
        obj._manifest = manifest
        return obj

    # -- using the model -------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        self._check_fitted()
        return self._run_dir  # type: ignore[return-value]

    @property
    def manifest(self) -> dict[str, Any]:
        self._check_fitted()
        return self._manifest  # type: ignore[return-value]

    @property
    def schema(self) -> Schema:
        if self.is_image:
            # Everything that reads a table schema (evaluate, audit, export) is tabular so far.
            raise UserError(f"'{self.run_dir}' is an image run: it has classes and an image size, not a table schema")
        return Schema.from_dict(self.manifest["schema"])

    @property
    def is_image(self) -> bool:
        """Whether the run classifies images (``autodl fit`` on images, ``autodl finetune``) rather than table rows."""
        return self.manifest.get("input") == "image"

    @property
    def model(self) -> Any:
        """The Keras model (loaded from ``model.keras`` on first use)."""
        self._check_fitted()
        if self._model is None:
            import keras

            import autodl.features.layers  # noqa: F401  (registers custom layers)
            import autodl.train.optimizer  # noqa: F401  (registers AutoAdamW, which every fit compiles with)
            import autodl.zoo.tabular  # noqa: F401

            if self.is_image:
                import autodl.recipes.finetune  # noqa: F401  (registers the loss and optimizer it compiles with)
            if self.manifest.get("text_columns"):
                import autodl.recipes.text  # noqa: F401  (registers the warm-up schedule)
                from autodl.zoo.text import minilm

                if minilm.tokenizer_available():
                    minilm.register_layers()  # the pretrained encoders' tokenizer layer is defined on first use

            path = RunDir(self.run_dir).model_path
            try:
                self._model = keras.models.load_model(path)
            except (OSError, ValueError) as e:
                raise RunError(f"cannot load {path} ({str(e).splitlines()[0]}); re-run 'autodl fit' with --overwrite") from None
        return self._model

    def predict_output(self, data: str | Path | pd.DataFrame) -> np.ndarray:
        """Raw model output: probabilities ``(n, n_classes)`` or values ``(n,)``.

        For an image run, ``data`` is a folder of images, a CSV with an image-path
        column or a list of paths; unreadable images have no row.
        """
        if self.is_image:
            return self._predict_images(data)[0]
        df = _frame(data)
        x = to_model_inputs(df, self.schema)
        return predict_output(self.model, ModelData(x), self.schema.task)

    def predict(self, data: str | Path | pd.DataFrame) -> np.ndarray:
        """Class labels (classification) or values (regression), in input row order.

        A run mitigated with per-group thresholds applies them when ``data`` has the
        sensitive columns, and warns (predicting with the model alone) when it has not.
        """
        return self.predict_frame(data)["prediction"].to_numpy()

    def predict_frame(self, data: str | Path | pd.DataFrame) -> pd.DataFrame:
        """``prediction`` plus ``proba_<class>`` columns (the model's probabilities, before any thresholds).

        An image run's frame starts with a ``path`` column: the image each row is for.
        """
        if self.is_image:
            from autodl.finetune import image_prediction_frame

            output, paths = self._predict_images(data)
            return image_prediction_frame(self.manifest["schema"]["classes"], output, paths)
        df = _frame(data)
        output = self.predict_output(df)
        frame = prediction_frame(self.schema, output)
        thresholds = self.fairness_thresholds
        if thresholds is not None:
            try:
                decided = thresholds.decide_output(self.schema, df, output)
            except DataError as e:
                warnings.warn(str(e), UserWarning, stacklevel=2)
            else:
                frame["prediction"] = prediction_frame(self.schema, decided)["prediction"]
        return frame

    def predict_chunks(self, path: str | Path, *, chunk_rows: int | None = None) -> Iterator[pd.DataFrame]:
        """``predict_frame`` of a table file, chunk by chunk: for files larger than memory.

        >>> for part in model.predict_chunks("big.csv"):  # doctest: +SKIP
        ...     part.to_csv("predictions.csv", mode="a", index=False)
        """
        from autodl.data.io import iter_table
        from autodl.features.streaming import CHUNK_ROWS

        if self.is_image:
            raise UserError("chunked prediction reads tables; an image run predicts a folder or a CSV of image paths")
        for chunk in iter_table(path, chunk_rows=chunk_rows or CHUNK_ROWS):
            yield self.predict_frame(chunk.reset_index(drop=True))

    @property
    def fairness_thresholds(self) -> Any:
        """The run's per-group thresholds (``--mitigate threshold``), or ``None``."""
        from autodl.audit.mitigation import THRESHOLD_FILE, GroupThresholds

        path = self.run_dir / THRESHOLD_FILE
        if not path.exists():
            return None
        return GroupThresholds.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def predict_proba(self, data: str | Path | pd.DataFrame) -> pd.DataFrame:
        """One column per class label with its probability."""
        if self.is_image:
            return pd.DataFrame(self._predict_images(data)[0], columns=list(self.manifest["schema"]["classes"]))
        schema = self.schema
        if schema.task == "regression":
            raise DataError("predict_proba is for classifiers; this run is a regression, use predict")
        output = self.predict_output(data)
        return pd.DataFrame(output, columns=list(schema.classes or []))

    def evaluate(self, data: str | Path | pd.DataFrame) -> dict[str, float]:
        """Test metrics on labelled data (rows with a missing label are skipped).

        For an image run, ``data`` is a folder of class folders or a CSV of image paths
        with the run's target column; its classes must be among the run's.
        """
        from autodl import metrics as metrics_lib

        if self.is_image:
            return self._evaluate_images(data)
        schema = self.schema
        df = _frame(data)
        if schema.target not in df.columns:
            raise DataError(f"data has no target column '{schema.target}'; evaluate needs labelled rows")
        df = df[df[schema.target].notna()].reset_index(drop=True)
        if df.empty:
            raise DataError(f"every row's target '{schema.target}' is missing; evaluate needs labelled rows")
        y = prepare_target(df[schema.target], schema)
        weight = df[schema.weight_column].to_numpy(np.float32) if schema.weight_column in df.columns else None
        output = predict_output(self.model, ModelData(to_model_inputs(df, schema)), schema.task)
        return metrics_lib.compute(schema.task, y, output, weight, schema.threshold)

    def export(
        self,
        formats: Sequence[str] = ("serving", "tflite"),
        *,
        data: str | Path | pd.DataFrame | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """TF Serving and LiteRT artifacts, each checked against this model; returns the report.

        ``options`` are ``autodl.export.pipeline.ExportOptions`` fields (``out``, ``quantize``,
        ``prune``, ``qat``, ...); ``data`` is the training data when the fit was given a DataFrame.
        """
        from autodl.export.pipeline import ExportOptions, export_run

        return export_run(self.run_dir, ExportOptions(formats=tuple(formats), **options), data=data)

    def leaderboard(self) -> pd.DataFrame:
        """One row per search trial, best first."""
        path = RunDir(self.run_dir).leaderboard_path
        if not path.exists():
            raise RunError(f"{path} is missing; re-run 'autodl fit' with --overwrite")
        return pd.read_csv(path)

    def _predict_images(self, data: Any) -> tuple[np.ndarray, list[str]]:
        """Probabilities of an image run for ``data``, and the paths of the images that decoded."""
        from autodl.data import image_paths
        from autodl.finetune import predict_image_output

        return predict_image_output(self.model, image_paths(data), tuple(self.manifest["schema"]["image_size"]))

    def _evaluate_images(self, data: Any) -> dict[str, float]:
        from autodl.data import ImageDataset, read_images
        from autodl.finetune import evaluate_images

        schema = self.manifest["schema"]
        target = schema.get("target") if not Path(data).is_dir() else None
        labelled = read_images(data, target=target)
        classes = list(schema["classes"])
        unknown = sorted(set(labelled.classes) - set(classes))
        if unknown:
            raise DataError(f"classes {', '.join(map(repr, unknown[:5]))} in '{data}' are not among the run's: {', '.join(classes)}")
        # The data's own class list may lack some of the run's classes: relabel to the run's indices.
        index = np.asarray([classes.index(c) for c in labelled.classes], dtype=np.int64)
        labelled = ImageDataset(labelled.paths, index[labelled.labels], classes, labelled.source, labelled.skipped)
        task = "binary" if len(classes) == 2 else "multiclass"
        return evaluate_images(self.model, labelled, tuple(schema["image_size"]), task)

    def _check_fitted(self) -> None:
        if self._run_dir is None:
            raise RunError("this AutoModel is not fitted; call fit() or AutoModel.load(run_dir)")


def _frame(data: str | Path | pd.DataFrame) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data.reset_index(drop=True)
    return read_table(data)
