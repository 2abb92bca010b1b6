"""autodl.zoo: registered Keras architectures with model cards."""

from autodl.zoo import layers  # registers the zoo's custom layers for .keras loading
from autodl.zoo.registry import Card, EncodedFeatures, ZooEntry, get, list_entries, register

__all__ = ["Card", "EncodedFeatures", "ZooEntry", "get", "layers", "list_entries", "register"]
