"""The ledger on both backends: real SQLite files and a real throwaway PostgreSQL server.

Durability settings, migrations, guarded job transitions, crash recovery (including a SIGKILLed
process), sources, outputs, uploads, budgets, state dir; claims (leases) and take-over; the
shared ledger's host-independent paths and its behaviour when the database goes away.
Every test taking `ledger` or `make_ledger` runs once per backend.
"""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlite_utils import Database

import pgserver
from pgserver import PgServer, outage
from promptdrop.ledger import (
    ALLOWED,
    FINAL,
    LEDGER_NAME,
    Budget,
    BudgetSpent,
    IllegalTransition,
    Job,
    JobState,
    LeaseLost,
    Ledger,
    LedgerBase,
    LedgerUnavailable,
    LedgerUrlError,
    PathCodec,
    Recovery,
    StaleTransition,
    default_host_id,
    default_state_dir,
    open_ledger,
    pg_migrations,
)
from promptdrop.ledger.migrations import MIGRATIONS, migrate
from promptdrop.ledger.postgres import PostgresLedger

pg_server = pgserver.pg_server  # the fixtures, for this module's tests
pg_url = pgserver.pg_url

S = JobState
REQUEST: dict[str, Any] = {"model": "m", "prompt": "a red bicycle", "size": "1024x1024"}

# How to bring a fresh PENDING job into each state through allowed moves only.
PATH_TO: dict[JobState, list[JobState]] = {
    S.PENDING: [],
    S.WAITING: [S.WAITING],
    S.UPLOADING: [S.UPLOADING],
    S.SUBMITTING: [S.SUBMITTING],
    S.RUNNING: [S.SUBMITTING, S.RUNNING],
    S.DOWNLOADING: [S.SUBMITTING, S.RUNNING, S.DOWNLOADING],
    S.DONE: [S.SUBMITTING, S.RUNNING, S.DOWNLOADING, S.DONE],
    S.FAILED: [S.FAILED],
    S.AMBIGUOUS: [S.SUBMITTING, S.AMBIGUOUS],
}


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


MakeLedger = Callable[..., LedgerBase]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_ledger(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[MakeLedger]:
    """Opens ledgers on one store (one SQLite file, or one fresh PostgreSQL schema)."""
    url = str(request.getfixturevalue("pg_url")) if backend == "postgresql" else None
    opened: list[LedgerBase] = []

    def make(
        clock: Callable[[], float] = time.time, *, track: bool = True, **kwargs: Any
    ) -> LedgerBase:
        """`track=False`: the caller closes it (SQLite wants that done in the opening thread)."""
        led: LedgerBase
        if url is None:
            led = Ledger(tmp_path / LEDGER_NAME, clock=clock)
        else:
            led = PostgresLedger(url, clock=clock, **kwargs)
        if track:
            opened.append(led)
        return led

    yield make
    for led in opened:
        led.close()


@pytest.fixture
def ledger(make_ledger: MakeLedger, clock: FakeClock) -> LedgerBase:
    return make_ledger(clock)


def drive(led: LedgerBase, job: Job, target: JobState) -> Job:
    """Move `job` from PENDING to `target` along PATH_TO."""
    state = job.state
    for nxt in PATH_TO[target]:
        job = led.transition(job.id, state, nxt)
        state = nxt
    assert job.state is target
    return job


def raw_row(path: Path, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """One row read through a separate, plain connection: only committed data is visible."""
    conn = sqlite3.connect(str(path))
    try:
        row = conn.execute(sql, params).fetchone()
    finally:
        conn.close()
    assert row is not None
    return tuple(row)


def committed_row(led: LedgerBase, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """`raw_row` for either backend: a fresh connection of its own sees only committed data."""
    if isinstance(led, Ledger):
        return raw_row(led.path, sql, params)
    assert isinstance(led, PostgresLedger)
    with psycopg.connect(led.url) as conn:
        row = conn.execute(sql.replace("?", "%s"), params).fetchone()
    assert row is not None
    return tuple(row)


# Opening, durability, migrations --------------------------------------------------------------


def test_opening_creates_the_file_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / LEDGER_NAME
    with Ledger(path) as led:
        assert path.is_file()
        assert led.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert led.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert led.integrity_check() == "ok"
    # WAL is a property of the file: a plain connection opened later sees it too.
    assert raw_row(path, "PRAGMA journal_mode") == ("wal",)


def test_every_ledger_connection_gets_full_sync(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_NAME
    with Ledger(path) as first, Ledger(path) as second:
        for led in (first, second):
            assert led.db.execute("PRAGMA synchronous").fetchone()[0] == 2
            assert led.db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_open_in_a_state_dir_makes_a_private_folder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Ledger.open(state) as led:
        assert led.path == state / LEDGER_NAME
        assert led.path.is_file()
    assert stat.S_IMODE(state.stat().st_mode) & 0o077 == 0


def test_migrations_are_recorded_once_and_not_rerun_on_reopen(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    led = make_ledger(clock)
    job = led.ensure_job("h1", 0, REQUEST, "rule")
    sql = "SELECT name, applied_at FROM migrations ORDER BY name"
    first = led._rows(sql)
    sqlite_names = [name for name, _ in MIGRATIONS]
    pg_names = [name for name, _ in pg_migrations.MIGRATIONS]
    # One history in two dialects, plus what only a shared ledger needs.
    assert pg_names[: len(sqlite_names)] == sqlite_names
    assert [r["name"] for r in first] == (sqlite_names if isinstance(led, Ledger) else pg_names)
    led.close()

    again_led = make_ledger(clock)
    assert again_led._rows(sql) == first  # same rows, same timestamps: nothing re-applied
    if isinstance(again_led, Ledger):
        assert migrate(again_led.db) == []
    else:
        assert isinstance(again_led, PostgresLedger)
        with psycopg.connect(again_led.url, autocommit=True) as conn:
            assert pg_migrations.migrate(conn) == []
    assert again_led.get_job(job.id) == job  # data survives the reopen
    assert again_led.integrity_check() == "ok"


def test_a_ledger_opened_while_another_process_migrates_waits_and_does_not_migrate_twice(
    tmp_path: Path,
) -> None:
    path = tmp_path / LEDGER_NAME
    # The "other process": exactly what migrate() does, caught just before its COMMIT.
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    other = Database(conn)
    other.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    other.execute("BEGIN IMMEDIATE")
    for name, step in MIGRATIONS:
        step(other)
        other.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", [name, 1.0])

    errors: list[BaseException] = []

    def open_second() -> None:
        try:
            Ledger(path).close()
        except BaseException as exc:
            errors.append(exc)

    opener = threading.Thread(target=open_second)
    opener.start()
    time.sleep(0.5)  # the second opener is now blocked on the write lock
    other.execute("COMMIT")
    opener.join(timeout=30)
    other.close()
    assert not opener.is_alive()
    assert errors == []
    with Ledger(path) as led:
        names = [r["name"] for r in led.db.query("SELECT name FROM migrations")]
    assert names == [name for name, _ in MIGRATIONS]


# Jobs ----------------------------------------------------------------------------------------


def test_ensure_job_is_idempotent_per_request_and_index(
    ledger: LedgerBase, clock: FakeClock
) -> None:
    job = ledger.ensure_job("h1", 0, REQUEST, "rule-a")
    assert job.state is S.PENDING
    assert (job.generation, job.attempts) == (0, 0)
    assert job.request == REQUEST
    assert job.created_at == job.updated_at == clock.now

    clock.now += 50
    again = ledger.ensure_job("h1", 0, {"prompt": "something else"}, "rule-b")
    assert again == job  # same row, first request and rule kept, nothing touched
    assert ledger.find_job("h1", 0) == job
    assert len(ledger.jobs()) == 1


def test_ensure_job_makes_one_job_per_image_index(ledger: LedgerBase) -> None:
    jobs = [ledger.ensure_job("h1", i, REQUEST, "rule") for i in (2, 0, 1)]
    assert len({j.id for j in jobs}) == 3
    assert [j.image_index for j in ledger.jobs_for_request("h1")] == [0, 1, 2]
    assert ledger.ensure_job("h2", 0, REQUEST, "rule").id not in {j.id for j in jobs}
    assert ledger.find_job("h1", 3) is None
    assert ledger.find_job("nope", 0) is None


def test_jobs_filters_by_state_oldest_first(ledger: LedgerBase) -> None:
    a = drive(ledger, ledger.ensure_job("h", 0, REQUEST, None), S.RUNNING)
    b = ledger.ensure_job("h", 1, REQUEST, None)
    c = drive(ledger, ledger.ensure_job("h", 2, REQUEST, None), S.RUNNING)
    assert [j.id for j in ledger.jobs(S.RUNNING)] == [a.id, c.id]
    assert [j.id for j in ledger.jobs(S.PENDING, S.RUNNING)] == [a.id, b.id, c.id]
    assert [j.id for j in ledger.jobs()] == [a.id, b.id, c.id]
    assert ledger.jobs(S.DONE) == []
    assert ledger.state_counts() == {"running": 2, "pending": 1}


def test_the_path_table_reaches_every_state() -> None:
    # Guards the helper the transition matrix relies on.
    assert set(PATH_TO) == set(JobState)
    for target, steps in PATH_TO.items():
        state = S.PENDING
        for nxt in steps:
            assert nxt in ALLOWED[state]
            state = nxt
        assert state is target


@pytest.mark.parametrize(
    ("src", "dst"), list(itertools.product(JobState, JobState)), ids=lambda s: str(s)
)
def test_every_listed_move_works_and_every_other_raises(
    ledger: LedgerBase, clock: FakeClock, src: JobState, dst: JobState
) -> None:
    job = drive(ledger, ledger.ensure_job("h", 0, REQUEST, "rule"), src)
    events_before = len(ledger.events(job.id))
    clock.now += 1
    if dst in ALLOWED[src]:
        moved = ledger.transition(job.id, src, dst, detail="why")
        assert moved.state is dst
        assert moved.updated_at == clock.now
        bumped = src in FINAL and dst is S.PENDING
        assert moved.generation == job.generation + (1 if bumped else 0)
        last = ledger.events(job.id)[-1]
        assert (last["from_state"], last["to_state"], last["detail"]) == (src, dst, "why")
        assert len(ledger.events(job.id)) == events_before + 1
    else:
        with pytest.raises(IllegalTransition):
            ledger.transition(job.id, src, dst)
        assert ledger.get_job(job.id) == job
        assert len(ledger.events(job.id)) == events_before


def test_a_move_from_the_wrong_state_is_stale_and_changes_nothing(
    ledger: LedgerBase, clock: FakeClock
) -> None:
    job = drive(ledger, ledger.ensure_job("h", 0, REQUEST, "rule"), S.RUNNING)
    events = ledger.events(job.id)
    clock.now += 10
    with pytest.raises(StaleTransition):
        ledger.transition(
            job.id, S.SUBMITTING, S.AMBIGUOUS, error="lost", count_attempt=True, detail="x"
        )
    assert ledger.get_job(job.id) == job  # state, error, attempts, updated_at untouched
    assert ledger.events(job.id) == events


def test_an_unknown_field_is_refused_before_anything_changes(ledger: LedgerBase) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    with pytest.raises(ValueError, match="generation"):
        ledger.transition(job.id, S.PENDING, S.SUBMITTING, generation=7)
    assert ledger.get_job(job.id) == job
    assert ledger.events(job.id) == []


def test_a_transition_sets_the_given_fields(ledger: LedgerBase) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    job = ledger.transition(job.id, S.PENDING, S.SUBMITTING, intent_at=5.0)
    job = ledger.transition(job.id, S.SUBMITTING, S.RUNNING, task_id="task-1", submitted_at=6.0)
    job = ledger.transition(
        job.id, S.RUNNING, S.DOWNLOADING, result_url="https://cdn/x.png", expires_at=99.0
    )
    job = ledger.transition(
        job.id, S.DOWNLOADING, S.DONE, image_sha256="ab" * 32, image_format="png"
    )
    assert (job.task_id, job.result_url, job.expires_at) == ("task-1", "https://cdn/x.png", 99.0)
    assert (job.image_sha256, job.image_format) == ("ab" * 32, "png")


def test_two_ledgers_on_one_store_cannot_move_a_job_twice(make_ledger: MakeLedger) -> None:
    daemon, retry_cmd = make_ledger(), make_ledger()
    job = daemon.ensure_job("h", 0, REQUEST, "rule")
    assert retry_cmd.ensure_job("h", 0, REQUEST, "rule").id == job.id

    daemon.transition(job.id, S.PENDING, S.SUBMITTING, count_attempt=True)
    with pytest.raises(StaleTransition):
        retry_cmd.transition(job.id, S.PENDING, S.SUBMITTING, count_attempt=True)

    seen = retry_cmd.get_job(job.id)
    assert seen.state is S.SUBMITTING
    assert seen.attempts == 1  # exactly one paid POST on record
    assert [e["to_state"] for e in retry_cmd.events(job.id)] == ["submitting"]
    # And the other way round: the second ledger moves it, the first is now stale.
    retry_cmd.transition(job.id, S.SUBMITTING, S.AMBIGUOUS, error="lost")
    with pytest.raises(StaleTransition):
        daemon.transition(job.id, S.SUBMITTING, S.RUNNING, task_id="t")
    assert daemon.get_job(job.id).state is S.AMBIGUOUS


def test_count_attempt_is_committed_together_with_the_move(ledger: LedgerBase) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    ledger.transition(job.id, S.PENDING, S.SUBMITTING, count_attempt=True, intent_at=1.0)
    # Read through a separate connection: both are durable once transition() returns.
    assert committed_row(ledger, "SELECT state, attempts FROM jobs WHERE id = ?", (job.id,)) == (
        "submitting",
        1,
    )
    ledger.transition(job.id, S.SUBMITTING, S.PENDING, detail="connection refused")
    ledger.transition(job.id, S.PENDING, S.SUBMITTING, count_attempt=True)
    assert ledger.get_job(job.id).attempts == 2
    ledger.transition(job.id, S.SUBMITTING, S.RUNNING, task_id="t")
    assert ledger.get_job(job.id).attempts == 2  # not counted unless asked


@pytest.mark.parametrize("final", sorted(FINAL))
def test_retry_from_a_final_state_starts_a_new_generation(
    ledger: LedgerBase, final: JobState
) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    job = ledger.transition(job.id, S.PENDING, S.SUBMITTING, count_attempt=True)
    state = S.SUBMITTING
    for nxt in {S.DONE: [S.RUNNING, S.DOWNLOADING, S.DONE]}.get(final, [final]):
        job = ledger.transition(job.id, state, nxt)
        state = nxt
    assert job.state is final
    retried = ledger.transition(job.id, final, S.PENDING, detail="promptdrop retry")
    assert retried.generation == 1
    assert retried.attempts == 1  # attempts count across generations
    again = drive(ledger, retried, S.AMBIGUOUS)
    assert ledger.transition(again.id, S.AMBIGUOUS, S.PENDING).generation == 2


def test_a_non_final_return_to_pending_keeps_the_generation(ledger: LedgerBase) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    job = ledger.transition(job.id, S.PENDING, S.UPLOADING)
    job = ledger.transition(job.id, S.UPLOADING, S.PENDING)
    job = ledger.transition(job.id, S.PENDING, S.SUBMITTING)
    job = ledger.transition(job.id, S.SUBMITTING, S.PENDING)
    assert job.generation == 0


def test_update_running_records_the_poll_only_for_running_jobs(
    ledger: LedgerBase, clock: FakeClock
) -> None:
    job = drive(ledger, ledger.ensure_job("h", 0, REQUEST, "rule"), S.RUNNING)
    clock.now += 3
    ledger.update_running(job.id, '{"status": "processing"}')
    assert committed_row(ledger, "SELECT task_json FROM jobs WHERE id = ?", (job.id,)) == (
        '{"status": "processing"}',
    )
    assert ledger.get_job(job.id).updated_at == clock.now
    other = ledger.ensure_job("h", 1, REQUEST, "rule")
    ledger.update_running(other.id, '{"status": "x"}')
    assert committed_row(ledger, "SELECT task_json FROM jobs WHERE id = ?", (other.id,)) == (None,)


# History and budgets ------------------------------------------------------------------------


def test_job_events_keep_the_history_in_order(ledger: LedgerBase, clock: FakeClock) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    clock.now = 10.0
    ledger.transition(job.id, S.PENDING, S.SUBMITTING, detail="intent")
    clock.now = 11.0
    ledger.note_event(job.id, "still waiting")
    clock.now = 12.0
    ledger.transition(job.id, S.SUBMITTING, S.RUNNING)
    history = [
        (e["at"], e["from_state"], e["to_state"], e["detail"]) for e in ledger.events(job.id)
    ]
    assert history == [
        (10.0, "pending", "submitting", "intent"),
        (11.0, "submitting", "submitting", "still waiting"),
        (12.0, "submitting", "running", None),
    ]
    assert ledger.events(job.id + 1000) == []


def test_submissions_since_counts_submit_intents_per_rule_and_time(
    ledger: LedgerBase, clock: FakeClock
) -> None:
    a1 = ledger.ensure_job("ha", 0, REQUEST, "rule-a")
    a2 = ledger.ensure_job("ha", 1, REQUEST, "rule-a")
    b1 = ledger.ensure_job("hb", 0, REQUEST, "rule-b")

    clock.now = 100.0
    ledger.transition(a1.id, S.PENDING, S.SUBMITTING)
    ledger.transition(a1.id, S.SUBMITTING, S.PENDING, detail="rate limited, nothing created")
    clock.now = 200.0
    ledger.transition(a1.id, S.PENDING, S.SUBMITTING)  # a second intent: counts again
    ledger.transition(a1.id, S.SUBMITTING, S.RUNNING)
    ledger.transition(b1.id, S.PENDING, S.UPLOADING)  # not a submission
    clock.now = 300.0
    ledger.transition(b1.id, S.UPLOADING, S.SUBMITTING)
    ledger.transition(a2.id, S.PENDING, S.FAILED, error="bad input")  # never submitted

    assert ledger.submissions_since(0.0) == 3
    assert ledger.submissions_since(0.0, rule="rule-a") == 2
    assert ledger.submissions_since(0.0, rule="rule-b") == 1
    assert ledger.submissions_since(200.0) == 2  # "at or after"
    assert ledger.submissions_since(200.0, rule="rule-a") == 1
    assert ledger.submissions_since(300.5) == 0
    assert ledger.submissions_since(0.0, rule="no-such-rule") == 0


def test_done_since_counts_each_delivered_job_once_per_rule_and_time(
    ledger: LedgerBase, clock: FakeClock
) -> None:
    a = ledger.ensure_job("ha", 0, REQUEST, "rule-a")
    b = ledger.ensure_job("hb", 0, REQUEST, "rule-b")
    clock.now = 100.0
    drive(ledger, a, S.DONE)
    ledger.note_event(a.id, "copied to a renamed file")  # not a second delivery
    clock.now = 200.0
    drive(ledger, b, S.DONE)

    assert ledger.done_since(0.0) == 2
    assert ledger.done_since(150.0) == 1
    assert ledger.done_since(0.0, rule="rule-a") == 1
    assert ledger.done_since(200.5) == 0


def test_spent_since_gives_back_intents_the_api_proved_created_nothing(
    make_ledger: MakeLedger, clock: FakeClock
) -> None:
    ledger = make_ledger(clock)
    jobs = [ledger.ensure_job(f"h{i}", 0, REQUEST, "rule") for i in range(4)]
    clock.now = 100.0  # "yesterday"
    ledger.transition(jobs[0].id, S.PENDING, S.SUBMITTING)
    clock.now = 200.0  # "today" starts at 150
    # Yesterday's intent refused today: it was not counted today, so nothing is given back.
    ledger.transition(jobs[0].id, S.SUBMITTING, S.PENDING, detail="rate limited")
    ledger.transition(jobs[1].id, S.PENDING, S.SUBMITTING)
    ledger.transition(jobs[1].id, S.SUBMITTING, S.PENDING, detail="rate limited")
    ledger.transition(jobs[2].id, S.PENDING, S.SUBMITTING)
    ledger.transition(jobs[2].id, S.SUBMITTING, S.FAILED, error="refused")
    ledger.transition(jobs[3].id, S.PENDING, S.SUBMITTING)
    ledger.transition(jobs[3].id, S.SUBMITTING, S.AMBIGUOUS, error="answer lost")  # may be paid
    ledger.transition(jobs[1].id, S.PENDING, S.SUBMITTING)  # sent again: counts
    ledger.transition(jobs[1].id, S.SUBMITTING, S.RUNNING)

    assert ledger.submissions_since(150.0, "rule") == 4  # every intent
    assert ledger.spent_since(150.0, "rule") == 2  # the ambiguous one and the resent one
    assert ledger.spent_since(150.0, "other-rule") == 0
    assert ledger.spent_since(0.0) == 2  # counted from yesterday, its refund counts too
    # Kept in the ledger: another connection (a restart, another host) counts the same.
    assert make_ledger(clock).spent_since(150.0, "rule") == 2


def test_a_budgeted_intent_commits_only_while_the_budget_has_room(
    ledger: LedgerBase, clock: FakeClock
) -> None:
    budget = Budget("rule", 0.0, 2)
    a, b, c = (ledger.ensure_job(f"h{i}", 0, REQUEST, "rule") for i in range(3))
    ledger.transition(a.id, S.PENDING, S.SUBMITTING, budget=budget)
    ledger.transition(b.id, S.PENDING, S.SUBMITTING, budget=budget)
    with pytest.raises(BudgetSpent):
        ledger.transition(c.id, S.PENDING, S.SUBMITTING, budget=budget)
    assert ledger.get_job(c.id).state is S.PENDING  # nothing committed
    ledger.transition(b.id, S.SUBMITTING, S.PENDING, detail="rate limited: nothing created")
    ledger.transition(c.id, S.PENDING, S.SUBMITTING, budget=budget)  # the refund made room
    assert ledger.spent_since(0.0, "rule") == 2


def _credits_of(request: Any) -> float:
    return {"4K": 48.0, "2K": 24.0}.get(request.get("resolution"), 8.0)


def test_credits_are_summed_over_the_submissions_the_budget_counts_and_capped_in_the_commit(
    ledger: LedgerBase, clock: FakeClock
) -> None:
    """On both backends: each counted intent is priced by its job's stored request once, a
    refund counts nothing, and an intent whose price does not fit commits nothing."""
    big = {**REQUEST, "resolution": "4K"}
    a, b, c, d = (
        ledger.ensure_job(f"c{i}", 0, big if i == 0 else REQUEST, "rule") for i in range(4)
    )
    cap = Budget("rule", 0.0, None, credits=60.0, price=8.0, price_of=_credits_of)
    ledger.transition(
        a.id,
        S.PENDING,
        S.SUBMITTING,
        budget=Budget("rule", 0.0, None, credits=60.0, price=48.0, price_of=_credits_of),
    )
    ledger.transition(b.id, S.PENDING, S.SUBMITTING, budget=cap)
    ledger.transition(b.id, S.SUBMITTING, S.PENDING, detail="rate limited: nothing created")
    ledger.transition(b.id, S.PENDING, S.SUBMITTING, budget=cap)  # 48 + 8
    assert ledger.credits_since(0.0, "rule", _credits_of) == 56.0
    with pytest.raises(BudgetSpent):
        ledger.transition(c.id, S.PENDING, S.SUBMITTING, budget=cap)  # 64 > 60
    assert ledger.get_job(c.id).state is S.PENDING
    assert ledger.credits_since(0.0, "other-rule", _credits_of) == 0.0
    ledger.transition(d.id, S.PENDING, S.SUBMITTING)  # unbudgeted, still counted
    assert ledger.credits_since(0.0, None, _credits_of) == 64.0


def test_hosts_racing_for_a_shared_budget_never_overspend_it(make_ledger: MakeLedger) -> None:
    setup = make_ledger()
    ids = [setup.ensure_job(f"h{i}", 0, REQUEST, "rule").id for i in range(40)]
    budget = Budget("rule", 0.0, 7)
    sent: dict[str, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def contend(n: int) -> None:
        host = f"host-{n}"
        try:
            with make_ledger(track=False) as led:  # in its own thread, as SQLite wants
                start.wait()
                sent[host] = 0
                for job_id in ids[n::4]:  # each host its own files: no row lock to share
                    try:
                        led.transition(job_id, S.PENDING, S.SUBMITTING, budget=budget)
                        sent[host] += 1
                    except BudgetSpent:
                        pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sum(sent.values()) == 7
    assert setup.spent_since(0.0, "rule") == 7


def test_a_note_on_a_submitting_job_is_not_counted_as_another_submission(
    ledger: LedgerBase,
) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    ledger.transition(job.id, S.PENDING, S.SUBMITTING, count_attempt=True)
    ledger.note_event(job.id, "waiting for the answer")
    assert ledger.submissions_since(0.0) == 1
    assert ledger.submissions_since(0.0, rule="rule") == 1


# Recovery -----------------------------------------------------------------------------------


def test_recover_repairs_every_interrupted_step(ledger: LedgerBase) -> None:
    by_state = {
        st: drive(ledger, ledger.ensure_job("h", i, REQUEST, "rule"), st)
        for i, st in enumerate(JobState)
    }
    result = ledger.recover()
    assert result == Recovery(ambiguous=1, uploads_restarted=1, downloads_restarted=1, running=2)

    ambiguous = ledger.get_job(by_state[S.SUBMITTING].id)
    assert ambiguous.state is S.AMBIGUOUS
    assert ambiguous.error  # says why, for `promptdrop status`
    assert ambiguous.attempts == by_state[S.SUBMITTING].attempts  # nothing resent
    assert ledger.get_job(by_state[S.UPLOADING].id).state is S.PENDING
    assert ledger.get_job(by_state[S.DOWNLOADING].id).state is S.RUNNING
    assert ledger.get_job(by_state[S.RUNNING].id) == by_state[S.RUNNING]
    for st in (S.PENDING, S.DONE, S.FAILED, S.AMBIGUOUS):
        assert ledger.get_job(by_state[st].id) == by_state[st]
    assert all(j.generation == 0 for j in ledger.jobs())
    last = ledger.events(ambiguous.id)[-1]
    assert (last["from_state"], last["to_state"]) == ("submitting", "ambiguous")
    assert last["detail"].startswith("recovery")

    assert "1 submission(s)" in str(result)
    # A second pass finds nothing left to repair.
    assert ledger.recover() == Recovery(
        ambiguous=0, uploads_restarted=0, downloads_restarted=0, running=2
    )


def test_recover_on_an_empty_ledger_finds_nothing(ledger: LedgerBase) -> None:
    assert ledger.recover() == Recovery(0, 0, 0, 0)


_CRASHING_CHILD = """
import sys, time
from pathlib import Path
from promptdrop.ledger import JobState, Ledger, open_ledger

where = sys.argv[1]
led = open_ledger(where) if where.startswith("postgresql:") else Ledger(Path(where))
job = led.ensure_job("crash", 0, {"prompt": "x"}, "rule")
led.transition(job.id, JobState.PENDING, JobState.SUBMITTING, count_attempt=True, intent_at=1.0)
print(job.id, flush=True)
time.sleep(60)
"""


def test_a_process_killed_mid_submit_leaves_a_sound_ledger_and_an_ambiguous_job(
    make_ledger: MakeLedger, tmp_path: Path
) -> None:
    probe = make_ledger()
    where = probe.url if isinstance(probe, PostgresLedger) else str(probe.location)
    probe.close()
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_CHILD, where],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip().isdigit(), child.stderr.read() if child.stderr else line
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    job_id = int(line)

    led = make_ledger()
    assert led.integrity_check() == "ok"
    job = led.get_job(job_id)
    assert job.state is S.SUBMITTING
    assert job.attempts == 1
    assert led.recover() == Recovery(
        ambiguous=1, uploads_restarted=0, downloads_restarted=0, running=0
    )
    after = led.get_job(job_id)
    assert after.state is S.AMBIGUOUS
    assert after.error
    assert after.attempts == 1


# Sources --------------------------------------------------------------------------------------


def test_sources_are_stored_updated_and_read_back(ledger: LedgerBase, tmp_path: Path) -> None:
    p = tmp_path / "cats" / "tabby.prompt.toml"
    assert ledger.get_source(p) is None
    ledger.put_source(
        p, rule="r", status="active", content_sha256="c1", request_hash="h1", image_count=2
    )
    src = ledger.get_source(p)
    assert src is not None
    assert (src.path, src.rule, src.status) == (str(p), "r", "active")
    assert (src.content_sha256, src.request_hash, src.image_count, src.error) == (
        "c1",
        "h1",
        2,
        None,
    )
    assert ledger.get_source(str(p)) == src  # str and Path name the same row

    ledger.put_source(p, rule="r", status="invalid", content_sha256="c2", error="line 3: ...")
    updated = ledger.get_source(p)
    assert updated is not None
    assert (updated.status, updated.content_sha256, updated.request_hash, updated.error) == (
        "invalid",
        "c2",
        None,
        "line 3: ...",
    )
    assert len(ledger.sources_under(tmp_path)) == 1  # replaced, not duplicated

    ledger.set_source_status(p, "deleted")
    gone = ledger.get_source(p)
    assert gone is not None
    assert (gone.status, gone.error, gone.content_sha256) == ("deleted", None, "c2")


def test_sources_for_request_lists_active_ones_by_default(ledger: LedgerBase) -> None:
    ledger.put_source("/w/b.prompt.toml", rule="r", status="active", request_hash="h")
    ledger.put_source("/w/a.prompt.toml", rule="r", status="active", request_hash="h")
    ledger.put_source("/w/c.prompt.toml", rule="r", status="deleted", request_hash="h")
    ledger.put_source("/w/d.prompt.toml", rule="r", status="active", request_hash="other")
    assert [s.path for s in ledger.sources_for_request("h")] == [
        "/w/a.prompt.toml",
        "/w/b.prompt.toml",
    ]
    assert [s.path for s in ledger.sources_for_request("h", status="deleted")] == [
        "/w/c.prompt.toml",
    ]
    assert ledger.sources_for_request("none") == []


def test_sources_under_a_folder_never_match_a_sibling_with_a_common_prefix(
    ledger: LedgerBase,
) -> None:
    for p in (
        "/a/b/x.prompt.toml",
        "/a/b/deep/y.prompt.toml",
        "/a/bc/z.prompt.toml",
        "/a/b.prompt.toml",
        "/a/b_c/w.prompt.toml",
        "/z/b/x.prompt.toml",
    ):
        ledger.put_source(p, rule=None, status="active")
    inside = ["/a/b/deep/y.prompt.toml", "/a/b/x.prompt.toml"]
    assert [s.path for s in ledger.sources_under("/a/b")] == inside
    assert [s.path for s in ledger.sources_under("/a/b/")] == inside
    assert [s.path for s in ledger.sources_under(Path("/a/b"))] == inside
    assert [s.path for s in ledger.sources_under("/a/bc")] == ["/a/bc/z.prompt.toml"]
    assert [s.path for s in ledger.sources_under("/a/b/x.prompt.toml")] == [
        "/a/b/x.prompt.toml",
    ]
    assert len(ledger.sources_under("/a")) == 5
    assert ledger.sources_under("/a/b/x") == []


# Outputs --------------------------------------------------------------------------------------


def test_outputs_are_recorded_found_and_replaced(ledger: LedgerBase) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    assert ledger.output_at("/w/cat.png") is None
    ledger.record_output(
        "/w/cat.png", job=job, source_path="/w/cat.prompt.toml", sha256="s1", fmt="png"
    )
    out = ledger.output_at(Path("/w/cat.png"))
    assert out is not None
    assert (out.path, out.job_id, out.generation, out.source_path) == (
        "/w/cat.png",
        job.id,
        0,
        "/w/cat.prompt.toml",
    )
    assert (out.sha256, out.format, out.superseded) == ("s1", "png", False)

    ledger.record_output("/w/cat.png", job=job, source_path=None, sha256="s2", fmt=None)
    again = ledger.output_at("/w/cat.png")
    assert again is not None
    assert (again.sha256, again.source_path, again.format) == ("s2", None, None)
    assert len(ledger.outputs_for_job(job.id)) == 1


def test_moving_an_output_aside_marks_it_superseded(ledger: LedgerBase) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    ledger.record_output(
        "/w/cat.png", job=job, source_path="/w/cat.prompt.toml", sha256="s1", fmt="png"
    )
    ledger.move_output("/w/cat.png", "/w/cat (1).png")
    assert ledger.output_at("/w/cat.png") is None
    moved = ledger.output_at("/w/cat (1).png")
    assert moved is not None
    assert (moved.sha256, moved.superseded) == ("s1", True)
    ledger.move_output("/w/not-ours.png", "/w/elsewhere.png")  # unknown file: no record made
    assert ledger.output_at("/w/elsewhere.png") is None


def test_moving_an_output_onto_the_name_of_a_deleted_old_version_replaces_that_record(
    ledger: LedgerBase,
) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    ledger.record_output(
        "/w/cat.png", job=job, source_path="/w/c.prompt.toml", sha256="s1", fmt="png"
    )
    ledger.move_output("/w/cat.png", "/w/cat (1).png")  # version 1 set aside; user deletes it
    ledger.record_output(
        "/w/cat.png", job=job, source_path="/w/c.prompt.toml", sha256="s2", fmt="png"
    )
    ledger.move_output("/w/cat.png", "/w/cat (1).png")  # the free name is chosen again
    moved = ledger.output_at("/w/cat (1).png")
    assert moved is not None
    assert (moved.sha256, moved.superseded) == ("s2", True)


def test_output_for_only_sees_the_current_generation(ledger: LedgerBase) -> None:
    src = "/w/cat.prompt.toml"
    job = drive(ledger, ledger.ensure_job("h", 0, REQUEST, "rule"), S.DONE)
    other = drive(ledger, ledger.ensure_job("h", 1, REQUEST, "rule"), S.DONE)
    ledger.record_output("/w/cat.png", job=job, source_path=src, sha256="s1", fmt="png")
    ledger.record_output("/w/cat-2.png", job=other, source_path=src, sha256="s9", fmt="png")

    first = ledger.output_for(src, job)
    assert first is not None
    assert (first.path, first.generation) == ("/w/cat.png", 0)
    assert ledger.output_for("/w/dog.prompt.toml", job) is None

    retried = ledger.transition(job.id, S.DONE, S.PENDING, detail="retry")
    assert ledger.output_for(src, retried) is None  # the old image is not this generation's
    done_again = drive(ledger, retried, S.DONE)
    ledger.move_output("/w/cat.png", "/w/cat (1).png")
    ledger.record_output("/w/cat.png", job=done_again, source_path=src, sha256="s2", fmt="png")

    current = ledger.output_for(Path(src), done_again)
    assert current is not None
    assert (current.path, current.generation, current.sha256) == ("/w/cat.png", 1, "s2")
    assert [(o.path, o.generation, o.superseded) for o in ledger.outputs_for_job(job.id)] == [
        ("/w/cat (1).png", 0, True),
        ("/w/cat.png", 1, False),
    ]
    assert [o.sha256 for o in ledger.outputs_for_source(src)] == ["s1", "s9", "s2"]
    assert ledger.outputs_for_job(other.id)[0].path == "/w/cat-2.png"


# Uploads --------------------------------------------------------------------------------------


def test_the_upload_cache_remembers_and_forgets_urls(ledger: LedgerBase) -> None:
    assert ledger.cached_upload("sha-a") is None
    ledger.record_upload("sha-a", "https://files/a", "up-a", {"id": "up-a"})
    ledger.record_upload("sha-b", "https://files/b", None, {"url": "https://files/b"})
    ledger.record_upload("sha-c", "https://files/c", "up-c", {})
    assert ledger.cached_upload("sha-a") == "https://files/a"
    assert ledger.upload_count() == 3

    ledger.record_upload("sha-a", "https://files/a2", "up-a2", {})  # re-uploaded: replaced
    assert ledger.cached_upload("sha-a") == "https://files/a2"
    assert ledger.upload_count() == 3

    assert ledger.forget_uploads([]) == 0
    assert ledger.forget_uploads(["https://files/a2", "https://files/b", "https://nope"]) == 2
    assert ledger.cached_upload("sha-a") is None
    assert ledger.cached_upload("sha-b") is None
    assert ledger.cached_upload("sha-c") == "https://files/c"
    assert ledger.upload_count() == 1


# State directory ------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("PROMPTDROP_STATE_DIR", "STATE_DIRECTORY", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_state_dir_defaults_to_local_state_under_home(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "promptdrop"
    clean_env.setenv("XDG_STATE_HOME", "")  # empty means unset, per the XDG spec
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "promptdrop"


def test_state_dir_follows_xdg_state_home(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "promptdrop"


def test_state_dir_prefers_systemd_state_directory_first_entry(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    clean_env.setenv("STATE_DIRECTORY", "/var/lib/promptdrop:/var/lib/other")
    assert default_state_dir() == Path("/var/lib/promptdrop")
    clean_env.setenv("STATE_DIRECTORY", "/var/lib/only")
    assert default_state_dir() == Path("/var/lib/only")


def test_state_dir_prefers_the_explicit_setting_over_everything(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    clean_env.setenv("STATE_DIRECTORY", "/var/lib/promptdrop")
    clean_env.setenv("PROMPTDROP_STATE_DIR", str(tmp_path / "mine"))
    assert default_state_dir() == tmp_path / "mine"
    clean_env.setenv("PROMPTDROP_STATE_DIR", "~/pd-state")
    assert default_state_dir() == tmp_path / "home" / "pd-state"


# Claims (leases) --------------------------------------------------------------------------------
# Leases are timed by the database's clock, not the ledger's: these tests wait for real.


def test_a_job_is_claimed_by_exactly_one_host(ledger: LedgerBase) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    assert ledger.holder(job.id) is None
    assert ledger.claim(job.id, "host-a", 30)
    assert not ledger.claim(job.id, "host-b", 30)
    assert ledger.claim(job.id, "host-a", 30)  # claiming again what it holds renews it
    assert ledger.holder(job.id) == "host-a"


def test_many_hosts_claiming_at_once_get_each_job_exactly_once(make_ledger: MakeLedger) -> None:
    setup = make_ledger()
    ids = [setup.ensure_job("h", i, REQUEST, "rule").id for i in range(40)]
    won: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)
    hosts = [f"host-{n}" for n in range(4)]

    def contend(host: str) -> None:
        try:
            with make_ledger(track=False) as led:  # in its own thread, as SQLite wants
                start.wait()
                won[host] = [i for i in ids if led.claim(i, host, 30)]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=contend, args=(host,)) for host in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    claimed = [i for got in won.values() for i in got]
    assert sorted(claimed) == ids  # every job once, none twice
    assert {setup.holder(i) for i in ids} <= set(hosts)


def test_an_expired_claim_may_be_taken_and_the_old_holder_can_no_longer_move_the_job(
    ledger: LedgerBase,
) -> None:
    job = drive(ledger, ledger.ensure_job("h", 0, REQUEST, "rule"), S.RUNNING)
    assert ledger.claim(job.id, "host-a", 0.3)
    assert not ledger.claim(job.id, "host-b", 30)
    time.sleep(0.4)
    assert ledger.holder(job.id) is None
    assert ledger.claim(job.id, "host-b", 30)
    assert ledger.renew("host-a", 30) == 0  # not ours any more: not renewed
    with pytest.raises(LeaseLost):
        ledger.transition(job.id, S.RUNNING, S.DOWNLOADING, holder="host-a", result_url="u")
    assert ledger.get_job(job.id) == job
    moved = ledger.transition(job.id, S.RUNNING, S.DOWNLOADING, holder="host-b", result_url="u")
    assert moved.state is S.DOWNLOADING


def test_a_lease_lost_is_also_a_stale_transition(ledger: LedgerBase) -> None:
    # The engine leaves a job on StaleTransition; losing the claim must be left alone the same way.
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    with pytest.raises(StaleTransition):
        ledger.transition(job.id, S.PENDING, S.SUBMITTING, holder="nobody-claimed-it")
    assert ledger.get_job(job.id) == job


def test_jobs_free_for_a_host_leave_out_those_another_host_holds(ledger: LedgerBase) -> None:
    mine, theirs, lapsed, nobodys = (ledger.ensure_job("h", i, REQUEST, "rule") for i in range(4))
    assert ledger.claim(mine.id, "host-a", 30)
    assert ledger.claim(theirs.id, "host-b", 30)
    assert ledger.claim(lapsed.id, "host-b", 0)  # expired at once: free to take over

    def ids(host: str | None) -> list[int]:
        return [j.id for j in ledger.jobs(S.PENDING, free_for=host)]

    assert ids("host-a") == [mine.id, lapsed.id, nobodys.id]
    assert ids("host-b") == [theirs.id, lapsed.id, nobodys.id]
    assert ids(None) == [mine.id, theirs.id, lapsed.id, nobodys.id]
    assert [j.id for j in ledger.jobs(S.RUNNING, free_for="host-a")] == []


def test_renewing_keeps_a_claim_alive_past_its_first_term(ledger: LedgerBase) -> None:
    a = ledger.ensure_job("h", 0, REQUEST, "rule")
    b = ledger.ensure_job("h", 1, REQUEST, "rule")
    assert ledger.claim(a.id, "host-a", 0.4) and ledger.claim(b.id, "host-a", 0.4)
    time.sleep(0.2)
    assert ledger.renew("host-a", 30) == 2
    time.sleep(0.3)
    assert not ledger.claim(a.id, "host-b", 30)
    assert ledger.holder(b.id) == "host-a"


def test_release_frees_a_claim_only_for_its_holder(ledger: LedgerBase) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    other = ledger.ensure_job("h", 1, REQUEST, "rule")
    ledger.claim(job.id, "host-a", 30)
    ledger.claim(other.id, "host-a", 30)
    assert not ledger.release(job.id, "host-b")
    assert ledger.holder(job.id) == "host-a"
    assert ledger.release(job.id, "host-a")
    assert ledger.claim(job.id, "host-b", 30)
    assert ledger.release_all("host-a") == 1
    assert ledger.holder(other.id) is None


@pytest.mark.parametrize("final", sorted(FINAL))
def test_reaching_a_final_state_ends_the_claim(ledger: LedgerBase, final: JobState) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    ledger.claim(job.id, "host-a", 30)
    path = {S.DONE: PATH_TO[S.DONE], S.FAILED: [S.FAILED], S.AMBIGUOUS: PATH_TO[S.AMBIGUOUS]}
    state = S.PENDING
    for nxt in path[final]:
        ledger.transition(job.id, state, nxt, holder="host-a")
        state = nxt
    assert ledger.holder(job.id) is None
    assert ledger.claim(job.id, "host-b", 30)


def test_a_dead_hosts_work_is_taken_over_polled_not_resent(ledger: LedgerBase) -> None:
    by_state = {
        st: drive(ledger, ledger.ensure_job("h", i, REQUEST, "rule"), st)
        for i, st in enumerate(JobState)
    }
    running = by_state[S.RUNNING]
    for job in by_state.values():
        assert ledger.claim(job.id, "host-a", 0.3) or job.state in FINAL
    alive = ledger.ensure_job("other", 0, REQUEST, "rule")
    alive = drive(ledger, alive, S.SUBMITTING)
    assert ledger.claim(alive.id, "host-c", 30)  # a live host's work is not touched
    assert ledger.expired_claims() == []
    time.sleep(0.4)

    expired = {j.state for j in ledger.expired_claims()}
    assert expired == {S.PENDING, S.UPLOADING, S.SUBMITTING, S.RUNNING, S.DOWNLOADING}
    taken = {j.id: j for j in ledger.take_over("host-b", 30)}
    assert set(taken) == {by_state[st].id for st in expired}
    assert taken[by_state[S.SUBMITTING].id].state is S.AMBIGUOUS  # maybe paid: never resent
    assert taken[by_state[S.SUBMITTING].id].error
    assert taken[by_state[S.UPLOADING].id].state is S.PENDING
    assert taken[by_state[S.DOWNLOADING].id].state is S.RUNNING
    assert taken[running.id].state is S.RUNNING
    assert taken[running.id].task_id == running.task_id
    for job in taken.values():
        assert job.attempts == ledger.get_job(job.id).attempts
        if job.state not in FINAL:
            assert ledger.holder(job.id) == "host-b"
    assert ledger.get_job(alive.id).state is S.SUBMITTING
    assert ledger.holder(alive.id) == "host-c"
    assert ledger.take_over("host-d", 30) == []  # nothing left to take


def test_running_work_without_any_claim_is_free_to_take_over(ledger: LedgerBase) -> None:
    # Work recorded before claims existed (or released at a clean stop) belongs to nobody.
    job = drive(ledger, ledger.ensure_job("h", 0, REQUEST, "rule"), S.RUNNING)
    pending = ledger.ensure_job("h", 1, REQUEST, "rule")  # new work: claimed the usual way
    assert [j.id for j in ledger.expired_claims()] == [job.id]
    assert [j.id for j in ledger.take_over("host-b", 30)] == [job.id]
    assert ledger.holder(pending.id) is None


def test_two_hosts_taking_over_at_once_split_the_work_without_overlap(
    make_ledger: MakeLedger,
) -> None:
    setup = make_ledger()
    ids = []
    for i in range(20):
        job = drive(setup, setup.ensure_job("h", i, REQUEST, "rule"), S.SUBMITTING)
        setup.claim(job.id, "dead-host", 0.2)
        ids.append(job.id)
    time.sleep(0.3)
    results: dict[str, list[int]] = {}
    start = threading.Barrier(2)
    hosts = ["host-a", "host-b"]

    def take(host: str) -> None:
        with make_ledger(track=False) as led:
            start.wait()
            results[host] = [j.id for j in led.take_over(host, 30)]

    threads = [threading.Thread(target=take, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results["host-a"] + results["host-b"]) == ids
    for job_id in ids:
        moves = [e for e in setup.events(job_id) if e["to_state"] == "ambiguous"]
        assert len(moves) == 1  # repaired once, by one host


def test_recover_with_a_host_leaves_other_hosts_live_work_alone(ledger: LedgerBase) -> None:
    mine = drive(ledger, ledger.ensure_job("h", 0, REQUEST, "rule"), S.SUBMITTING)
    theirs = drive(ledger, ledger.ensure_job("h", 1, REQUEST, "rule"), S.SUBMITTING)
    orphan = drive(ledger, ledger.ensure_job("h", 2, REQUEST, "rule"), S.DOWNLOADING)
    ledger.claim(mine.id, "me", 30)  # from before my restart
    ledger.claim(theirs.id, "them", 30)
    result = ledger.recover(host="me")
    assert result == Recovery(ambiguous=1, uploads_restarted=0, downloads_restarted=1, running=1)
    assert ledger.get_job(mine.id).state is S.AMBIGUOUS
    assert ledger.get_job(theirs.id).state is S.SUBMITTING  # its host is alive and waiting
    assert ledger.get_job(orphan.id).state is S.RUNNING


def test_default_host_ids_are_stable_and_differ_per_state_directory(tmp_path: Path) -> None:
    a = default_host_id(tmp_path / "a")
    assert a == default_host_id(tmp_path / "a")
    assert a != default_host_id(tmp_path / "b")


# Host-independent paths ---------------------------------------------------------------------------


def test_the_path_codec_maps_paths_below_roots_and_leaves_others_alone() -> None:
    codec = PathCodec({"team": "/mnt/drive/team", "inner": "/mnt/drive/team/sub", "a:b": "/x"})
    assert codec.encode("/mnt/drive/team/cat.prompt.toml") == "@team:/cat.prompt.toml"
    assert codec.encode(Path("/mnt/drive/team")) == "@team:"
    assert codec.encode("/mnt/drive/team/sub/dog.png") == "@inner:/dog.png"  # deepest root
    assert codec.encode("/mnt/drive/teamwork/x") == "/mnt/drive/teamwork/x"  # a sibling
    assert codec.encode("/x/y") == "@a%3Ab:/y"
    for p in ("/mnt/drive/team/cat.prompt.toml", "/mnt/drive/team", "/x/y", "/elsewhere/f"):
        assert codec.decode(codec.encode(p)) == p
    assert codec.decode("@unknown:/f.png") == "@unknown:/f.png"  # another host's rule
    ident = PathCodec()
    assert not ident and ident.encode("/a/b") == "/a/b" == ident.decode("/a/b")
    request = {
        "prompt": "p",
        "references": [{"kind": "file", "path": "/x/ref.png"}, {"kind": "url", "path": None}],
    }
    assert codec.decode_request(codec.encode_request(request)) == request
    assert codec.encode_request(request)["references"][0]["path"] == "@a%3Ab:/ref.png"


def test_hosts_mounting_the_drive_at_different_places_share_sources_outputs_and_references(
    pg_url: str,
) -> None:
    a = PostgresLedger(pg_url, roots={"team": "/mnt/share/team"})
    b = PostgresLedger(pg_url, roots={"team": "/Volumes/share/team"})
    try:
        req = {"prompt": "p", "references": [{"kind": "file", "path": "/mnt/share/team/r.png"}]}
        job = a.ensure_job("h", 1, req, "team")
        seen = b.find_job("h", 1)
        assert seen is not None
        assert seen.request["references"][0]["path"] == "/Volumes/share/team/r.png"

        a.put_source(
            "/mnt/share/team/cats/tabby.prompt.toml",
            rule="team",
            status="active",
            request_hash="h",
            image_count=1,
        )
        src = b.get_source("/Volumes/share/team/cats/tabby.prompt.toml")
        assert src is not None and src.path == "/Volumes/share/team/cats/tabby.prompt.toml"
        assert [s.path for s in b.sources_for_request("h")] == [src.path]
        assert [s.path for s in b.sources_under("/Volumes/share/team/cats/")] == [src.path]
        assert [s.path for s in b.sources_under("/Volumes/share/team")] == [src.path]
        assert b.sources_under("/Volumes/share/team/cat") == []

        a.record_output(
            "/mnt/share/team/cats/tabby.png",
            job=job,
            source_path="/mnt/share/team/cats/tabby.prompt.toml",
            sha256="s",
            fmt="png",
        )
        out = b.output_at("/Volumes/share/team/cats/tabby.png")
        assert out is not None
        assert out.source_path == "/Volumes/share/team/cats/tabby.prompt.toml"
        b.move_output("/Volumes/share/team/cats/tabby.png", "/Volumes/share/team/cats/tabby-1.png")
        moved = a.output_at("/mnt/share/team/cats/tabby-1.png")
        assert moved is not None and moved.superseded
        assert [o.path for o in a.outputs_for_job(job.id)] == ["/mnt/share/team/cats/tabby-1.png"]
    finally:
        a.close()
        b.close()


# PostgreSQL: opening, concurrency, outages --------------------------------------------------------


def test_open_ledger_without_a_url_is_the_sqlite_ledger_in_the_state_dir(tmp_path: Path) -> None:
    with open_ledger(None, tmp_path / "state") as led:
        assert isinstance(led, Ledger)
        assert led.location == str(tmp_path / "state" / LEDGER_NAME)
    with open_ledger("", tmp_path / "state") as led:
        assert isinstance(led, Ledger)


def test_open_ledger_refuses_a_url_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(LedgerUrlError, match="PostgreSQL URL"):
        open_ledger("mysql://db/x", tmp_path)
    assert not (tmp_path / LEDGER_NAME).exists()


def test_open_ledger_with_a_postgresql_url_opens_the_shared_ledger(pg_url: str) -> None:
    with open_ledger(pg_url, None, roots={"r": "/w"}) as led:
        assert isinstance(led, PostgresLedger)
        assert led.location.startswith("postgresql://postgres@127.0.0.1:")
        assert "search_path" not in led.location
        assert led.integrity_check() == "ok"


def test_an_unreachable_database_says_so_without_the_password(pg_server: PgServer) -> None:
    url = f"postgresql://promptdrop:s3cret-pw@127.0.0.1:{_closed_port()}/ledger"
    start = time.monotonic()
    with pytest.raises(LedgerUnavailable) as caught:
        open_ledger(url, None)
    assert time.monotonic() - start < 15
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "postgresql://promptdrop@127.0.0.1:" in message
    assert "Check the ledger URL" in message


def test_many_hosts_opening_a_new_database_at_once_migrate_it_once(pg_server: PgServer) -> None:
    url = pg_server.new_schema()
    errors: list[BaseException] = []
    start = threading.Barrier(5)

    def open_one() -> None:
        try:
            start.wait()
            PostgresLedger(url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    with PostgresLedger(url) as led:
        assert [r["name"] for r in led._rows("SELECT name FROM migrations ORDER BY name")] == [
            name for name, _ in pg_migrations.MIGRATIONS
        ]


def test_a_connection_cut_by_the_server_is_reopened_and_the_work_done_once(
    pg_url: str, pg_server: PgServer
) -> None:
    with PostgresLedger(pg_url) as led:
        job = led.ensure_job("h", 0, REQUEST, "rule")
        with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'promptdrop'"
            )
        moved = led.transition(job.id, S.PENDING, S.SUBMITTING, count_attempt=True)
        assert moved.attempts == 1
        assert [e["to_state"] for e in led.events(job.id)] == ["submitting"]


def test_the_ledger_waits_out_a_database_outage_and_carries_on(
    pg_url: str, pg_server: PgServer
) -> None:
    with PostgresLedger(pg_url) as led:
        job = led.ensure_job("h", 0, REQUEST, "rule")
        assert led.claim(job.id, "host-a", 30)
        with outage(pg_server, 2.0):
            start = time.monotonic()
            # Runs while the server is down: blocks until it is back, then commits once.
            waiter: list[Any] = []
            t = threading.Thread(
                target=lambda: waiter.append(
                    led.transition(
                        job.id, S.PENDING, S.SUBMITTING, count_attempt=True, holder="host-a"
                    )
                )
            )
            t.start()
            time.sleep(0.5)
            assert t.is_alive()
        t.join(timeout=60)
        assert time.monotonic() - start >= 1.5
        assert waiter and waiter[0].state is S.SUBMITTING and waiter[0].attempts == 1
        assert led.holder(job.id) == "host-a"  # 2 s of outage < 30 s of lease


def test_an_outage_longer_than_the_patience_raises_ledger_unavailable(
    pg_url: str, pg_server: PgServer
) -> None:
    with PostgresLedger(pg_url, reconnect_timeout=1.0) as led:
        job = led.ensure_job("h", 0, REQUEST, "rule")
        with outage(pg_server, 2.5), pytest.raises(LedgerUnavailable, match="did not come back"):
            led.get_job(job.id)
        assert led.get_job(job.id) == job  # and it works again once the server is back


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_and_retry_on_a_host_see_the_paths_its_daemon_registered(
    pg_url: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    with open_ledger(pg_url, state, roots={"team": "/Volumes/share/team"}) as daemon:
        daemon.put_source("/Volumes/share/team/a.prompt.toml", rule="team", status="active")
    with open_ledger(pg_url, tmp_path / "other", roots={"team": "/mnt/team"}) as other:
        assert [s.path for s in other.sources_under("/mnt/team")] == ["/mnt/team/a.prompt.toml"]
    with open_ledger(pg_url, state) as status_cmd:  # no rules given: the registered ones
        assert [s.path for s in status_cmd.sources_under("/Volumes/share/team")] == [
            "/Volumes/share/team/a.prompt.toml"
        ]
    with open_ledger(pg_url, tmp_path / "never-ran") as stranger:
        assert [s.path for s in stranger.sources_with_status("active")] == [
            "@team:/a.prompt.toml"
        ]  # shown as stored: host-independent, still readable


def test_registering_new_roots_follows_a_moved_folder_and_the_sqlite_ledger_stays_absolute(
    make_ledger: MakeLedger,
) -> None:
    led = make_ledger()
    led.register_roots("me", {"team": "/old/place"})
    led.put_source("/old/place/a.prompt.toml", rule="team", status="active")
    led.register_roots("me", {"team": "/new/place"})  # a reload: the share is mounted elsewhere
    if isinstance(led, Ledger):
        assert led.get_source("/old/place/a.prompt.toml") is not None
        assert led.get_source("/new/place/a.prompt.toml") is None
    else:
        assert led.get_source("/old/place/a.prompt.toml") is None
        moved = led.get_source("/new/place/a.prompt.toml")
        assert moved is not None and moved.path == "/new/place/a.prompt.toml"
