"""The zoo registry: architectures, their model cards, and lookup.

An entry is a ``Card`` plus a builder; what the builder takes depends on the
card's ``task``:

- ``"tabular"``: ``build(hp, features) -> keras tensor``. The builder receives
  already-encoded features (``EncodedFeatures``) and returns the representation
  that the task head sits on; it knows nothing of the task, the optimizer, or
  the data.
- ``"image"``: ``build(input_shape=(H, W, 3)) -> keras.Model``, the backbone:
  raw RGB pixels in ``[0, 255]`` (float32, channels last) in, pooled features
  ``(batch, d)`` out, with its preprocessing inside the model. Image entries
  also have ``blocks(model) -> list[list[Layer]]``, the backbone's layers in
  architectural blocks from the input up (top block last), which the
  fine-tuning recipe unfreezes from the top; and, when pretrained,
  ``card.pretrained`` (see ``autodl.zoo.weights``).
- ``"text"``: ``build(hp, text, stats) -> keras tensor``: one text column's raw
  strings ``(batch,)`` (``tf.string``) in, its representation ``(batch, d)`` out,
  with the tokenizer inside the model; ``stats`` (``TextStats``) is what the
  training split taught (vocabularies, IDF weights, sequence length).

The search only chooses among registered entries, so adding an architecture is
one new module and one ``register`` call.

Example:

>>> from autodl.zoo import list_entries
>>> sorted(e.card.name for e in list_entries(task="tabular"))
['ft_transformer', 'linear', 'mlp', 'mlp_plr', 'resnet']
>>> [e.card.name for e in list_entries(task="image")][:2]
['mobilenet_v3_small', 'mobilenet_v3_large']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from autodl.zoo.weights import Weights

# The tasks the CLI knows; a family for another task only has to set card.task.
TASKS = ("tabular", "image", "text")


@dataclass(frozen=True)
class EncodedFeatures:
    """Model-ready tensors produced by autodl's preprocessing layers.

    Attributes:
        numeric: ``(batch, n_numeric)`` float32, imputed and scaled, no NaN; or
            ``None`` when the table has no numeric features.
        categorical: one ``(batch,)`` int tensor per categorical column, with
            values in ``[0, cardinality)`` (index 0 is the out-of-vocabulary bucket).
        cardinalities: the cardinality of each categorical tensor, same order.
        text: ``(batch, d)`` float32: the text columns' representations from a text
            entry (TF-IDF n-grams, a CNN, a BiLSTM, a Transformer encoder), or ``None``.
    """

    numeric: Any | None
    categorical: tuple[Any, ...] = ()
    cardinalities: tuple[int, ...] = ()
    text: Any | None = None


@dataclass(frozen=True)
class TextStats:
    """What one text column's training values teach its encoders.

    Texts are standardized by ``autodl.zoo.text._common.split_punctuation`` (lower
    case, punctuation as spaces, split on whitespace), which the edge runner
    reproduces in plain Python.

    Attributes:
        tokens: word vocabulary for sequence models, most frequent first.
        ngrams: word and word-pair vocabulary for bag-of-n-grams models, most frequent first.
        idf: the IDF weight of each of ``ngrams`` (``log(1 + n / (1 + df))``, as Keras computes it).
        sequence_length: tokens a sequence model reads per text; longer texts are truncated.
        n_truncated: training texts longer than ``sequence_length`` (reported, not an error).
        char_ngrams: character 2- to 5-gram vocabulary (texts standardized by
            ``collapse_whitespace``; characters joined by a space, as Keras' ``TextVectorization``
            joins n-grams), most frequent first.
        char_idf: the IDF weight of each of ``char_ngrams``.
    """

    tokens: list[str]
    ngrams: list[str]
    idf: list[float]
    sequence_length: int
    n_truncated: int = 0
    char_ngrams: list[str] = field(default_factory=list)
    char_idf: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class FineTuning:
    """How a pretrained text encoder is fine-tuned inside the search (BERT's recipe).

    Attributes:
        learning_rate: ``(low, high, default)`` of the searched peak rate: pretrained
            weights need rates 10-100x below a fresh model's.
        epochs: the most epochs a trial trains; the rate decays to 0 over them.
        warmup_fraction: share of the steps over which the rate rises from 0.
        bundled_weights: where the weights come from when they are not a downloadable
            ``Weights`` file, e.g. a pip package.
    """

    learning_rate: tuple[float, float, float] = (2e-5, 1e-4, 5e-5)
    epochs: int = 3
    warmup_fraction: float = 0.1
    bundled_weights: str = ""


@dataclass(frozen=True)
class Card:
    """A model card: what the architecture is, where it comes from, when to use it.

    Attributes:
        name, task, title, summary, good_for: what the entry is and when to pick it.
        reference: where the architecture (or its implementation) comes from.
        hyperparameters: the searched hyperparameters, name -> meaning.
        paper: the paper that introduced the architecture (citation and link).
        licence: the licence of the model as shipped; for pretrained entries,
            that of the weights (also on ``pretrained.licence``).
        input_shape: the default (pretraining) input shape, e.g. ``(224, 224, 3)``.
        pretrained: the published weights, or ``None`` (trained from scratch).
        reference_accuracy: the published quality of the pretrained model,
            e.g. ``"ImageNet top-1 68.1% (Keras)"``.
        parameters: number of weights at ``input_shape`` (independent of it for convnets).
        flops: floating-point operations of one forward pass at ``input_shape``
            (one multiply-add counts as two); ``flops_note`` says how it was obtained.
        fine_tuning: for a pretrained text encoder, the rates and epochs it fine-tunes with.

    Example:

    >>> Card("m", "image", "M", "a model", "ref", "tests").to_dict()["pretrained"] is None
    True
    """

    name: str
    task: str
    title: str
    summary: str
    reference: str
    good_for: str
    hyperparameters: dict[str, str] = field(default_factory=dict)
    paper: str = ""
    licence: str = ""
    input_shape: tuple[int, ...] | None = None
    pretrained: Weights | None = None
    reference_accuracy: str = ""
    parameters: int | None = None
    flops: int | None = None
    flops_note: str = ""
    fine_tuning: FineTuning | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "title": self.title,
            "summary": self.summary,
            "reference": self.reference,
            "good_for": self.good_for,
            "hyperparameters": dict(self.hyperparameters),
            "paper": self.paper,
            "licence": self.licence,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "pretrained": None if self.pretrained is None else self.pretrained.to_dict(),
            "reference_accuracy": self.reference_accuracy,
            "parameters": self.parameters,
            "flops": self.flops,
            "flops_note": self.flops_note,
        }


Builder = Callable[..., Any]
"""``build(hp, features)`` for tabular entries, ``build(input_shape)`` for image entries."""

Blocks = Callable[[Any], list[list[Any]]]
"""``blocks(model)``: the model's layers grouped in blocks, input side first, top block last."""


@dataclass(frozen=True)
class ZooEntry:
    """A registered architecture: its card, its builder, and (image entries) its blocks.

    Example:

    >>> from autodl.zoo import get
    >>> get("mlp").task
    'tabular'
    """

    card: Card
    build: Builder
    blocks: Blocks | None = None
    # ``unavailable()`` says why the entry cannot be built here (an optional package is
    # missing), or returns None; entries without it are always available.
    unavailable: Callable[[], str | None] | None = None
    # Tabular entries: ``head_regularizer(hp)`` penalizes the task head's weights. A linear
    # model's only weights are the head's, and its strength is what it must regularize.
    head_regularizer: Callable[[Any], Any] | None = None
    # Tabular entries: searched when ``--models`` does not name the architectures.
    default_search: bool = True

    def unavailable_reason(self) -> str | None:
        return None if self.unavailable is None else self.unavailable()

    @property
    def task(self) -> str:
        return self.card.task


_ENTRIES: dict[str, ZooEntry] = {}


def register(
    card: Card,
    build: Builder,
    *,
    blocks: Blocks | None = None,
    unavailable: Callable[[], str | None] | None = None,
    head_regularizer: Callable[[Any], Any] | None = None,
    default_search: bool = True,
) -> ZooEntry:
    """Adds an architecture to the zoo; names are unique."""
    if card.name in _ENTRIES and _ENTRIES[card.name].build is not build:
        raise ValueError(f"zoo entry {card.name!r} is registered twice")
    entry = ZooEntry(card=card, build=build, blocks=blocks, unavailable=unavailable,
                     head_regularizer=head_regularizer, default_search=default_search)
    _ENTRIES[card.name] = entry
    return entry


def get(name: str) -> ZooEntry:
    """Returns the entry called ``name``; raises ``KeyError`` listing the known names."""
    _load_builtin()
    try:
        return _ENTRIES[name]
    except KeyError:
        raise KeyError(f"unknown zoo entry {name!r}; known: {', '.join(sorted(_ENTRIES))}") from None


def list_entries(task: str | None = None) -> list[ZooEntry]:
    """All entries, or those for one task (``"tabular"``, ``"image"``), in registration order."""
    _load_builtin()
    return [e for e in _ENTRIES.values() if task is None or e.card.task == task]


def _load_builtin() -> None:
    # Importing the family packages runs their register() calls.
    from autodl.zoo import tabular  # noqa: F401
    from autodl.zoo import text  # noqa: F401
    from autodl.zoo import vision  # noqa: F401
