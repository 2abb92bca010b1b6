"""Search: HyperModels (what to build: tables, images), oracles (what to try next), tuners (how to run a trial)."""

from autodl.search.hypermodel import TabularHyperModel
from autodl.search.image_hypermodel import ImageHyperModel
from autodl.search.oracle import TUNERS, make_oracle
from autodl.search.tuner import AutoTuner, Budget, BudgetSpent, ImageTuner

__all__ = [
    "AutoTuner",
    "Budget",
    "BudgetSpent",
    "ImageHyperModel",
    "ImageTuner",
    "TUNERS",
    "TabularHyperModel",
    "make_oracle",
]
