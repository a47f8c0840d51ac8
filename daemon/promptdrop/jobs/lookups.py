"""Settling a lost answer by the submission's `client_business_id`, as pure decisions.

Every submission attempt carries a fresh business id, recorded with the intent before the
POST leaves. When its answer is lost, the task is looked up by that id:

- found: the task exists; the job adopts it and polls it (nothing more is paid);
- not found: looked up again, `misses` times spread over at least `spread` seconds (an API may
  show a new task late); still not found at an API proven to find tasks by business id (a task
  promptdrop created and then found by its id, recorded per API address and proven again after
  `proof_ttl`), it was not created and the job is sent again with a new id;
- still not found at an API not proven so (one that ignores the field): the job stays
  ambiguous, with its note, as before business ids (a person decides with `promptdrop retry`).

The docs state no uniqueness rule for business ids, so a found task counts only when it echoes
our id (or echoes none), and promptdrop's ids are random per attempt.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Settled(StrEnum):
    FOUND = "found"  # the task exists: adopt it
    LOOK_AGAIN = "look again"  # not found yet; ask again later
    NOT_CREATED = "not created"  # not found, enough times, at a proven API: send again
    UNPROVEN = "unproven"  # not found, and this API has not shown it finds tasks by id


@dataclass(frozen=True)
class LookupPolicy:
    misses: int = 3  # "not found" answers needed before a job counts as not created...
    spread: float = 60.0  # ...spread over at least this many seconds from the first
    proof_ttl: float = 86400.0  # a proof older than this is made again from new traffic
    proof_delay: float = 5.0  # a new task is looked up by its id this long after it was made
    proof_retry: float = 600.0  # after a failed proof, wait this long before trying again


def policy_from(environ: Mapping[str, str]) -> LookupPolicy:
    """The policy, with the test suite's shorter waits when it sets them: PROMPTDROP_LOOKUP_SPREAD
    (seconds over which "not found" is confirmed) and PROMPTDROP_PROOF_DELAY. Bad values are
    ignored; nobody should need these outside tests."""
    policy = LookupPolicy()
    spread = _seconds(environ.get("PROMPTDROP_LOOKUP_SPREAD"))
    delay = _seconds(environ.get("PROMPTDROP_PROOF_DELAY"))
    if spread is not None:
        policy = dataclasses.replace(policy, spread=spread)
    if delay is not None:
        policy = dataclasses.replace(policy, proof_delay=delay)
    return policy


def _seconds(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if 0 <= value < 3600 else None


def new_business_id() -> str:
    """A fresh id for one submission attempt: random, nothing secret or personal in it."""
    return "pd-" + secrets.token_hex(12)


def is_proven(proven_at: float | None, now: float, policy: LookupPolicy) -> bool:
    """Whether lookups by business id count as proven at an API last proven at `proven_at`."""
    return proven_at is not None and 0 <= now - proven_at <= policy.proof_ttl


def needs_proof(
    proven_at: float | None, last_attempt: float | None, now: float, policy: LookupPolicy
) -> bool:
    """Whether a task just created should be looked up by its id to prove (or re-prove) that
    this API finds tasks that way: no fresh proof, and no attempt in the last `proof_retry`."""
    if is_proven(proven_at, now, policy) and now - (proven_at or now) < policy.proof_ttl / 2:
        return False
    return last_attempt is None or now - last_attempt >= policy.proof_retry


def after_lookup(
    found: bool,
    proven: bool,
    misses_before: int,
    first_miss_at: float | None,
    now: float,
    policy: LookupPolicy,
) -> Settled:
    """What one lookup's answer means for a job whose submission answer was lost.

    `misses_before`: "not found" answers for this attempt before this one, the first of them
    at `first_miss_at`.
    """
    if found:
        return Settled.FOUND
    first = now if first_miss_at is None else first_miss_at
    if misses_before + 1 >= policy.misses and now - first >= policy.spread:
        return Settled.NOT_CREATED if proven else Settled.UNPROVEN
    return Settled.LOOK_AGAIN


def next_lookup_wait(misses: int, first_miss_at: float, now: float, policy: LookupPolicy) -> float:
    """Seconds until the next lookup after `misses` "not found" answers (the first at
    `first_miss_at`): evenly spread so the last one falls `spread` seconds after the first."""
    steps = max(policy.misses - 1, 1)
    due = first_miss_at + policy.spread * min(misses, steps) / steps
    return max(due - now, 0.5)


def lookup_retry_wait(failures: int) -> float:
    """Seconds before asking again after a lookup that got no answer (an outage, a 429)."""
    return float(min(5.0 * 2.0**failures, 60.0))
