"""The audit policy: a threshold per fairness metric, each marked pass / warn / fail.

Defaults follow common practice: the demographic-parity ratio at least 0.8 (the
"four-fifths rule" of US employment guidance) and an equalized-odds difference
of at most 0.1. A value inside the warning band passes the rule but is worth a
reviewer's look; a breach whose bootstrap 95% interval still reaches the
threshold (small groups, noisy estimates) is a warning rather than a failure.

Example:

>>> evaluate_policy({"demographic_parity_ratio": 0.85, "equalized_odds_difference": 0.02})["verdict"]
'warn'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class Rule:
    """``metric`` must be ``>=`` (or ``<=``) ``threshold``; within ``warn`` of it is a warning."""

    metric: str
    op: str  # ">=" or "<="
    threshold: float
    warn: float

    def status(self, value: float, ci95: Sequence[float] | None = None) -> str:
        """A breach whose 95% interval still reaches the threshold is a warning, not a failure."""
        if value != value:  # NaN: not computable (e.g. a group with no positives)
            return "warn"
        if self.op == ">=":
            breach, band, certain = value < self.threshold, value < self.warn, ci95 is None or ci95[1] < self.threshold
        else:
            breach, band, certain = value > self.threshold, value > self.warn, ci95 is None or ci95[0] > self.threshold
        if breach:
            return "fail" if certain else "warn"
        return "warn" if band else "pass"


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("demographic_parity_ratio", ">=", 0.8, 0.9),
    Rule("equalized_odds_difference", "<=", 0.1, 0.05),
)


def evaluate_policy(
    values: dict[str, float], rules: Sequence[Rule] = DEFAULT_RULES, ci95: dict[str, Sequence[float] | None] | None = None
) -> dict[str, Any]:
    """Each rule's status on ``values`` (with their bootstrap intervals, if any) and the overall verdict (the worst)."""
    ci95 = ci95 or {}
    checks = [
        {**asdict(rule), "value": values[rule.metric], "ci95": ci95.get(rule.metric),
         "status": rule.status(values[rule.metric], ci95.get(rule.metric))}
        for rule in rules
        if rule.metric in values
    ]
    order = {"pass": 0, "warn": 1, "fail": 2}
    verdict = max((c["status"] for c in checks), key=order.__getitem__, default="pass")
    return {"checks": checks, "verdict": verdict}
