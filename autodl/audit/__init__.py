"""Fairness audits of a model's predictions, computed by Fairlearn (issue 4, in progress).

Example:

>>> import numpy as np, pandas as pd
>>> y = np.array([1, 0, 1, 0] * 20); pred = np.array([1, 0, 0, 0] * 20)
>>> groups = pd.DataFrame({"sex": ["f", "f", "m", "m"] * 20})
>>> report = audit_classification(y, pred, groups, positive=1, n_bootstrap=0)
>>> round(report["columns"]["sex"]["headline"]["demographic_parity_difference"]["value"], 2)
0.5
"""

from autodl.audit.audit import audit_classification, audit_regression, proxy_associations
from autodl.audit.policy import DEFAULT_RULES, Rule, evaluate_policy

__all__ = ["audit_classification", "audit_regression", "proxy_associations", "Rule", "DEFAULT_RULES", "evaluate_policy"]
