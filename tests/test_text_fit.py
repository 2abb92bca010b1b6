"""Text columns: the zoo's from-scratch text encoders, their statistics, the search over them, and edge parity."""

from __future__ import annotations

import json

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd
import pytest

from autodl.features.stats import char_ngrams, standardize, text_stats

SCRATCH_MODELS = ["bag_of_ngrams", "char_ngrams", "textcnn", "bilstm", "text_transformer"]


def make_text_table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Reviews whose sentiment words decide the label (10% of labels flipped), among filler words."""
    rng = np.random.default_rng(seed)
    pos = ["great", "lovely", "excellent", "superb", "enjoyed", "recommend"]
    neg = ["awful", "terrible", "boring", "waste", "disappointing", "poor"]
    filler = ["the", "a", "film", "plot", "actors", "was", "and", "it", "very", "really", "story", "ending", "I"]
    rows = []
    for _ in range(n):
        label = int(rng.integers(0, 2))
        words = list(rng.choice(filler, size=int(rng.integers(4, 14))))
        for _ in range(int(rng.integers(1, 3))):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(pos if label else neg)))
        if rng.random() < 0.1:
            label = 1 - label
        rows.append((" ".join(words).capitalize() + str(rng.choice([".", "!", "..."])), "pos" if label else "neg"))
    return pd.DataFrame(rows, columns=["review", "sentiment"])


def test_text_stats_hold_words_pairs_and_a_covering_length() -> None:
    texts = np.array(["Not good at all!", "not good", "GOOD film", "a very long text " * 10], dtype=object)
    stats = text_stats(texts)
    assert stats.tokens[:2] == ["good", "not"] and "not good" in stats.ngrams  # a pair seen in two texts
    assert "good film" not in stats.ngrams  # seen once: left out
    assert len(stats.idf) == len(stats.ngrams) and stats.sequence_length % 8 == 0
    assert stats.n_truncated == int(sum(len(standardize(t)) > stats.sequence_length for t in texts))
    assert standardize("Ça VA, très-bien!") == ["Ça", "va", "très", "bien"]  # ASCII lowering, like tf.strings.lower
    assert "g o o d" in stats.char_ngrams and "f i l m" not in stats.char_ngrams  # "film" is in one text only
    assert len(stats.char_idf) == len(stats.char_ngrams)


def test_character_ngrams_match_text_vectorization_and_the_runner() -> None:
    """Python's character n-grams (training statistics, edge runner) are exactly the Keras layer's."""
    import random

    from autodl.edge import autodl_edge
    from autodl.zoo.text._common import collapse_whitespace

    rnd = random.Random(0)
    alphabet = "aAbZ \t\n\r\x0b\x0c\u00a0\u2028éÉİ😀!?.,'"
    texts = ["  Great\tfood!! ", "ÉCOLE école 😀 ok", "x", "", " ", "a\u000bb\u00a0c\u2028d  e\n\nf"]
    texts += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 25))) for _ in range(300)]
    vocabulary = sorted({g for t in texts for g in char_ngrams(t)})
    idf = np.linspace(0.5, 2.0, len(vocabulary) + 1)
    layer = keras.layers.TextVectorization(vocabulary=vocabulary, idf_weights=idf[1:], output_mode="tf_idf",
                                           ngrams=(2, 3, 4, 5), standardize=collapse_whitespace, split="character")
    expected = keras.ops.convert_to_numpy(layer(np.array(texts, dtype=object)))
    assert expected[:, 1:].sum(axis=1).min() == 0 and (expected[:, 0] == 0).all()  # empty texts; nothing unknown
    runner = autodl_edge.tfidf(texts, layer.get_vocabulary(), layer._lookup_layer.idf_weights_const.numpy(),
                               [2, 3, 4, 5], "collapse_whitespace", "character")
    np.testing.assert_allclose(runner, expected, rtol=1e-6)
    assert [autodl_edge.char_ngrams(t, [2, 3, 4, 5]) for t in texts] == [char_ngrams(t) for t in texts]


@pytest.mark.parametrize("name", SCRATCH_MODELS)
def test_each_text_encoder_builds_trains_and_round_trips(name, tmp_path) -> None:
    from autodl import zoo

    texts = make_text_table(40)["review"].to_numpy()
    stats = text_stats(texts)
    inp = keras.Input((), dtype="string", name="review")
    out = keras.layers.Dense(2, activation="softmax")(zoo.get(name).build(kt.HyperParameters(), inp, stats, name="review"))
    model = keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    x = keras.ops.convert_to_tensor(texts)
    model.fit(x, np.arange(40) % 2, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert zoo.get(name).card.task == "text" and zoo.get(name).card.paper


@pytest.mark.parametrize("mode", ["split_punctuation", "lower_and_strip_punctuation"])
def test_runner_token_ids_match_text_vectorization(mode: str) -> None:
    from autodl.edge import autodl_edge
    from autodl.zoo.text._common import split_punctuation

    stats = text_stats(make_text_table(50)["review"].to_numpy())
    layer = keras.layers.TextVectorization(
        vocabulary=stats.tokens + ["didn", "t"], output_mode="int", output_sequence_length=6,
        standardize=split_punctuation if mode == "split_punctuation" else mode,
    )
    texts = ["Great plot, GREAT actors!", "", "zzz unknown words here and there too many", "poor\tpoor  film",
             "didn't-like it...10/10", "Ça VA,très-bien!"]
    expected = keras.ops.convert_to_numpy(layer(np.array(texts)))
    np.testing.assert_array_equal(autodl_edge.token_ids(texts, layer.get_vocabulary(), 6, mode), expected)
    if mode == "split_punctuation":  # and the training statistics tokenize as the runner (and so the layer) does
        assert [autodl_edge.words(t) for t in texts] == [standardize(t) for t in texts]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """One search over the five from-scratch encoders (warm start: one trial each, on the linear head)."""
    from autodl import AutoModel

    out = tmp_path_factory.mktemp("text") / "run"
    model = AutoModel(target="sentiment", models=SCRATCH_MODELS, max_trials=5, max_epochs=5, out=out, verbosity=0)
    return model.fit(make_text_table(300))


def test_a_text_only_table_searches_the_text_encoders(text_run) -> None:
    manifest = text_run.manifest
    board = text_run.leaderboard()
    assert sorted(board["architecture"]) == sorted(f"linear+{m}" for m in SCRATCH_MODELS)  # the first head: linear
    assert manifest["split"]["cv_folds"] == 0  # text: one validation split, not five folds
    # The shipped members are retrained on train + validation for their best epoch counts.
    final = manifest["final_model"]
    assert final["refit"] and set(final["refit"]) <= set(final["members"])
    assert final["kind"] == ("ensemble" if len(final["members"]) > 1 else "refit")
    assert manifest["metrics"]["test"]["accuracy"] >= 0.75  # 10% label noise caps it near 0.9
    assert manifest["text_columns"]["review"]["sequence_length"] >= 8
    predictions = text_run.predict(pd.DataFrame({"review": ["An excellent, lovely film", "Boring and awful, a waste"]}))
    assert predictions.tolist() == ["pos", "neg"]


def test_the_text_model_exports_with_the_tokenizer_in_the_edge_runner(text_run, tmp_path) -> None:
    report = text_run.export(formats=("serving", "tflite"), out=str(tmp_path / "export"), quantize="int8",
                             data=make_text_table(300))
    assert report["serving"]["label_agreement"] == 1.0
    for variant in ("float32", "int8"):
        assert report["tflite"]["variants"][variant]["label_agreement"] >= 0.95, variant
    assert report["tflite"]["variants"]["float32"]["max_abs_diff"] < 1e-4
    schema = json.loads((tmp_path / "export" / "edge" / "schema.json").read_text())
    # The runner tokenizes in Python (LiteRT builtins cannot): word ids for the sequence encoders,
    # TF-IDF of words and of character n-grams: one step per tokenizer, shared by the members using it.
    steps = sorted((s["op"], s["params"].get("split"), str(s["params"].get("ngrams"))) for s in schema["inputs"].values())
    assert steps == [("tfidf", "character", "[2, 3, 4, 5]"), ("tfidf", "whitespace", "2"),
                     ("token_ids", "whitespace", "None")]


def test_text_beside_other_columns_is_one_model_with_a_text_branch(tmp_path) -> None:
    from autodl import AutoModel
    from tests.conftest import make_table

    df = make_table(200, text=True)
    model = AutoModel(target="y", models=["mlp", "textcnn"], max_trials=1, max_epochs=3, cv=0, out=tmp_path / "run",
                      verbosity=0).fit(df)
    assert model.leaderboard()["architecture"].tolist() == ["mlp+textcnn"]
    names = {layer.name for layer in model.model.layers}
    assert "review_tokens" in names and "x1" in {i.name for i in model.model.inputs}


def test_degenerate_text_columns_are_dropped_with_a_reason() -> None:
    from autodl.data import infer_schema

    df = make_text_table(60)
    df["same"] = "the same sentence for every row"
    df["empty"] = None
    schema = infer_schema(df, "sentiment")
    kinds = {c.name: (c.kind, c.reason) for c in schema.columns}
    assert kinds["review"][0] == "text"
    assert kinds["same"][0] == "drop" and "constant" in kinds["same"][1]
    assert kinds["empty"][0] == "drop"


def test_docstrings_run() -> None:
    import doctest

    from autodl.features import stats
    from autodl.zoo import layers
    from autodl.zoo.text import bilstm, chars, ngrams, textcnn, transformer

    for module in (stats, layers, ngrams, chars, textcnn, bilstm, transformer):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
