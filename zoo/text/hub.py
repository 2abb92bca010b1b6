"""Any BERT-family keras-hub preset as a zoo text encoder: ``register_preset``.

A preset is a local directory in KerasHub format (``config.json``,
``model.weights.h5``, ``tokenizer.json`` and its vocabulary) or in Hugging Face
checkpoint format (``config.json``, ``model.safetensors``, ``vocab.txt``), or a
keras-hub preset name such as ``bert_tiny_en_uncased``, which downloads when
online. The encoder is built as the zoo's ``minilm`` entry is (WordPiece tokenizer
inside the model, masked mean pooling) and fine-tunes with the same recipe.
From the command line: ``autodl fit data.csv --target y --models hub:/path/to/preset``.

Example:

>>> name = register_preset("/models/bert_small_en")  # doctest: +SKIP
>>> name  # doctest: +SKIP
'hub_bert_small_en'
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from autodl.errors import UserError
from autodl.zoo.registry import Card, FineTuning, get, register
from autodl.zoo.text import minilm

PREFIX = "hub:"


def entry_name(preset: str) -> str:
    """The zoo name of a preset: ``hub_`` and its folder (or preset) name, made identifier-safe.

    >>> entry_name("/models/bert-small_en/")
    'hub_bert_small_en'
    """
    stem = Path(preset.rstrip("/")).name or preset
    return "hub_" + re.sub(r"[^A-Za-z0-9_]", "_", stem)


def register_preset(preset: str) -> str:
    """Registers ``preset`` (``hub:`` prefix optional) as a text entry; returns its zoo name. Idempotent."""
    preset = preset[len(PREFIX):] if preset.startswith(PREFIX) else preset
    name = entry_name(preset)
    local = Path(preset).expanduser()
    if ("/" in preset or preset.startswith(".")) and not local.is_dir():
        raise UserError(f"keras-hub preset folder '{preset}' does not exist; pass a preset directory or a preset name")
    location = str(local.resolve()) if local.is_dir() else preset
    try:
        existing = get(name)
    except KeyError:
        existing = None
    if existing is not None:
        return name

    def build(hp: Any, text: Any, stats: Any = None, *, name: str | None = None) -> Any:
        del hp
        return minilm.encoder(minilm.word_piece_length(stats), name=f"{name}_{entry}" if name else entry,
                              preset=location)(text)

    entry = name
    card = Card(
        name=name,
        task="text",
        title=f"keras-hub preset {preset}",
        summary="A BERT-family keras-hub backbone with its WordPiece tokenizer inside the model, mean-pooled.",
        reference=f"keras-hub preset {location}",
        good_for="Fine-tuning a pretrained encoder of your choice inside the search.",
        paper="Devlin, Chang, Lee, Toutanova. BERT. NAACL 2019. https://arxiv.org/abs/1810.04805",
        licence="that of the preset's weights (see its model card)",
        fine_tuning=FineTuning(bundled_weights=f"the keras-hub preset {location}"),
    )
    register(card, build, blocks=minilm.blocks)
    return name
