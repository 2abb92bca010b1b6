"""Search: HyperModel (what to build), oracles (what to try next), AutoTuner (how to run a trial)."""

from autodl.search.hypermodel import TabularHyperModel
from autodl.search.oracle import TUNERS, make_oracle
from autodl.search.tuner import AutoTuner, Budget, BudgetSpent

__all__ = ["AutoTuner", "Budget", "BudgetSpent", "TUNERS", "TabularHyperModel", "make_oracle"]
