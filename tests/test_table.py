"""The job machine as data: every row of jobs.table is a legal move, every row commits through
the engine onto a real ledger file, and every outcome a step can meet has a row."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from harness import CANARY
from promptdrop.api import TaskState, ToApisClient
from promptdrop.jobs.engine import Engine, EngineOptions
from promptdrop.jobs.outcomes import Kind, Outcome
from promptdrop.jobs.table import TABLE, Effect, NoRow, Row, lookup
from promptdrop.ledger import LEDGER_NAME, JobState, Ledger
from promptdrop.ledger.states import ALLOWED, FINAL, check_transition

S = JobState
K = Kind
ROWS = sorted(TABLE.items(), key=lambda item: (item[0][0].value, item[0][1].value))
IDS = [f"{state}-{kind}".replace(" ", "_") for (state, kind), _ in ROWS]

# A legal road from pending to each state, so a row can be tried on a real ledger.
ROAD = {
    S.PENDING: [],
    S.WAITING: [S.WAITING],
    S.UPLOADING: [S.UPLOADING],
    S.SUBMITTING: [S.SUBMITTING],
    S.RUNNING: [S.SUBMITTING, S.RUNNING],
    S.DOWNLOADING: [S.SUBMITTING, S.RUNNING, S.DOWNLOADING],
    S.FAILED: [S.FAILED],
    S.AMBIGUOUS: [S.SUBMITTING, S.AMBIGUOUS],
}

# What each step of the engine can meet: the states it runs in, and the outcome kinds its
# interpret functions (or its local checks) can produce there.
STEPS = {
    "submit": (
        {S.PENDING, S.UPLOADING},
        {K.BUDGET_SPENT, K.READY},
    ),
    "upload": (
        {S.UPLOADING},
        {
            K.REFERENCE_UNREADABLE,
            K.REFERENCE_REJECTED,
            K.UPLOAD_FAILED,
            K.UNAUTHORIZED,
            K.QUOTA_EMPTY,
        },
    ),
    "answer": (
        {S.SUBMITTING},
        {
            K.CREATED,
            K.REJECTED,
            K.REFUSED_UPLOAD_URL,
            K.RATE_LIMITED,
            K.TRANSIENT,
            K.UNAUTHORIZED,
            K.QUOTA_EMPTY,
            K.LOST_ANSWER,
            K.INTERRUPTED,
        },
    ),
    "poll": (
        {S.RUNNING},
        {
            K.TASK_RUNNING,
            K.TASK_DONE,
            K.TASK_FAILED,
            K.TASK_GONE,
            K.TASK_GONE_CONFIRMED,
            K.RATE_LIMITED,
            K.TRANSIENT,
            K.UNAUTHORIZED,
            K.QUOTA_EMPTY,
        },
    ),
    "adopt": ({S.PENDING}, {K.ADOPTED}),
    "settle": (
        {S.AMBIGUOUS},
        {K.LOOKUP_FOUND, K.LOOKUP_MISSED, K.NOT_CREATED, K.LOOKUP_UNPROVEN, K.LOOKUP_FAILED},
    ),
    "download": (
        {S.DOWNLOADING},
        {K.RESULT_EXPIRED, K.DOWNLOAD_FAILED, K.WRITE_FAILED, K.WRITTEN, K.UNWANTED},
    ),
}


# A final job moves again only when asked for again, or (ambiguous) when looking its lost
# answer up by business id settles it.
_RETAKES = {
    K.WANTED_AGAIN,
    K.RESUBMIT_ALLOWED,
    K.LOOKUP_FOUND,
    K.LOOKUP_MISSED,
    K.NOT_CREATED,
    K.LOOKUP_UNPROVEN,
    K.LOOKUP_FAILED,
}


def _task(status: str = "completed") -> TaskState:
    return TaskState(
        id="task_img_table",
        status=status,  # type: ignore[arg-type]
        raw_status=status,
        progress=None,
        url="http://127.0.0.1:9/result.png",
        expires_at=2e9,
        error=None,
        raw={"id": "task_img_table", "status": status},
    )


def _sample(kind: Kind) -> Outcome:
    """An outcome of `kind` carrying every field its kind may carry."""
    return Outcome(
        kind,
        message="the sample message",
        reference="ref.png",
        task=_task(),
        budget=3,
        written=2,
        image_sha256="ab" * 32,
        image_format="png",
        urls=("http://127.0.0.1:9/upload.png",),
    )


@pytest.mark.parametrize(("key", "row"), ROWS, ids=IDS)
def test_every_row_is_a_move_the_ledger_allows(key: tuple[JobState, Kind], row: Row) -> None:
    state, _kind = key
    if row.next_state is not state:
        check_transition(state, row.next_state)
        assert row.next_state in ALLOWED[state]


@pytest.mark.parametrize(("key", "row"), ROWS, ids=IDS)
def test_every_row_says_what_happened_in_words(key: tuple[JobState, Kind], row: Row) -> None:
    """A move has a note, failures keep their reason, and a row that stays put moves nothing."""
    state, kind = key
    outcome = _sample(kind)
    if row.next_state is state:
        assert row.note == ""
        assert not row.effects & (Effect.SET_ERROR | Effect.FINISHED | Effect.COUNT_INTENT)
    else:
        assert row.detail(outcome).strip()
    if row.next_state in (S.FAILED, S.AMBIGUOUS) and row.next_state is not state:
        assert row.effects & Effect.SET_ERROR
        assert row.error_text(outcome).strip()
    if row.next_state in (S.FAILED, S.DONE):
        assert row.effects & Effect.FINISHED
    # Only the intent may spend money, and only on the way to submitting.
    assert bool(row.effects & Effect.COUNT_INTENT) == (row.next_state is S.SUBMITTING)
    if row.next_state is S.RUNNING and state is S.SUBMITTING:
        assert row.effects & Effect.RECORD_TASK


@pytest.mark.parametrize(("step", "states", "kinds"), [(k, *v) for k, v in STEPS.items()])
def test_every_outcome_a_step_can_meet_has_a_row(
    step: str, states: set[JobState], kinds: set[Kind]
) -> None:
    missing = [(state, kind) for state in states for kind in kinds if (state, kind) not in TABLE]
    assert missing == [], f"{step} can meet outcomes the table has no row for"


def test_an_outcome_without_a_row_is_a_bug_not_a_guess() -> None:
    with pytest.raises(NoRow, match="no move for task done in state pending"):
        lookup(S.PENDING, K.TASK_DONE)
    # A final job moves again only when a prompt file (or the rules) asks for it again.
    assert all(state not in FINAL or kind in _RETAKES for state, kind in TABLE)


@pytest.mark.parametrize(("key", "row"), ROWS, ids=IDS)
def test_walking_every_row_through_the_engine_commits_it_to_a_real_ledger(
    tmp_path: Path, key: tuple[JobState, Kind], row: Row
) -> None:
    state, kind = key
    outcome = _sample(kind)

    async def main() -> None:
        with Ledger(tmp_path / LEDGER_NAME) as ledger:
            async with ToApisClient(CANARY, "http://127.0.0.1:9") as client:
                engine = Engine(ledger, client, [], EngineOptions(retry_later=0.0))
                (job,) = ledger.take_up(
                    tmp_path / "walk.prompt.toml",
                    rule="walk",
                    content_sha256="c",
                    request_hash="h" * 64,
                    image_count=1,
                    request={"prompt": "walk", "references": []},
                )
                for step in ROAD[state]:
                    job = ledger.transition(job.id, job.state, step)
                before = ledger.get_job(job.id)
                moved = engine._commit(before, outcome)
                after = ledger.get_job(job.id)
                assert after.state is row.next_state == moved.state
                if row.next_state is not state:
                    last = ledger.events(job.id)[-1]
                    assert (last["from_state"], last["to_state"]) == (state, row.next_state)
                    assert last["detail"] == row.detail(outcome)
                if row.effects & Effect.SET_ERROR:
                    assert after.error == row.error_text(outcome)
                if row.effects & Effect.RECORD_TASK:
                    assert after.task_id == "task_img_table"
                if row.effects & Effect.RECORD_RESULT:
                    assert after.result_url == _task().url
                if row.effects & Effect.RECORD_IMAGE:
                    assert after.image_sha256 == "ab" * 32
                if row.effects & Effect.COUNT_INTENT:
                    assert after.attempts == before.attempts + 1
                assert (engine.pause is not None) == bool(row.effects & Effect.PAUSE)
                await engine.drain()

    asyncio.run(main())
