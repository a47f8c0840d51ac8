"""Daily credit limits as pure arithmetic: what one task costs, what is left, whether it may go.

A task's price is read from the rules file's `[prices]` (`config.prices`): its canonical model,
then its resolution (the model's default when the request names none). The ledger sums the
prices of the day's paid submissions; the engine asks `verdict` before sending each task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from promptdrop.capabilities import row_of
from promptdrop.jobs.budget import has_room
from promptdrop.ledger.records import CREDIT_SLACK as _SLACK


def job_price(prices: Mapping[str, Any], model: str | None, resolution: str | None) -> float | None:
    """Credits one task of `model` at `resolution` costs; None when `prices` has no price.

    `model` may be an alias; no `resolution` means the model's default. A model without
    resolutions has one number for a price, whatever resolution is asked.
    """
    try:
        row = row_of(model)
    except KeyError:
        return None
    price = prices.get(row.id)
    if price is None:
        return None
    if not row.resolutions:
        return float(price) if isinstance(price, int | float) else None
    if not isinstance(price, Mapping):
        return None
    found = price.get(resolution or row.default_resolution)
    return None if found is None else float(found)


def request_resolution(request: Mapping[str, Any]) -> str | None:
    """The resolution a job's stored request asks for; None: the model's default.

    Read defensively: requests stored before resolutions existed have none, and the
    resolution may be kept beside the model or only in the metadata sent to the API.
    """
    found = request.get("resolution")
    if found is None:
        metadata = request.get("metadata")
        found = metadata.get("resolution") if isinstance(metadata, Mapping) else None
    return found if isinstance(found, str) else None


def request_price(prices: Mapping[str, Any], request: Mapping[str, Any]) -> float | None:
    """The price of one task of a job's stored (canonical) request."""
    model = request.get("model")
    return job_price(prices, model if isinstance(model, str) else None, request_resolution(request))


def price_key(model: str | None, resolution: str | None) -> str:
    """How the missing price is written in `[prices]`, e.g. `"nano-banana-pro"... { "4K" = … }`."""
    try:
        row = row_of(model)
    except KeyError:
        return f'"{model}"'
    if not row.resolutions:
        return f'"{row.id}" = CREDITS'
    return f'"{row.id}" = {{ "{resolution or row.default_resolution}" = CREDITS }}'


def credits_left(limit: float | None, spent: float) -> float | None:
    """Credits a daily limit of `limit` still allows after `spent` today (None: no limit).

    Never below zero: a limit lowered under what was already spent today has no room.
    """
    if limit is None:
        return None
    return max(limit - spent, 0.0)


class Verdict(StrEnum):
    """Whether a task may be sent now, and if not, why (each has its own note)."""

    GO = "go"
    TASKS_SPENT = "tasks spent"  # daily_budget: no task left today
    CREDITS_SPENT = "credits spent"  # daily_credits: what is left today is less than the price
    TOO_DEAR = "too dear"  # the price is more than a whole day's daily_credits
    UNPRICED = "unpriced"  # daily_credits is set and [prices] has no price for the task


def verdict(
    tasks_left: int | None,
    credit_limit: float | None,
    credits_remaining: float | None,
    price: float | None,
) -> Verdict:
    """Whether a task of `price` may go, given the rule's tasks left today, its daily credit
    limit and the credits left today (None: no such limit).

    A task goes only when both limits have room: never unpriced while credits are counted
    (that could overspend), never over what is left. A task no day could pay for, or one
    without a price, is told apart, since waiting for tomorrow does not help it.
    """
    if credit_limit is not None:
        if price is None:
            return Verdict.UNPRICED
        if price > credit_limit + _SLACK:
            return Verdict.TOO_DEAR
    if not has_room(tasks_left):
        return Verdict.TASKS_SPENT
    if credits_remaining is not None and price is not None and price > credits_remaining + _SLACK:
        return Verdict.CREDITS_SPENT
    return Verdict.GO


def fits(limit: float, spent: float, price: float) -> bool:
    """Whether a task of `price` fits under `limit` after `spent` (the check in the commit)."""
    return spent + price <= limit + _SLACK


@dataclass(frozen=True)
class Room:
    """What a rule still allows today: tasks (daily_budget) and credits (daily_credits), each
    None when the rule has no such limit; `credit_limit` is the daily_credits itself."""

    tasks: int | None = None
    credit_limit: float | None = None
    credits: float | None = None

    def verdict(self, price: float | None) -> Verdict:
        """Whether a task of `price` may go now (see `verdict`)."""
        return verdict(self.tasks, self.credit_limit, self.credits, price)

    def after(self, price: float | None) -> Room:
        """The room left once a task of `price` was sent."""
        return Room(
            None if self.tasks is None else max(self.tasks - 1, 0),
            self.credit_limit,
            None if self.credits is None else max(self.credits - (price or 0.0), 0.0),
        )


@dataclass(frozen=True)
class Hold:
    """Everything a held job's note and ledger detail say: the verdict and what it came from.

    `resolution` is the one priced (the model's default when the request names none);
    `daily_budget` the rule's task limit."""

    verdict: Verdict
    room: Room
    price: float | None
    model: str
    resolution: str | None
    daily_budget: int | None

    @property
    def key(self) -> str:
        """The missing or wrong price as it is written under `[prices]`."""
        return price_key(self.model, self.resolution)


def priced_resolution(model: str | None, resolution: str | None) -> str | None:
    """The resolution a task is priced at: the one asked, else the model's default (None for
    a model without resolutions, or one that is not known)."""
    try:
        row = row_of(model)
    except KeyError:
        return resolution
    if not row.resolutions:
        return None
    return resolution or row.default_resolution
