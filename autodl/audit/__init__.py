"""Fairness: audits computed by Fairlearn, fairness-constrained selection and mitigation.

Example:

>>> import numpy as np, pandas as pd
>>> y = np.array([1, 0, 1, 0] * 20); pred = np.array([1, 0, 0, 0] * 20)
>>> groups = pd.DataFrame({"sex": ["f", "f", "m", "m"] * 20})
>>> report = audit_classification(y, pred, groups, positive=1, n_bootstrap=0)
>>> round(report["columns"]["sex"]["headline"]["demographic_parity_difference"]["value"], 2)
0.5
>>> parse_constraint("demographic_parity_difference<=0.05").satisfied(0.5)
False
"""

from autodl.audit.audit import audit_classification, audit_regression, proxy_associations
from autodl.audit.constraint import FairnessConstraint, parse_constraint
from autodl.audit.mitigation import GroupThresholds, KerasBinaryClassifier, fit_reductions, fit_thresholds
from autodl.audit.policy import DEFAULT_RULES, Rule, evaluate_policy
from autodl.audit.selection import Selection, select_under_constraint

__all__ = [
    "audit_classification", "audit_regression", "proxy_associations", "Rule", "DEFAULT_RULES", "evaluate_policy",
    "FairnessConstraint", "parse_constraint", "Selection", "select_under_constraint", "GroupThresholds",
    "KerasBinaryClassifier", "fit_thresholds", "fit_reductions",
]
