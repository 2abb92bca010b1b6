"""Bundled sample tables, written from datasets that ship inside scikit-learn (no download).

>>> frame = sample_frame("wine")
>>> frame.shape
(178, 14)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from autodl.errors import UserError

SAMPLES: dict[str, str] = {
    "breast-cancer": "binary: 569 tumours, 30 numeric measurements, target 'target' (malignant/benign)",
    "wine": "multiclass: 178 wines, 13 numeric features, target 'target' (3 cultivars)",
    "diabetes": "regression: 442 patients, 10 features, target 'target' (disease progression)",
}


def sample_frame(name: str) -> pd.DataFrame:
    from sklearn import datasets

    loaders = {
        "breast-cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "diabetes": datasets.load_diabetes,
    }
    if name not in loaders:
        raise UserError(f"unknown sample {name!r}; choose one of: {', '.join(SAMPLES)}")
    bunch = loaders[name](as_frame=True)
    frame = bunch.frame.copy()
    if name == "breast-cancer":
        frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    return frame


def write_sample(name: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sample_frame(name).to_csv(path, index=False)
    return path
