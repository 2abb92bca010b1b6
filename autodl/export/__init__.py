"""Deployable artifacts from a fitted run: TF Serving SavedModels and LiteRT edge bundles.

Example:

    from autodl.export import ExportOptions, export_run
    report = export_run("runs/adult-income", ExportOptions(quantize="int8"))

Names resolve lazily, so importing the package does not load TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "ExportOptions": "autodl.export.pipeline",
    "export_run": "autodl.export.pipeline",
    "export_image_run": "autodl.export.image",
    "load_frames": "autodl.export.pipeline",
    "export_serving": "autodl.export.serving",
    "serving_inputs": "autodl.export.serving",
    "split_for_edge": "autodl.export.graph",
    "EdgeGraph": "autodl.export.graph",
    "HostStep": "autodl.export.graph",
    "convert": "autodl.export.tflite",
    "write_bundle": "autodl.export.tflite",
    "compress": "autodl.export.compress",
    "CompressionUnsupported": "autodl.export.compress",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'autodl.export' has no attribute {name!r}")
