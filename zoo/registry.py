"""The zoo registry: architectures, their model cards, and lookup.

A zoo entry is a builder ``build(hp, features) -> keras tensor`` plus a
``Card``. The builder receives already-encoded features (``EncodedFeatures``)
and returns the representation that the task head sits on; it knows nothing of
the task, the optimizer, or the data. The search only chooses among registered
entries, so adding an architecture is one new module and one ``register`` call.

Example:

>>> from autodl.zoo import list_entries
>>> sorted(e.card.name for e in list_entries(task="tabular"))
['ft_transformer', 'mlp', 'mlp_plr', 'resnet']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class EncodedFeatures:
    """Model-ready tensors produced by autodl's preprocessing layers.

    Attributes:
        numeric: ``(batch, n_numeric)`` float32, imputed and scaled, no NaN; or
            ``None`` when the table has no numeric features.
        categorical: one ``(batch,)`` int tensor per categorical column, with
            values in ``[0, cardinality)`` (index 0 is the out-of-vocabulary bucket).
        cardinalities: the cardinality of each categorical tensor, same order.
        text: ``(batch, n_terms)`` float32 TF-IDF features, or ``None``.
    """

    numeric: Any | None
    categorical: tuple[Any, ...] = ()
    cardinalities: tuple[int, ...] = ()
    text: Any | None = None


@dataclass(frozen=True)
class Card:
    """A model card: what the architecture is, where it comes from, when to use it."""

    name: str
    task: str
    title: str
    summary: str
    reference: str
    good_for: str
    hyperparameters: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "title": self.title,
            "summary": self.summary,
            "reference": self.reference,
            "good_for": self.good_for,
            "hyperparameters": dict(self.hyperparameters),
        }


Builder = Callable[[Any, EncodedFeatures], Any]


@dataclass(frozen=True)
class ZooEntry:
    card: Card
    build: Builder


_ENTRIES: dict[str, ZooEntry] = {}


def register(card: Card, build: Builder) -> ZooEntry:
    """Adds an architecture to the zoo; names are unique."""
    if card.name in _ENTRIES and _ENTRIES[card.name].build is not build:
        raise ValueError(f"zoo entry {card.name!r} is registered twice")
    entry = ZooEntry(card=card, build=build)
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
    """All entries, or those for one task (``"tabular"``), in registration order."""
    _load_builtin()
    return [e for e in _ENTRIES.values() if task is None or e.card.task == task]


def _load_builtin() -> None:
    # Importing the family packages runs their register() calls.
    from autodl.zoo import tabular  # noqa: F401
