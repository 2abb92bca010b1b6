"""Shared fixtures: small generated tables; no test needs the benchmark datasets."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pandas as pd
import pytest


def make_table(n: int = 400, task: str = "binary", seed: int = 0, text: bool = False) -> pd.DataFrame:
    """A table with numeric, skewed-with-missing, categorical, small-int and date columns."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.lognormal(size=n)
    x2[rng.random(n) < 0.1] = np.nan
    city = rng.choice(["paris", "lyon", "nice", "lille", "brest"], size=n)
    rooms = rng.integers(1, 5, size=n)
    day = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, size=n), unit="D")
    signal = 1.5 * x1 + (city == "paris") * 1.0 - 0.3 * rooms + 0.2 * np.nan_to_num(np.log(x2))
    df = pd.DataFrame(
        {
            "x1": x1.round(4),
            "x2": x2.round(4),
            "city": city,
            "rooms": rooms,
            "day": day.strftime("%Y-%m-%d"),
        }
    )
    if text:
        words = np.array(["great", "bad", "fine", "awful", "nice", "poor", "lovely", "meh"])
        df["review"] = [" ".join(rng.choice(words, size=6)) for _ in range(n)]
    noise = rng.normal(scale=0.3, size=n)
    if task == "regression":
        df["y"] = (signal + noise).round(4)
    elif task == "multiclass":
        df["y"] = np.select([signal + noise < -0.5, signal + noise < 0.7], ["low", "mid"], "high")
    else:
        df["y"] = np.where(signal + noise > 0, "yes", "no")
    return df


@pytest.fixture
def table() -> pd.DataFrame:
    return make_table()


@pytest.fixture
def csv_path(tmp_path, table):
    path = tmp_path / "data.csv"
    table.to_csv(path, index=False)
    return path


@pytest.fixture
def empty_weights_cache(tmp_path, monkeypatch):
    """An empty zoo weights cache (``$AUTODL_HOME``) for the test: nothing reads ~/.cache or the network."""
    monkeypatch.setenv("AUTODL_HOME", str(tmp_path / "autodl-home"))
    return tmp_path / "autodl-home"
