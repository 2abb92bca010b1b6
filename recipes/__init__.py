"""Training recipes: plain Keras code a user can read and call directly.

``tabular`` trains the tabular zoo; ``finetune`` fine-tunes image backbones
(``classifier``, ``fine_tune``, ``train_from_scratch``). The fine-tuning names are
re-exported here lazily, so importing ``autodl.recipes.tabular`` does not load them.
"""

from typing import Any

_FINETUNE = (
    "FineTuneConfig",
    "FineTuneResult",
    "PhaseResult",
    "SparseSmoothedCrossentropy",
    "augmentation",
    "classifier",
    "fine_tune",
    "freeze_all_but_top",
    "recalibrate_batchnorm",
    "train_from_scratch",
)

__all__ = list(_FINETUNE)


def __getattr__(name: str) -> Any:
    if name in _FINETUNE:
        from autodl.recipes import finetune

        return getattr(finetune, name)
    raise AttributeError(f"module 'autodl.recipes' has no attribute {name!r}")
