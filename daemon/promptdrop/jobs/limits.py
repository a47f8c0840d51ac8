"""The engine's daily limits: tasks (`daily_budget`) and credits (`daily_credits`) left today,
the price of a job, whether it may go, and what to tell its prompt file when it may not.

The arithmetic is pure (`jobs.budget`, `jobs.credits`) and the texts are in `jobs.notes`; this
mixin only reads the ledger's counts for the rule and the day by the engine's clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from promptdrop.config.prices import Prices
from promptdrop.jobs import budget, credits, notes
from promptdrop.jobs.credits import Room, Verdict
from promptdrop.ledger import Budget, Job, LedgerBase
from promptdrop.spec import RuleConfig


class Limits:
    """The daily limits of the rules in force, as the engine's core uses them."""

    rules: dict[str, RuleConfig]
    prices: Prices  # the rules file's [prices], by canonical model id
    ledger: LedgerBase
    _clock: Callable[[], float]

    def budget_left(self, rule_name: str | None) -> int | None:
        """Submissions the rule's daily budget still allows today; None when it has none.

        A day runs from local midnight by the engine's clock. Counted: every committed intent
        of the day, less those the API proved created nothing (refused, rate limited, an
        outage answer), by every host sharing the ledger.
        """
        rule = self.rules.get(rule_name or "")
        if rule is None or rule.daily_budget is None:
            return None
        since = budget.day_start(self._clock())
        return budget.budget_left(rule.daily_budget, self.ledger.spent_since(since, rule.name))

    def credits_spent(self, rule_name: str | None) -> float | None:
        """Credits the rule's paid submissions of today cost (each priced by its request's
        model and resolution); None when the rule has no daily_credits. A task whose price
        is gone from [prices] since it was sent counts nothing."""
        rule = self.rules.get(rule_name or "")
        if rule is None or rule.daily_credits is None:
            return None
        since = budget.day_start(self._clock())
        return self.ledger.credits_since(since, rule.name, self._spent_price)

    def credits_left(self, rule_name: str | None) -> float | None:
        """Credits the rule's daily_credits still allows today; None when it has none."""
        rule = self.rules.get(rule_name or "")
        spent = self.credits_spent(rule_name)
        if rule is None or spent is None:
            return None
        return credits.credits_left(rule.daily_credits, spent)

    def room(self, rule_name: str | None) -> Room:
        """What the rule still allows today: tasks and credits."""
        rule = self.rules.get(rule_name or "")
        limit = rule.daily_credits if rule is not None else None
        return Room(self.budget_left(rule_name), limit, self.credits_left(rule_name))

    def price_of(self, job: Job) -> float | None:
        """Credits one task of `job` costs by the [prices] in force; None: no price."""
        return credits.request_price(self.prices, job.request)

    def _spent_price(self, request: Mapping[str, Any]) -> float:
        return credits.request_price(self.prices, request) or 0.0

    def verdict(self, job: Job) -> Verdict:
        """Whether `job` may be sent now, by its rule's daily budget and credits."""
        return self.room(job.rule).verdict(self.price_of(job))

    def _budget_of(self, rule_name: str | None, job: Job | None = None) -> Budget | None:
        """The caps checked again inside the commit of `job`'s intent (None: no caps)."""
        rule = self.rules.get(rule_name or "")
        if rule is None or (rule.daily_budget is None and rule.daily_credits is None):
            return None
        since = budget.day_start(self._clock())
        if rule.daily_credits is None:
            return Budget(rule.name, since, rule.daily_budget)
        price = self.price_of(job) if job is not None else None
        return Budget(
            rule.name,
            since,
            rule.daily_budget,
            credits=rule.daily_credits,
            # Never reached unpriced (the verdict holds such a job); infinite just in case.
            price=float("inf") if price is None else price,
            price_of=self._spent_price,
        )

    def _hold(self, job: Job) -> credits.Hold:
        """Why `job` may not be sent now, with what its note and detail say."""
        rule = self.rules.get(job.rule or "")
        room = self.room(job.rule)
        price = self.price_of(job)
        model = str(job.request.get("model"))
        res = credits.priced_resolution(model, credits.request_resolution(job.request))
        limit = rule.daily_budget if rule is not None else None
        return credits.Hold(room.verdict(price), room, price, model, res, limit)

    def _waiting_text(self, job: Job, _source: Path) -> str:
        when = datetime.fromtimestamp(budget.next_day(self._clock()))
        return notes.held_text(self._hold(job), when)
