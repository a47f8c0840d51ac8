"""The records a ledger hands out: a job, a prompt file, a written file, a budget, a repair.

Plain frozen data; the ledger fills them from its rows (paths already decoded for this host).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from promptdrop.ledger.states import JobState


@dataclass(frozen=True)
class Job:
    id: int
    request_hash: str
    image_index: int
    rule: str | None
    state: JobState
    generation: int
    request: dict[str, Any]
    attempts: int
    task_id: str | None
    result_url: str | None
    expires_at: float | None
    image_sha256: str | None
    image_format: str | None
    error: str | None
    created_at: float
    updated_at: float
    # The client_business_id of the latest submission attempt (None: sent before promptdrop
    # gave submissions one, or never sent).
    business_id: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        return cls(
            id=row["id"],
            request_hash=row["request_hash"],
            image_index=row["image_index"],
            rule=row["rule"],
            state=JobState(row["state"]),
            generation=row["generation"] or 0,
            request=json.loads(row["request_json"]),
            attempts=row["attempts"] or 0,
            task_id=row["task_id"],
            result_url=row["result_url"],
            expires_at=row["expires_at"],
            image_sha256=row["image_sha256"],
            image_format=row["image_format"],
            error=row["error"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            business_id=row.get("business_id"),
        )


@dataclass(frozen=True)
class Source:
    path: str
    rule: str | None
    status: str
    content_sha256: str | None
    request_hash: str | None
    image_count: int | None
    error: str | None


@dataclass(frozen=True)
class Output:
    id: int
    path: str
    job_id: int
    generation: int
    source_path: str | None
    sha256: str
    format: str | None
    superseded: bool


@dataclass(frozen=True)
class Recovery:
    """What opening the ledger after a stop or a crash found and repaired."""

    ambiguous: int  # caught between the submit intent and the answer
    uploads_restarted: int
    downloads_restarted: int
    running: int  # tasks to poll again

    def __str__(self) -> str:
        return (
            f"{self.running} running task(s) to resume, {self.downloads_restarted} download(s) "
            f"to redo, {self.uploads_restarted} upload(s) to redo, {self.ambiguous} submission(s) "
            "whose answer was lost (marked ambiguous, to be looked up, never resent blindly)"
        )


# Sums of prices such as 0.1 + 0.2 must not refuse a task that fits exactly.
CREDIT_SLACK = 1e-9


@dataclass(frozen=True)
class Budget:
    """A cap checked inside the transaction that commits a submit intent: at most `limit`
    paid submissions (see `LedgerBase.spent_since`) of `rule` since `since`, and, with
    `credits`, at most that many credits: the day's paid submissions priced by `price_of`
    (see `LedgerBase.credits_since`) plus this one's `price`. None: no such cap."""

    rule: str
    since: float
    limit: int | None
    credits: float | None = None
    price: float = 0.0
    price_of: Callable[[Mapping[str, Any]], float] | None = None
