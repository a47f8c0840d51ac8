"""Whether a job may be submitted now, as a pure decision (beside `jobs.budget`'s arithmetic).

Two things hold a submission back before its budget is even looked at: a pause the user asked
for (`promptdrop pause [RULE]`, kept in the ledger) and the account pause after a refused key or
an empty quota (`jobs.pausing`). A held job stays where it is (pending), so it spends no budget;
it is sent once the decision says GO. Polls and downloads are never held.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from promptdrop.ledger.pauses import ALL_RULES


class Gate(StrEnum):
    GO = "go"
    RULE_PAUSED = "rule paused"  # `promptdrop pause RULE`
    ALL_PAUSED = "all paused"  # `promptdrop pause` without a rule
    ACCOUNT_PAUSED = "account paused"  # a refused key or an empty quota, until `account_until`


@dataclass(frozen=True)
class Decision:
    gate: Gate
    since: float | None = None  # when the user's pause began (RULE_PAUSED, ALL_PAUSED)

    @property
    def go(self) -> bool:
        return self.gate is Gate.GO


def may_submit(
    rule: str | None, pauses: Mapping[str, float], account_until: float | None, now: float
) -> Decision:
    """May a job of `rule` be submitted at `now`? `pauses` is the ledger's (rule or ALL_RULES →
    since), `account_until` the end of the account pause (None: none).

    The user's own pause of the rule wins over the pause of all rules, and both over the
    account pause: they last until `promptdrop resume`, the account pause only until its time.
    """
    if rule is not None and rule in pauses:
        return Decision(Gate.RULE_PAUSED, pauses[rule])
    if ALL_RULES in pauses:
        return Decision(Gate.ALL_PAUSED, pauses[ALL_RULES])
    if account_until is not None and now < account_until:
        return Decision(Gate.ACCOUNT_PAUSED)
    return Decision(Gate.GO)


def paused_rules(pauses: Mapping[str, float]) -> str:
    """The pauses in words for a log line or a status line: "drop, photos" or "all rules"."""
    if ALL_RULES in pauses:
        return "all rules"
    return ", ".join(sorted(pauses)) or "none"
