"""The data layer: read a table (or an image dataset), infer its schema and task, encode the target, split the rows.

Example:

>>> import pandas as pd
>>> from autodl.data import infer_schema, prepare_target, train_valid_test_split
>>> df = pd.DataFrame({"x": [0.5, 1.5, 2.5, 3.5] * 10, "y": ["a", "b"] * 20})
>>> schema = infer_schema(df, "y")
>>> y = prepare_target(df["y"], schema)
>>> split = train_valid_test_split(y, stratify=schema.is_classification, seed=0)
>>> schema.task, len(split.train) + len(split.valid) + len(split.test)
('binary', 40)

Nothing here imports tensorflow or keras at import time, so reading and
inspecting data stays fast; the image pipeline (``autodl.data.images``)
imports tensorflow inside the functions that need it.
"""

from autodl.data.images import (
    ImageDataset,
    ImageProbe,
    PipelineStats,
    image_attributes,
    image_paths,
    is_image_data,
    make_image_dataset,
    pipeline_throughput,
    probe_images,
    read_image_csv,
    read_image_folder,
    read_images,
)
from autodl.data.io import file_fingerprint, read_table
from autodl.data.schema import ColumnSpec, Schema, infer_schema, infer_task, prepare_target, schema_table
from autodl.data.split import Split, kfold_indices, train_valid_test_split

__all__ = [
    "ColumnSpec",
    "ImageDataset",
    "ImageProbe",
    "PipelineStats",
    "Schema",
    "Split",
    "file_fingerprint",
    "infer_schema",
    "image_attributes",
    "image_paths",
    "is_image_data",
    "infer_task",
    "kfold_indices",
    "make_image_dataset",
    "pipeline_throughput",
    "prepare_target",
    "probe_images",
    "read_image_csv",
    "read_image_folder",
    "read_images",
    "read_table",
    "schema_table",
    "train_valid_test_split",
]
