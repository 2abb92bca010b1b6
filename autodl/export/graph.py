"""Splitting a fitted model at the layers LiteRT's builtin ops cannot run (or run badly).

An autodl model reads raw columns and does its own preprocessing. Most of it
converts to TFLite builtins (arithmetic, embeddings; a ``StringLookup`` becomes
``VocabularyMatch``, string equality against the vocabulary, because a hash
table would keep the weights as unquantizable resource variables), but
``IntegerLookup`` and ``TextVectorization`` need Flex ops, the MiniLM encoder's
``BertTokens`` (WordPiece) layer needs tensorflow-text custom ops, and the numeric block
(date parts in float64, median imputation, quantile or standard scaling,
missing indicators) does not survive float16 or int8 constants: thresholds of
1e5 and ramps 1e6 steep (measured on Adult: float16 lost 0.4 and int8 2.1
accuracy points with it inside). ``split_for_edge`` rebuilds the model with
those parts replaced by new inputs and describes each as a ``HostStep`` with its
parameters (vocabularies, idf weights, fill values, quantiles), which the
stand-alone edge runner applies in numpy. The rebuilt model shares the trained
layers (no weights are copied), so both graphs compute the same function.

Example:

>>> import keras, numpy as np
>>> rooms = keras.Input((), dtype="int64", name="rooms")
>>> index = keras.layers.IntegerLookup(vocabulary=[1, 2, 3])(rooms)
>>> out = keras.layers.Embedding(4, 2)(index)
>>> edge = split_for_edge(keras.Model({"rooms": rooms}, out))
>>> [(s.op, s.column) for s in edge.host_steps], edge.raw_columns
([('integer_lookup', 'rooms')], [])
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from autodl.errors import RunError
from autodl.features.layers import DateTimeParts
from autodl.features.tabular import COLUMN_LAYER_SUFFIXES, NUMERIC_PREPROCESSING_LAYERS


@dataclass(frozen=True)
class HostStep:
    """One preprocessing step the edge runner does in numpy, producing one model input.

    ``op`` is ``"integer_lookup"`` (``params``: ``vocabulary``, index 0 is the OOV
    bucket), ``"tfidf"`` (``vocabulary`` with ``[UNK]`` first, ``idf``, ``standardize``,
    ``split``, ``ngrams``: 1 for words, 2 for words and word pairs, or with ``split``
    ``"character"`` the list of character n-gram widths), ``"token_ids"``
    (``vocabulary`` with padding and ``[UNK]`` first, ``sequence_length``: word indices
    padded with 0 or truncated) or ``"numeric"`` (the numeric block: ``columns`` with their kinds (dates expand to
    year, month, day, weekday, hour), median ``fill``, ``quantile`` or ``standard`` scaling, and the
    ``missing`` indicator columns) or ``"wordpiece"`` (BERT tokenization of a text column, as
    the MiniLM encoder's ``BertTokens`` layer does it: ``vocabulary``, ``lowercase``,
    ``strip_accents``, ``split_on_cjk``, ``suffix_indicator``, ``max_bytes_per_word``,
    ``sequence_length`` and the ``cls_id``/``sep_id``/``pad_id``/``unk_id`` special tokens).
    ``column`` is the first column read.

    An op with several outputs is registered as one step per output, all with the same
    ``op``, ``column`` and ``params``; ``output`` names the output this input receives
    (``wordpiece``: ``"token_ids"`` and ``"padding_mask"``, both int32 ``(rows, sequence_length)``).
    The runner computes such an op once per column and hands each input its output.
    ``output`` is ``None`` for single-output ops.
    """

    input: str
    op: str
    column: str
    dtype: str
    width: int | None  # None: one value per row; k: a (rows, k) vector
    params: dict[str, Any] = field(default_factory=dict)
    output: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"input": self.input, "op": self.op, "column": self.column, "dtype": self.dtype,
               "width": self.width, "params": self.params}
        if self.output is not None:
            out["output"] = self.output
        return out


@dataclass
class EdgeGraph:
    """The LiteRT-ready model and what the runner must compute before calling it."""

    model: keras.Model
    raw_columns: list[str]  # raw columns the model reads directly (float or string)
    host_steps: list[HostStep]

    @property
    def input_names(self) -> list[str]:
        return list(self.model.input.keys())


def is_numeric_preprocessing(layer_name: str) -> bool:
    return layer_name in NUMERIC_PREPROCESSING_LAYERS or layer_name.endswith(COLUMN_LAYER_SUFFIXES)


def split_for_edge(model: keras.Model) -> EdgeGraph:
    """The model with every host-side layer replaced by an input (nested members included)."""
    registry = _Registry()
    edge, raw_columns = _edge_model(model, registry, name=f"{model.name}_edge")
    return EdgeGraph(edge, raw_columns, registry.steps)


HOST_LAYERS = (keras.layers.IntegerLookup, keras.layers.TextVectorization)


class _Deferred:
    """The output of a numeric preprocessing layer not rebuilt: the runner computes it (see ``_numeric_step``)."""

    def __init__(self, layer: keras.layers.Layer, args: tuple) -> None:
        self.layer = layer
        self.args = args


@keras.saving.register_keras_serializable(package="autodl")
class VocabularyMatch(keras.layers.Layer):
    """``StringLookup`` (one OOV bucket at 0, no mask) as string equality against the vocabulary.

    Same indices as the lookup it replaces, but with no hash table: a TFLite
    model holding a hash table keeps its weights as resource variables, which
    the converter then cannot quantize; EQUAL and REDUCE_MAX on strings and
    ints are plain builtins.
    """

    def __init__(self, vocabulary: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocabulary = [str(v) for v in vocabulary]

    def call(self, x: Any) -> Any:
        import tensorflow as tf

        vocabulary = tf.constant(self.vocabulary, dtype=tf.string)
        matches = tf.equal(tf.expand_dims(x, -1), tf.expand_dims(vocabulary, 0))  # (batch, V)
        positions = tf.range(1, len(self.vocabulary) + 1, dtype=tf.int32)
        index = tf.reduce_max(tf.where(matches, positions, tf.zeros_like(positions)), axis=-1)
        return tf.cast(index, "int64")

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def compute_output_spec(self, x: Any) -> Any:
        return keras.KerasTensor(x.shape, dtype="int64")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vocabulary": self.vocabulary}


def _edge_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer itself, or a builtin-only stand-in computing the same thing."""
    if isinstance(layer, keras.layers.StringLookup):
        config = layer.get_config()
        if config.get("num_oov_indices", 1) == 1 and config.get("mask_token") is None and config.get("output_mode") == "int":
            return VocabularyMatch([str(v) for v in layer.get_vocabulary()[1:]], name=layer.name)
    return layer


class _Registry:
    """Host steps across the whole model: ensemble members share one input per identical step."""

    def __init__(self) -> None:
        self.steps: list[HostStep] = []
        self._by_key: dict[str, HostStep] = {}

    def register(self, step: HostStep) -> HostStep:
        key = json.dumps([step.op, step.column, step.params, step.output], sort_keys=True)
        if key not in self._by_key:
            taken = {s.input for s in self.steps}
            name, i = step.input, 1
            while name in taken:
                i += 1
                name = f"{step.input}_{i}"
            self._by_key[key] = HostStep(name, step.op, step.column, step.dtype, step.width, step.params, step.output)
            self.steps.append(self._by_key[key])
        return self._by_key[key]


class _Level:
    """One functional graph being rebuilt: its raw-column inputs and the host inputs it uses."""

    def __init__(self, registry: _Registry) -> None:
        self.registry = registry
        self.column_of: dict[int, str] = {}
        self.used: set[str] = set()
        self.host: dict[str, Any] = {}

    def host_input(self, step: HostStep) -> Any:
        if step.input not in self.host:
            shape = () if step.width is None else (step.width,)
            self.host[step.input] = keras.Input(shape=shape, dtype=step.dtype, name=step.input)
        return self.host[step.input]


def _edge_model(model: keras.Model, registry: _Registry, name: str, column: str | None = None) -> tuple[keras.Model, list[str]]:
    """``model`` rebuilt for the edge; ``column``: the raw column a single-input member reads (a text encoder)."""
    struct = model._inputs_struct  # noqa: SLF001  (the only way to see a functional model's input dict)
    if column is not None and isinstance(struct, keras.KerasTensor):
        struct = {column: struct}
    if not isinstance(struct, dict):
        raise RunError(f"model '{model.name}' does not take a dict of named columns; export needs an autodl model")
    level = _Level(registry)
    raw = {column: keras.Input(shape=ref.shape[1:], dtype=ref.dtype, name=ref.name) for column, ref in struct.items()}
    level.column_of = {id(t): column for column, t in raw.items()}
    outputs = _replay(model, {id(ref): raw[column] for column, ref in struct.items()}, level)
    used = [c for c in struct if c in level.used]
    inputs = {c: raw[c] for c in used} | level.host
    return keras.Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name=name), used


def _replay(fn: Any, tensor_dict: dict[int, Any], level: _Level) -> list[Any]:
    """Runs ``fn``'s graph symbolically on new tensors (``tensor_dict``: id(old) → new)."""
    for depth in sorted(fn._nodes_by_depth, reverse=True):  # noqa: SLF001
        for node in fn._nodes_by_depth[depth]:  # noqa: SLF001
            op = node.operation
            if op is None or node.is_input:
                continue
            args, kwargs = node.arguments.fill_in(tensor_dict)
            if is_numeric_preprocessing(op.name) and not isinstance(op, keras.Model):
                # Imputation and scaling run in the runner, in float32: quantized or float16 constants
                # (1/width steps of 1e6, thresholds of 1e5) would wreck them (measured on Adult).
                outputs = _Deferred(op, args)
                for old in node.outputs:
                    tensor_dict[id(old)] = outputs
                continue
            deferred = [d for d in keras.tree.flatten((args, kwargs)) if isinstance(d, _Deferred)]
            if deferred:
                swap = {id(d): level.host_input(level.registry.register(_numeric_step(d, level))) for d in deferred}
                args, kwargs = keras.tree.map_structure(lambda t: swap.get(id(t), t), (args, kwargs))
            if isinstance(op, HOST_LAYERS) or is_bert_tokens(op):
                source = args[0] if args else next(iter(kwargs.values()))
                column = level.column_of.get(id(source))
                if column is None:
                    raise RunError(
                        f"layer '{op.name}' ({type(op).__name__}) cannot run in LiteRT and does not read a raw "
                        "column, so the edge runner cannot compute it; export --format serving instead"
                    )
                if is_bert_tokens(op):
                    outputs: Any = _wordpiece_inputs(op, column, level)
                else:
                    outputs = level.host_input(level.registry.register(_host_step(op, column)))
            elif isinstance(op, keras.Model) and hasattr(op, "_nodes_by_depth") and _reads_columns((args, kwargs), level):
                # A member reading raw columns (an ensemble's trial model, a text encoder) may hold host
                # steps: rebuilt. Any other nested model (the BERT trunk) computes on tensors: called as is.
                outputs = _call_member(op, args[0], level)
            else:
                level.used.update(level.column_of[id(t)] for t in keras.tree.flatten((args, kwargs)) if id(t) in level.column_of)
                outputs = _edge_layer(op)(*args, **kwargs)
            for old, new in zip(node.outputs, keras.tree.flatten(outputs)):
                tensor_dict[id(old)] = new
    return [tensor_dict[id(x)] for x in fn.outputs]


def _reads_columns(args: Any, level: _Level) -> bool:
    return any(id(t) in level.column_of for t in keras.tree.flatten(args))


def _call_member(member: keras.Model, value: Any, level: _Level) -> Any:
    """A nested member rebuilt as its own sub-model, so layer names stay scoped.

    ``value``: the dict of named columns (an ensemble's trial model), or one raw column
    (a text encoder such as MiniLM, whose single input is that column's strings).
    """
    column = None
    if not isinstance(value, dict):
        column = level.column_of.get(id(value))
        if column is None:
            raise RunError(f"member model '{member.name}' is not called on the named columns; cannot split it")
        value = {column: value}
    edge, used = _edge_model(member, level.registry, name=member.name, column=column)
    feed = {}
    for key in edge.input:
        if key in used:
            feed[key] = value[key]
            if id(value[key]) in level.column_of:
                level.used.add(level.column_of[id(value[key])])
        else:
            step = next(s for s in level.registry.steps if s.input == key)
            feed[key] = level.host_input(step)
    return edge(feed)


def is_bert_tokens(layer: Any) -> bool:
    """Whether ``layer`` is the MiniLM encoder's ``autodl>BertTokens`` tokenizer (without importing keras-hub)."""
    return isinstance(layer, keras.layers.Layer) and keras.saving.get_registered_name(type(layer)) == "autodl>BertTokens"


# tf_text.FastWordpieceTokenizer (inside keras-hub's WordPieceTokenizer) maps longer words to the OOV token.
WORDPIECE_MAX_BYTES_PER_WORD = 100


def wordpiece_params(layer: Any) -> dict[str, Any]:
    """The ``wordpiece`` host step's parameters, read from a ``BertTokens`` layer."""
    tokenizer = layer.tokenizer
    unsupported = {
        "split": (tokenizer.split, True),
        "special_tokens_in_strings": (tokenizer.special_tokens_in_strings, False),
    }
    for key, (value, wanted) in unsupported.items():
        if bool(value) != wanted:
            raise RunError(f"BertTokens '{layer.name}' uses {key}={value!r}; the edge runner implements {wanted!r}")
    vocabulary = [str(v) for v in layer.vocabulary]
    ids = {t: i for i, t in enumerate(vocabulary)}
    return {
        "vocabulary": vocabulary,
        "lowercase": bool(tokenizer.lowercase),
        "strip_accents": bool(tokenizer.strip_accents),
        "split_on_cjk": bool(tokenizer.split_on_cjk),
        "suffix_indicator": str(tokenizer.suffix_indicator),
        "max_bytes_per_word": WORDPIECE_MAX_BYTES_PER_WORD,
        "sequence_length": int(layer.sequence_length),
        "cls_id": ids["[CLS]"],
        "sep_id": ids["[SEP]"],
        "pad_id": ids["[PAD]"],
        "unk_id": ids[str(tokenizer.oov_token)],
    }


def _wordpiece_inputs(layer: Any, column: str, level: _Level) -> dict[str, Any]:
    """``BertTokens``' outputs from two host inputs (token ids and padding mask) of one ``wordpiece`` step.

    Segment ids are zeros computed in the graph; the mask comes in as int32 (0/1) and is
    cast to the bool the trunk and the masked mean pooling were called with.
    """
    from autodl.features.tabular import layer_name  # noqa: PLC0415

    params = wordpiece_params(layer)
    length = params["sequence_length"]
    inputs = {}
    for output in ("token_ids", "padding_mask"):
        step = HostStep(f"{layer_name(column)}__{output}", "wordpiece", column, "int32", length, params, output=output)
        inputs[output] = level.host_input(level.registry.register(step))
    token_ids = inputs["token_ids"]
    return {
        "token_ids": token_ids,
        "segment_ids": keras.ops.zeros_like(token_ids),
        "padding_mask": keras.ops.cast(inputs["padding_mask"], "bool"),
    }


def _numeric_step(final: _Deferred, level: _Level) -> HostStep:
    """One host step for the numeric block: raw numeric/date columns → imputed, scaled features (+ indicators)."""
    from autodl.features.layers import ImputeMissing, MissingIndicator, QuantileTransform

    found: dict[type, Any] = {}
    stack = [final]
    while stack:
        d = stack.pop()
        found.setdefault(type(d.layer), d)
        stack.extend(a for a in keras.tree.flatten(d.args) if isinstance(a, _Deferred))
    impute = found.get(ImputeMissing)
    if impute is None:
        raise RunError(f"numeric block ending in '{final.layer.name}' has no imputation layer; cannot export it to the edge runner")
    raw = impute.args[0]
    parts = keras.tree.flatten(raw.args) if isinstance(raw.layer, keras.layers.Concatenate) else [raw]
    columns = []
    for part in parts:
        column = level.column_of.get(id(part.args[0])) if isinstance(part, _Deferred) else None
        if column is None:
            raise RunError(f"numeric preprocessing layer '{getattr(part, 'layer', part)}' does not read a raw column")
        columns.append({"column": column, "kind": "datetime" if isinstance(part.layer, DateTimeParts) else "numeric"})
    params: dict[str, Any] = {"columns": columns, "fill": list(impute.layer.fill_values)}
    if QuantileTransform in found:
        params.update(transform="quantile", quantiles=found[QuantileTransform].layer.quantiles)
    elif keras.layers.Normalization in found:
        norm = found[keras.layers.Normalization].layer
        params.update(transform="standard", mean=np.ravel(keras.ops.convert_to_numpy(norm.mean)).tolist(),
                      variance=np.ravel(keras.ops.convert_to_numpy(norm.variance)).tolist())
    else:
        raise RunError(f"numeric block ending in '{final.layer.name}' has no quantile or standard scaling")
    with_indicators = isinstance(final.layer, keras.layers.Concatenate) and MissingIndicator in found
    params["missing"] = list(found[MissingIndicator].layer.columns) if with_indicators else []
    width = len(params["fill"]) + len(params["missing"])
    return HostStep("numeric__features", "numeric", columns[0]["column"], "float32", width, params)


def _host_step(layer: keras.layers.Layer, column: str) -> HostStep:
    from autodl.features.tabular import layer_name  # noqa: PLC0415

    if isinstance(layer, keras.layers.IntegerLookup):
        config = layer.get_config()
        if config.get("num_oov_indices", 1) != 1 or config.get("mask_token") is not None:
            raise RunError(f"IntegerLookup '{layer.name}' has an OOV/mask setup the edge runner does not implement")
        vocabulary = [int(v) for v in layer.get_vocabulary()[1:]]
        return HostStep(f"{layer_name(column)}__index", "integer_lookup", column, "int64", None, {"vocabulary": vocabulary})
    if isinstance(layer, keras.layers.TextVectorization):
        config = layer.get_config()
        mode = config["output_mode"]
        # A callable standardization is known by its name (the zoo's are split_punctuation and collapse_whitespace).
        standardize = getattr(config["standardize"], "__name__", config["standardize"])
        split = config["split"]
        ngrams = config["ngrams"]
        characters = split == "character"
        expected = {
            "output_mode": (mode, ("tf_idf",) if characters else ("tf_idf", "int")),
            "standardize": (standardize, ("collapse_whitespace",) if characters
                            else ("split_punctuation", "lower_and_strip_punctuation")),
            "split": (split, ("whitespace", "character")),
        }
        if not characters:
            expected["ngrams"] = (ngrams, (None, 2) if mode == "tf_idf" else (None,))
        elif not (isinstance(ngrams, (tuple, list)) and all(isinstance(n, int) and n > 0 for n in ngrams)):
            expected["ngrams"] = (ngrams, ("a tuple of widths",))
        for key, (value, allowed) in expected.items():
            if value not in allowed:
                raise RunError(f"TextVectorization '{layer.name}' uses {key}={value!r}; the edge runner implements {allowed!r}")
        vocabulary = [str(v) for v in layer.get_vocabulary()]
        params: dict[str, Any] = {"vocabulary": vocabulary, "standardize": standardize, "split": split}
        if mode == "int":
            # Index 0 pads, 1 is "[UNK]"; the runner maps tokens the same way and pads or truncates.
            params["sequence_length"] = int(config["output_sequence_length"])
            return HostStep(f"{layer_name(column)}__tokens", "token_ids", column, "int64", params["sequence_length"], params)
        idf = np.asarray(layer._lookup_layer.idf_weights_const, dtype="float32")  # noqa: SLF001
        # Words: 1 (words) or 2 (words and pairs); characters: the list of widths.
        params.update(idf=[float(v) for v in idf], ngrams=[int(n) for n in ngrams] if characters else int(ngrams or 1))
        suffix = "__chars" if characters else "__tfidf"
        return HostStep(f"{layer_name(column)}{suffix}", "tfidf", column, "float32", len(vocabulary), params)
    raise RunError(f"no edge implementation for layer '{layer.name}' ({type(layer).__name__})")
