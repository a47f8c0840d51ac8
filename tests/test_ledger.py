"""The ledger on real SQLite files: durability settings, migrations, guarded job transitions,
crash recovery (including a SIGKILLed process), sources, outputs, uploads, budgets, state dir.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from promptdrop.ledger import (
    ALLOWED,
    FINAL,
    LEDGER_NAME,
    IllegalTransition,
    Job,
    JobState,
    Ledger,
    Recovery,
    StaleTransition,
    default_state_dir,
)
from promptdrop.ledger.migrations import MIGRATIONS, migrate

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


@pytest.fixture
def ledger(tmp_path: Path, clock: FakeClock) -> Iterator[Ledger]:
    led = Ledger(tmp_path / LEDGER_NAME, clock=clock)
    yield led
    led.close()


def drive(led: Ledger, job: Job, target: JobState) -> Job:
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
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / LEDGER_NAME
    with Ledger(path, clock=clock) as led:
        job = led.ensure_job("h1", 0, REQUEST, "rule")
        first = list(led.db.query("SELECT name, applied_at FROM migrations ORDER BY name"))
    assert [r["name"] for r in first] == [name for name, _ in MIGRATIONS]

    with Ledger(path, clock=clock) as led:
        again = list(led.db.query("SELECT name, applied_at FROM migrations ORDER BY name"))
        assert again == first  # same rows, same timestamps: nothing re-applied
        assert migrate(led.db) == []
        assert led.get_job(job.id) == job  # data survives the reopen


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


def test_ensure_job_is_idempotent_per_request_and_index(ledger: Ledger, clock: FakeClock) -> None:
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


def test_ensure_job_makes_one_job_per_image_index(ledger: Ledger) -> None:
    jobs = [ledger.ensure_job("h1", i, REQUEST, "rule") for i in (2, 0, 1)]
    assert len({j.id for j in jobs}) == 3
    assert [j.image_index for j in ledger.jobs_for_request("h1")] == [0, 1, 2]
    assert ledger.ensure_job("h2", 0, REQUEST, "rule").id not in {j.id for j in jobs}
    assert ledger.find_job("h1", 3) is None
    assert ledger.find_job("nope", 0) is None


def test_jobs_filters_by_state_oldest_first(ledger: Ledger) -> None:
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
    ledger: Ledger, clock: FakeClock, src: JobState, dst: JobState
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
    ledger: Ledger, clock: FakeClock
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


def test_an_unknown_field_is_refused_before_anything_changes(ledger: Ledger) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    with pytest.raises(ValueError, match="generation"):
        ledger.transition(job.id, S.PENDING, S.SUBMITTING, generation=7)
    assert ledger.get_job(job.id) == job
    assert ledger.events(job.id) == []


def test_a_transition_sets_the_given_fields(ledger: Ledger) -> None:
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


def test_two_ledgers_on_one_file_cannot_move_a_job_twice(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_NAME
    with Ledger(path) as daemon, Ledger(path) as retry_cmd:
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


def test_count_attempt_is_committed_together_with_the_move(ledger: Ledger) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    ledger.transition(job.id, S.PENDING, S.SUBMITTING, count_attempt=True, intent_at=1.0)
    # Read through a separate connection: both are durable once transition() returns.
    assert raw_row(ledger.path, "SELECT state, attempts FROM jobs WHERE id = ?", (job.id,)) == (
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
    ledger: Ledger, final: JobState
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


def test_a_non_final_return_to_pending_keeps_the_generation(ledger: Ledger) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    job = ledger.transition(job.id, S.PENDING, S.UPLOADING)
    job = ledger.transition(job.id, S.UPLOADING, S.PENDING)
    job = ledger.transition(job.id, S.PENDING, S.SUBMITTING)
    job = ledger.transition(job.id, S.SUBMITTING, S.PENDING)
    assert job.generation == 0


def test_update_running_records_the_poll_only_for_running_jobs(
    ledger: Ledger, clock: FakeClock
) -> None:
    job = drive(ledger, ledger.ensure_job("h", 0, REQUEST, "rule"), S.RUNNING)
    clock.now += 3
    ledger.update_running(job.id, '{"status": "processing"}')
    assert raw_row(ledger.path, "SELECT task_json FROM jobs WHERE id = ?", (job.id,)) == (
        '{"status": "processing"}',
    )
    assert ledger.get_job(job.id).updated_at == clock.now
    other = ledger.ensure_job("h", 1, REQUEST, "rule")
    ledger.update_running(other.id, '{"status": "x"}')
    assert raw_row(ledger.path, "SELECT task_json FROM jobs WHERE id = ?", (other.id,)) == (None,)


# History and budgets ------------------------------------------------------------------------


def test_job_events_keep_the_history_in_order(ledger: Ledger, clock: FakeClock) -> None:
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
    ledger: Ledger, clock: FakeClock
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
    ledger: Ledger, clock: FakeClock
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


def test_a_note_on_a_submitting_job_is_not_counted_as_another_submission(
    ledger: Ledger,
) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    ledger.transition(job.id, S.PENDING, S.SUBMITTING, count_attempt=True)
    ledger.note_event(job.id, "waiting for the answer")
    assert ledger.submissions_since(0.0) == 1
    assert ledger.submissions_since(0.0, rule="rule") == 1


# Recovery -----------------------------------------------------------------------------------


def test_recover_repairs_every_interrupted_step(ledger: Ledger) -> None:
    by_state = {
        st: drive(ledger, ledger.ensure_job("h", i, REQUEST, "rule"), st)
        for i, st in enumerate(JobState)
    }
    result = ledger.recover()
    assert result == Recovery(
        ambiguous=1, uploads_restarted=1, downloads_restarted=1, running=2
    )

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


def test_recover_on_an_empty_ledger_finds_nothing(ledger: Ledger) -> None:
    assert ledger.recover() == Recovery(0, 0, 0, 0)


_CRASHING_CHILD = """
import sys, time
from pathlib import Path
from promptdrop.ledger import JobState, Ledger

led = Ledger(Path(sys.argv[1]))
job = led.ensure_job("crash", 0, {"prompt": "x"}, "rule")
led.transition(job.id, JobState.PENDING, JobState.SUBMITTING, count_attempt=True, intent_at=1.0)
print(job.id, flush=True)
time.sleep(60)
"""


def test_a_process_killed_mid_submit_leaves_a_sound_ledger_and_an_ambiguous_job(
    tmp_path: Path,
) -> None:
    path = tmp_path / LEDGER_NAME
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_CHILD, str(path)],
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

    with Ledger(path) as led:
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


def test_sources_are_stored_updated_and_read_back(ledger: Ledger, tmp_path: Path) -> None:
    p = tmp_path / "cats" / "tabby.prompt.toml"
    assert ledger.get_source(p) is None
    ledger.put_source(p, rule="r", status="active", content_sha256="c1", request_hash="h1",
                      image_count=2)
    src = ledger.get_source(p)
    assert src is not None
    assert (src.path, src.rule, src.status) == (str(p), "r", "active")
    assert (src.content_sha256, src.request_hash, src.image_count, src.error) == (
        "c1", "h1", 2, None,
    )
    assert ledger.get_source(str(p)) == src  # str and Path name the same row

    ledger.put_source(p, rule="r", status="invalid", content_sha256="c2", error="line 3: ...")
    updated = ledger.get_source(p)
    assert updated is not None
    assert (updated.status, updated.content_sha256, updated.request_hash, updated.error) == (
        "invalid", "c2", None, "line 3: ...",
    )
    assert len(ledger.sources_under(tmp_path)) == 1  # replaced, not duplicated

    ledger.set_source_status(p, "deleted")
    gone = ledger.get_source(p)
    assert gone is not None
    assert (gone.status, gone.error, gone.content_sha256) == ("deleted", None, "c2")


def test_sources_for_request_lists_active_ones_by_default(ledger: Ledger) -> None:
    ledger.put_source("/w/b.prompt.toml", rule="r", status="active", request_hash="h")
    ledger.put_source("/w/a.prompt.toml", rule="r", status="active", request_hash="h")
    ledger.put_source("/w/c.prompt.toml", rule="r", status="deleted", request_hash="h")
    ledger.put_source("/w/d.prompt.toml", rule="r", status="active", request_hash="other")
    assert [s.path for s in ledger.sources_for_request("h")] == [
        "/w/a.prompt.toml", "/w/b.prompt.toml",
    ]
    assert [s.path for s in ledger.sources_for_request("h", status="deleted")] == [
        "/w/c.prompt.toml",
    ]
    assert ledger.sources_for_request("none") == []


def test_sources_under_a_folder_never_match_a_sibling_with_a_common_prefix(
    ledger: Ledger,
) -> None:
    for p in ("/a/b/x.prompt.toml", "/a/b/deep/y.prompt.toml", "/a/bc/z.prompt.toml",
              "/a/b.prompt.toml", "/a/b_c/w.prompt.toml", "/z/b/x.prompt.toml"):
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


def test_outputs_are_recorded_found_and_replaced(ledger: Ledger) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    assert ledger.output_at("/w/cat.png") is None
    ledger.record_output("/w/cat.png", job=job, source_path="/w/cat.prompt.toml",
                         sha256="s1", fmt="png")
    out = ledger.output_at(Path("/w/cat.png"))
    assert out is not None
    assert (out.path, out.job_id, out.generation, out.source_path) == (
        "/w/cat.png", job.id, 0, "/w/cat.prompt.toml",
    )
    assert (out.sha256, out.format, out.superseded) == ("s1", "png", False)

    ledger.record_output("/w/cat.png", job=job, source_path=None, sha256="s2", fmt=None)
    again = ledger.output_at("/w/cat.png")
    assert again is not None
    assert (again.sha256, again.source_path, again.format) == ("s2", None, None)
    assert len(ledger.outputs_for_job(job.id)) == 1


def test_moving_an_output_aside_marks_it_superseded(ledger: Ledger) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    ledger.record_output("/w/cat.png", job=job, source_path="/w/cat.prompt.toml",
                         sha256="s1", fmt="png")
    ledger.move_output("/w/cat.png", "/w/cat (1).png")
    assert ledger.output_at("/w/cat.png") is None
    moved = ledger.output_at("/w/cat (1).png")
    assert moved is not None
    assert (moved.sha256, moved.superseded) == ("s1", True)
    ledger.move_output("/w/not-ours.png", "/w/elsewhere.png")  # unknown file: no record made
    assert ledger.output_at("/w/elsewhere.png") is None


def test_moving_an_output_onto_the_name_of_a_deleted_old_version_replaces_that_record(
    ledger: Ledger,
) -> None:
    job = ledger.ensure_job("h", 0, REQUEST, "rule")
    ledger.record_output("/w/cat.png", job=job, source_path="/w/c.prompt.toml", sha256="s1",
                         fmt="png")
    ledger.move_output("/w/cat.png", "/w/cat (1).png")  # version 1 set aside; user deletes it
    ledger.record_output("/w/cat.png", job=job, source_path="/w/c.prompt.toml", sha256="s2",
                         fmt="png")
    ledger.move_output("/w/cat.png", "/w/cat (1).png")  # the free name is chosen again
    moved = ledger.output_at("/w/cat (1).png")
    assert moved is not None
    assert (moved.sha256, moved.superseded) == ("s2", True)


def test_output_for_only_sees_the_current_generation(ledger: Ledger) -> None:
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


def test_the_upload_cache_remembers_and_forgets_urls(ledger: Ledger) -> None:
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


def test_state_dir_defaults_to_local_state_under_home(clean_env: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
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
