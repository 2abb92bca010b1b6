"""The streaming path: sample-based schema, streaming statistics, tf.data batches, chunked prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import autodl.features.streaming as streaming
from autodl.cli import main
from autodl.data import infer_schema
from autodl.errors import UserError
from autodl.features import fit_stats
from autodl.features.frame import to_model_inputs
from autodl.features.streaming import TRAIN, TableStream, scan, split_codes, stream_stats
from tests.conftest import make_table


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 300 rows, so a small file is read in many of them."""
    monkeypatch.setattr(streaming, "CHUNK_ROWS", 300)
    monkeypatch.setattr(streaming, "SAMPLE_ROWS", 500)


@pytest.fixture
def table_file(tmp_path: Path) -> Path:
    path = tmp_path / "table.csv"
    make_table(2000).to_csv(path, index=False)
    return path


def test_the_sample_does_not_depend_on_the_chunk_size(table_file: Path) -> None:
    a = scan(table_file, seed=3, sample_rows=400, chunk_rows=250)
    b = scan(table_file, seed=3, sample_rows=400, chunk_rows=1000)
    assert a.n_rows == b.n_rows == 2000
    assert a.sample.index.tolist() == b.sample.index.tolist() and len(a.sample) == 400
    assert scan(table_file, seed=4, sample_rows=400).sample.index.tolist() != a.sample.index.tolist()


def test_parquet_streams_like_csv(table_file: Path, tmp_path: Path, small_chunks) -> None:
    parquet = tmp_path / "table.parquet"
    pd.read_csv(table_file).to_parquet(parquet, row_group_size=256)
    from_csv, from_parquet = scan(table_file, seed=0), scan(parquet, seed=0)
    assert from_parquet.n_rows == from_csv.n_rows == 2000
    assert from_parquet.sample.index.tolist() == from_csv.sample.index.tolist()
    schema = infer_schema(from_csv.sample, "y")
    a = stream_stats(table_file, schema, from_csv.sample, seed=0, valid_fraction=0.15, test_fraction=0.15)
    b = stream_stats(parquet, schema, from_parquet.sample, seed=0, valid_fraction=0.15, test_fraction=0.15)
    assert a.n_train == b.n_train and a.features.vocabularies == b.features.vocabularies
    np.testing.assert_allclose(a.features.means, b.features.means, rtol=1e-6)


def test_streaming_statistics_equal_the_in_memory_ones(table_file: Path, small_chunks) -> None:
    df = pd.read_csv(table_file)
    schema = infer_schema(df, "y")
    codes = split_codes(np.arange(len(df)), seed=0, valid_fraction=0.15, test_fraction=0.15)
    train = df[codes == TRAIN]
    # The sample gives quantiles and fill values: here it is every training row, so all should agree.
    stats = stream_stats(table_file, schema, train, seed=0, valid_fraction=0.15, test_fraction=0.15)
    expected = fit_stats(to_model_inputs(train, schema), schema)
    assert stats.n_train == len(train) and len(stats.valid) + len(stats.test) == len(df) - len(train)
    np.testing.assert_allclose(stats.features.quantiles, expected.quantiles)
    np.testing.assert_allclose(stats.features.variances, expected.variances, rtol=1e-4)
    np.testing.assert_allclose(stats.features.means, expected.means, rtol=1e-5, atol=1e-6)
    assert stats.features.missing_columns == expected.missing_columns == [stats.features.numeric_names.index("x2")]
    assert stats.features.vocabularies == expected.vocabularies
    assert stats.class_counts.tolist() == np.bincount(train["y"].eq("yes").astype(int)).tolist()


def test_a_table_stream_yields_every_training_row_once_per_epoch(table_file: Path, small_chunks) -> None:
    df = pd.read_csv(table_file)
    schema = infer_schema(df, "y")
    codes = split_codes(np.arange(len(df)), seed=1, valid_fraction=0.2, test_fraction=0.1)
    n_train = int((codes == TRAIN).sum())
    stream = TableStream(str(table_file), schema, 1, 0.2, 0.1, n_train, class_weight=np.array([1.0, 3.0]))
    ds = stream.dataset(batch_size=64, shuffle=True, seed=5)
    assert int(ds.cardinality()) == -(-n_train // 64)
    seen, sizes = [], []
    for x, y, weight in ds:
        sizes.append(len(y))
        seen.extend(x["x1"].numpy().tolist())
        np.testing.assert_array_equal(weight.numpy(), np.where(y.numpy() == 1, 3.0, 1.0))
    assert sorted(seen) == sorted(df.loc[codes == TRAIN, "x1"].to_numpy(dtype=np.float32).tolist())
    assert sizes.count(64) == len(sizes) - 1  # rows carry over between chunks, so only one batch is short
    assert seen[:64] != sorted(seen[:64])  # shuffled


def test_streaming_and_in_memory_fits_agree(table_file: Path, tmp_path: Path, small_chunks) -> None:
    from autodl import AutoModel

    runs = {}
    for stream in (True, False):
        runs[stream] = AutoModel(target="y", stream=stream, models=["mlp"], max_trials=1, max_epochs=6, cv=0,
                                 out=tmp_path / f"run{int(stream)}", verbosity=0).fit(str(table_file))
    streamed, in_memory = runs[True].manifest, runs[False].manifest
    assert streamed["data"]["streamed"] and not in_memory["data"]["streamed"]
    def kinds(schema: dict) -> list:  # counts (distinct, missing %) differ: the streaming schema saw a sample
        return [(c["name"], c["kind"], c["storage"]) for c in schema["columns"]] + [schema["task"], schema["classes"]]

    assert kinds(streamed["schema"]) == kinds(in_memory["schema"])
    split = streamed["split"]
    assert split["train"] + split["valid"] + split["test"] == 2000 and abs(split["valid"] - 300) < 60
    assert abs(streamed["metrics"]["test"]["accuracy"] - in_memory["metrics"]["test"]["accuracy"]) < 0.05
    assert streamed["metrics"]["test"]["accuracy"] > 0.85

    # chunked prediction writes the same file as in-memory prediction
    out_stream, out_memory = tmp_path / "streamed.csv", tmp_path / "memory.csv"
    run = str(tmp_path / "run1")
    assert main(["predict", run, str(table_file), "-o", str(out_stream), "--stream"]) == 0
    assert main(["predict", run, str(table_file), "-o", str(out_memory), "--no-stream"]) == 0
    assert out_stream.read_bytes() == out_memory.read_bytes()


def test_streaming_refuses_what_needs_every_row_in_memory(table_file: Path, tmp_path: Path, capsys) -> None:
    from autodl import AutoModel

    with pytest.raises(UserError, match="already in memory"):
        AutoModel(target="y", stream=True, out=tmp_path / "a").fit(make_table(50))
    assert main(["fit", str(table_file), "--target", "y", "--stream", "--cv", "5", "--out", str(tmp_path / "b")]) == 2
    assert "--cv needs every row in memory" in capsys.readouterr().err


def test_chunked_prediction_writes_nothing_when_a_chunk_is_bad(table_file: Path, tmp_path: Path, small_chunks) -> None:
    from autodl import AutoModel

    AutoModel(target="y", models=["mlp"], max_trials=1, max_epochs=2, cv=0, out=tmp_path / "run", verbosity=0).fit(
        str(table_file))
    bad = tmp_path / "bad.csv"
    make_table(700).drop(columns="y").to_csv(bad, index=False)
    with bad.open("a") as f:
        f.write("1.0,2.0,paris,3,2024-01-01,extra,fields\n")  # row 701: two chunks are predicted before it fails
    out = tmp_path / "predictions.csv"
    out.write_text("kept\n")
    assert main(["predict", str(tmp_path / "run"), str(bad), "-o", str(out), "--stream"]) == 2
    assert out.read_text() == "kept\n"  # the earlier file is untouched
    assert not list(tmp_path.glob(".predictions.csv.*"))
