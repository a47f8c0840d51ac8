"""What a ledger call can refuse with, besides the bug IllegalTransition (in `states`).

RuntimeError
  StaleTransition    the job was not in the state the caller expected
    LeaseLost        ...because another host took the job over
  BudgetSpent        a budgeted submit intent found the budget used up
  LedgerUnavailable  the database cannot be reached
"""

from __future__ import annotations


class StaleTransition(RuntimeError):
    """The job was no longer in the state the caller expected: someone else moved it."""


class LeaseLost(StaleTransition):
    """The caller no longer holds the job's claim: another host took it over. Leave the job."""


class BudgetSpent(RuntimeError):
    """A submit intent was refused because the rule's budget since the given time is used up;
    nothing was committed."""


class LedgerUnavailable(RuntimeError):
    """The ledger's database cannot be reached (and did not come back in time)."""
