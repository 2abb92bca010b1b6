"""The tabular zoo: every entry builds, trains, saves and reloads; layers behave as documented."""

from __future__ import annotations

import keras
import keras_tuner as kt
import numpy as np
import pytest

from autodl.zoo import EncodedFeatures, get, list_entries
from autodl.zoo.layers import (
    CategoricalTokenizer,
    CLSToken,
    NumericTokenizer,
    PeriodicEmbedding,
    ReGLU,
    TakeFirstToken,
)

ENTRIES = [e.card.name for e in list_entries("tabular")]
CARDINALITIES = (4, 40)
N_NUMERIC = 5
N_TERMS = 20
VARIANTS = ("numeric_categorical", "categorical_only", "numeric_text")


def make_inputs(variant: str) -> tuple[list, EncodedFeatures]:
    """Keras inputs for a variant and the EncodedFeatures a builder sees."""
    numeric = categorical = text = None
    inputs = []
    if variant in ("numeric_categorical", "numeric_text", "numeric_only"):
        numeric = keras.Input((N_NUMERIC,), dtype="float32", name="numeric")
        inputs.append(numeric)
    if variant in ("numeric_categorical", "categorical_only"):
        categorical = tuple(keras.Input((), dtype="int32", name=f"cat{i}") for i in range(len(CARDINALITIES)))
        inputs.extend(categorical)
    if variant in ("numeric_text", "text_only"):
        text = keras.Input((N_TERMS,), dtype="float32", name="text")
        inputs.append(text)
    features = EncodedFeatures(
        numeric=numeric,
        categorical=categorical or (),
        cardinalities=CARDINALITIES if categorical else (),
        text=text,
    )
    return inputs, features


def make_data(inputs: list, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    data = []
    for x in inputs:
        if x.name.startswith("cat"):
            card = CARDINALITIES[int(x.name[3:])]
            data.append(rng.integers(0, card, size=n).astype("int32"))
        elif x.name == "text":
            data.append((rng.random((n, N_TERMS)) * (rng.random((n, N_TERMS)) < 0.2)).astype("float32"))
        else:
            data.append(rng.normal(size=(n, x.shape[-1])).astype("float32"))
    return data


def build_model(name: str, variant: str, hp: kt.HyperParameters | None = None) -> tuple[keras.Model, kt.HyperParameters]:
    hp = hp or kt.HyperParameters()
    inputs, features = make_inputs(variant)
    entry = get(name)
    representation = entry.build(hp, features)
    regularizer = entry.head_regularizer(hp) if entry.head_regularizer else None  # as the search's hypermodel does
    output = keras.layers.Dense(3, activation="softmax", kernel_regularizer=regularizer, name="proba")(representation)
    return keras.Model(inputs, output), hp


def test_registration_order() -> None:
    assert ENTRIES == ["mlp_plr", "mlp", "resnet", "ft_transformer", "linear"]
    # The linear model is the head of text-only tables; on other tables only --models names it.
    assert [e.card.name for e in list_entries("tabular") if e.default_search] == ENTRIES[:-1]


@pytest.mark.parametrize("name", ENTRIES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_fit_save_load_same_predictions(name: str, variant: str, tmp_path) -> None:
    keras.utils.set_random_seed(0)
    model, _ = build_model(name, variant)
    assert len(model.outputs[0].shape) == 2
    x = make_data(model.inputs, 32)
    y = np.random.default_rng(1).integers(0, 3, size=32)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", run_eagerly=True)
    before = model(x, training=False).numpy()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    after = model(x, training=False).numpy()
    assert np.isfinite(after).all()
    assert not np.allclose(before, after), "one training step changed nothing"
    np.testing.assert_allclose(after.sum(axis=1), 1.0, atol=1e-5)

    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x, training=False).numpy(), after, atol=1e-6)


@pytest.mark.parametrize("name", ENTRIES)
@pytest.mark.parametrize("variant", ["text_only", "numeric_only"])
def test_builds_on_other_inputs(name: str, variant: str) -> None:
    model, _ = build_model(name, variant)
    out = model(make_data(model.inputs, 4), training=False)
    assert out.shape == (4, 3)


@pytest.mark.parametrize("name", ENTRIES)
def test_no_features_is_an_error(name: str) -> None:
    with pytest.raises(ValueError, match="no numeric"):
        get(name).build(kt.HyperParameters(), EncodedFeatures(numeric=None))


@pytest.mark.parametrize("name", ENTRIES)
def test_hyperparameters_are_prefixed_and_documented(name: str) -> None:
    _, hp = build_model(name, "numeric_categorical")
    names = [h.name for h in hp.space]
    assert len(names) in range(1, 7)
    assert all(n.startswith(f"{name}/") for n in names), names
    card = get(name).card
    assert set(card.hyperparameters) == set(names)
    for forbidden in ("learning_rate", "batch_size", "optimizer", "weight_decay"):
        assert not any(forbidden in n for n in names)


@pytest.mark.parametrize("name", ENTRIES)
def test_card(name: str) -> None:
    card = get(name).card
    assert card.name == name and card.task == "tabular"
    assert "https://" in card.reference
    assert card.title and card.summary and card.good_for
    assert card.to_dict()["hyperparameters"] == card.hyperparameters


@pytest.mark.parametrize("name", ENTRIES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_configurations_build(name: str, seed: int) -> None:
    """Non-default corners of each search space build and run (e.g. FT-Transformer with 4 heads)."""
    _, hp = build_model(name, "numeric_categorical")
    values = {h.name: h.random_sample(seed * 100 + i) for i, h in enumerate(hp.space)}
    hp2 = kt.HyperParameters()
    hp2.values.update(values)
    model, hp2 = build_model(name, "numeric_categorical", hp2)
    assert {k: hp2.values[k] for k in values} == values
    out = model(make_data(model.inputs, 4), training=False)
    assert out.shape == (4, 3)


def test_ft_transformer_heads() -> None:
    from autodl.zoo.tabular.ft_transformer import heads_for

    assert heads_for(96) == 8 and heads_for(100) == 4
    hp = kt.HyperParameters()
    hp.values["ft_transformer/d_token"] = 100  # not a choice, but the builder must cope
    model, _ = build_model("ft_transformer", "numeric_categorical", hp)
    attention = [layer for layer in model.layers if isinstance(layer, keras.layers.MultiHeadAttention)]
    assert attention and all(layer.num_heads == 4 for layer in attention)


def test_mlp_one_hot_and_embedding() -> None:
    """Cardinality <= 16: one-hot (an identity-initialized Embedding); above: min(32, (card+1)//2) dims."""
    model, _ = build_model("mlp", "numeric_categorical")
    embedding = {layer.name: layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)}
    assert {(e.input_dim, e.output_dim) for e in embedding.values()} == {(4, 4), (40, 20)}
    one_hot = embedding["mlp_cat0_onehot"]
    np.testing.assert_array_equal(one_hot(np.array([2, 0])).numpy(), np.eye(4)[[2, 0]])


# --- layers ---------------------------------------------------------------------------------


def roundtrip(layer: keras.layers.Layer) -> keras.layers.Layer:
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    return clone


def test_numeric_tokenizer() -> None:
    layer = NumericTokenizer(6)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    out = layer(x).numpy()
    assert out.shape == (4, 3, 6)
    w, b = layer.weight.numpy(), layer.bias.numpy()
    np.testing.assert_allclose(out, x[:, :, None] * w[None] + b[None], rtol=1e-6, atol=1e-6)
    assert roundtrip(layer).d_token == 6


def test_categorical_tokenizer() -> None:
    layer = CategoricalTokenizer([3, 5], 4)
    a, b = np.array([0, 2, 1]), np.array([[4], [0], [3]])  # (batch,) and (batch, 1) both accepted
    out = layer([a, b]).numpy()
    assert out.shape == (3, 2, 4)
    table, bias = layer.embeddings.numpy(), layer.bias.numpy()
    np.testing.assert_allclose(out[:, 0], table[a] + bias[0], atol=1e-6)
    np.testing.assert_allclose(out[:, 1], table[3 + b[:, 0]] + bias[1], atol=1e-6)
    assert roundtrip(layer).cardinalities == [3, 5]


def test_cls_token_dynamic_batch() -> None:
    x = keras.Input((3, 4))
    layer = CLSToken(4)
    model = keras.Model(x, layer(x))
    for batch in (1, 5):
        data = np.random.default_rng(batch).normal(size=(batch, 3, 4)).astype("float32")
        out = model(data).numpy()
        assert out.shape == (batch, 4, 4)
        np.testing.assert_allclose(out[:, 1:], data)
        np.testing.assert_allclose(out[:, 0], np.broadcast_to(layer.token.numpy(), (batch, 4)))
    assert roundtrip(layer).d_token == 4


@pytest.mark.parametrize("lite", [False, True])
def test_periodic_embedding(lite: bool) -> None:
    layer = PeriodicEmbedding(n_frequencies=7, sigma=0.5, d_embedding=6, lite=lite)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    out = layer(x).numpy()
    assert out.shape == (4, 3, 6)
    assert (out >= 0).all()
    assert layer.frequencies.shape == (3, 7)
    assert layer.kernel.shape == ((14, 6) if lite else (3, 14, 6))
    # Reference computation in numpy.
    c, w, b = layer.frequencies.numpy(), layer.kernel.numpy(), layer.bias.numpy()
    v = 2 * np.pi * x[:, :, None] * c[None]
    periodic = np.concatenate([np.cos(v), np.sin(v)], axis=-1)
    linear = periodic @ w if lite else np.einsum("bnf,nfd->bnd", periodic, w)
    np.testing.assert_allclose(out, np.maximum(linear + b, 0), rtol=1e-4, atol=1e-5)
    clone = roundtrip(layer)
    assert (clone.n_frequencies, clone.sigma, clone.d_embedding, clone.lite) == (7, 0.5, 6, lite)


def test_periodic_embedding_frequency_scale() -> None:
    layer = PeriodicEmbedding(n_frequencies=64, sigma=0.1, d_embedding=2)
    layer.build((None, 50))
    std = float(np.std(layer.frequencies.numpy()))
    assert 0.07 < std < 0.13


def test_reglu_and_take_first_token() -> None:
    x = np.array([[1.0, -2.0, 3.0, 4.0, 5.0, -6.0]], "float32")
    np.testing.assert_allclose(ReGLU()(x).numpy(), [[4.0, -10.0, 0.0]])
    seq = np.arange(24, dtype="float32").reshape(2, 3, 4)
    np.testing.assert_allclose(TakeFirstToken()(seq).numpy(), seq[:, 0])
    layer = TakeFirstToken(keepdims=True)
    np.testing.assert_allclose(layer(seq).numpy(), seq[:, :1])
    assert roundtrip(layer).keepdims is True
    roundtrip(ReGLU())


@pytest.mark.parametrize(
    "module",
    ["autodl.zoo.layers", "autodl.zoo.tabular.mlp", "autodl.zoo.tabular.mlp_plr",
     "autodl.zoo.tabular.resnet", "autodl.zoo.tabular.ft_transformer", "autodl.zoo.tabular.linear"],
)
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
