"""After the search: refit the best configuration, or ensemble the top trials."""

from autodl.train.ensemble import average_models, greedy_ensemble, informative_members
from autodl.train.refit import refit

__all__ = ["average_models", "greedy_ensemble", "informative_members", "refit"]
