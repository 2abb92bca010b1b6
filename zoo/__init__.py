"""autodl.zoo: registered Keras architectures with model cards and pretrained weights."""

from autodl.zoo import layers  # registers the zoo's custom layers for .keras loading
from autodl.zoo.registry import Card, EncodedFeatures, FineTuning, TextStats, ZooEntry, get, list_entries, register
from autodl.zoo.weights import Weights, cache_dir, fetch, load_pretrained

__all__ = [
    "Card",
    "EncodedFeatures",
    "FineTuning",
    "TextStats",
    "Weights",
    "ZooEntry",
    "cache_dir",
    "fetch",
    "get",
    "layers",
    "list_entries",
    "load_pretrained",
    "register",
]
