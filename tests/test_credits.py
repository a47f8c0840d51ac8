"""Daily credits: a task's price from the rules file's [prices], the day's spend, the decision
to send, the rules file's checks, and the daemon stopping at the credit limit or holding an
unpriced task (the engine in one process, the emulator over TCP, an injected clock)."""

from __future__ import annotations

import asyncio
import io
import json
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from PIL import Image

from harness import CANARY
from promptdrop.commands.status import budget_rows, print_status
from promptdrop.config.prices import Prices
from promptdrop.emulator import Emulator
from promptdrop.jobs import credits, notes
from promptdrop.jobs.core import EngineStatus
from promptdrop.jobs.credits import Hold, Room, Verdict
from promptdrop.ledger import LEDGER_NAME, Budget, BudgetSpent, JobState, Ledger
from promptdrop.outputs import note_path
from promptdrop.service.metrics import _EngineCollector
from promptdrop.service.runner import WatchOptions, run
from promptdrop.spec import RulesFile, SpecError, json_schema, read_rules
from test_budget import (
    FAST,
    Clock,
    _engine,
    _made,
    _prompts,
    _rule,
    _submitted,
    _take_up,
    _until,
)

S = JobState
PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image-preview"
OFFICIAL = "gemini-2.5-flash-image-official"
PRICES: Prices = {PRO: {"1K": 24.0, "2K": 24.0, "4K": 48.0}, FLASH: {"1K": 8.0}, OFFICIAL: 5.0}


# --- the pure arithmetic ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "resolution", "price"),
    [
        (PRO, "4K", 48.0),
        (PRO, "2K", 24.0),
        (PRO, None, 24.0),  # no resolution: the model's default, 1K
        ("nano-banana-pro", "4K", 48.0),  # an alias means its model
        (FLASH, None, 8.0),
        ("nano-banana", "1K", 8.0),
        (None, None, 8.0),  # no model: the default model
        (OFFICIAL, None, 5.0),  # no resolutions: one number
        (OFFICIAL, "1K", 5.0),  # ...whatever is asked
        ("gemini-3-pro-image-preview-official", "1K", None),  # not priced
        (PRO, "0.5K", None),  # a resolution the table has no price for
        ("dall-e", None, None),  # not a model at all
    ],
)
def test_a_tasks_price_is_its_models_price_at_its_resolution(
    model: str | None, resolution: str | None, price: float | None
) -> None:
    assert credits.job_price(PRICES, model, resolution) == price


@pytest.mark.parametrize(
    ("request_", "resolution", "price"),
    [
        ({"model": PRO, "resolution": "4K"}, "4K", 48.0),
        ({"model": PRO, "metadata": {"resolution": "4K"}}, "4K", 48.0),  # only in the metadata
        ({"model": PRO, "metadata": {}}, None, 24.0),  # stored before resolutions: default
        ({"model": PRO}, None, 24.0),
        ({"model": FLASH, "resolution": None, "metadata": {"orientation": "portrait"}}, None, 8.0),
        ({"prompt": "no model at all"}, None, 8.0),
    ],
)
def test_a_stored_request_is_priced_defensively(
    request_: dict[str, Any], resolution: str | None, price: float
) -> None:
    assert credits.request_resolution(request_) == resolution
    assert credits.request_price(PRICES, request_) == price


@pytest.mark.parametrize(
    ("limit", "spent", "left"),
    [
        (None, 0.0, None),
        (None, 500.0, None),
        (40.0, 0.0, 40.0),
        (40.0, 16.0, 24.0),
        (40.0, 40.0, 0.0),
        (40.0, 56.0, 0.0),  # a limit lowered under today's spending: no room, never less
        (0.3, 0.1, pytest.approx(0.2)),
    ],
)
def test_the_credits_left_are_the_limit_less_what_was_spent_today(
    limit: float | None, spent: float, left: Any
) -> None:
    assert credits.credits_left(limit, spent) == left


@pytest.mark.parametrize(
    ("tasks", "limit", "left", "price", "expected"),
    [
        (None, None, None, None, Verdict.GO),  # no limits: an unpriced task goes
        (None, None, None, 48.0, Verdict.GO),
        (3, None, None, None, Verdict.GO),  # only a task budget: prices do not matter
        (0, None, None, None, Verdict.TASKS_SPENT),
        (None, 40.0, 40.0, 24.0, Verdict.GO),
        (None, 40.0, 24.0, 24.0, Verdict.GO),  # exactly what is left
        (None, 40.0, 16.0, 24.0, Verdict.CREDITS_SPENT),
        (None, 40.0, 0.0, 0.0, Verdict.GO),  # a free task always fits
        (None, 40.0, 40.0, None, Verdict.UNPRICED),  # never sent unpriced
        (0, 40.0, 40.0, None, Verdict.UNPRICED),  # ...and tomorrow does not help it
        (None, 40.0, 40.0, 48.0, Verdict.TOO_DEAR),  # no day could pay for it
        (0, 40.0, 40.0, 8.0, Verdict.TASKS_SPENT),  # both set: both must have room
        (5, 40.0, 4.0, 8.0, Verdict.CREDITS_SPENT),
        (1, 40.0, 40.0, 8.0, Verdict.GO),
        (None, 0.3, 0.3 - 0.1, 0.2, Verdict.GO),  # 0.19999…: float sums still fit
    ],
)
def test_a_task_goes_only_when_both_limits_have_room_and_it_has_a_price(
    tasks: int | None,
    limit: float | None,
    left: float | None,
    price: float | None,
    expected: Verdict,
) -> None:
    assert credits.verdict(tasks, limit, left, price) is expected


def test_the_room_after_a_task_has_one_task_and_its_price_less() -> None:
    room = Room(tasks=2, credit_limit=40.0, credits=30.0)
    assert room.after(24.0) == Room(1, 40.0, 6.0)
    assert room.after(24.0).verdict(8.0) is Verdict.CREDITS_SPENT
    assert room.after(24.0).after(24.0) == Room(0, 40.0, 0.0)
    assert Room().after(None) == Room()


@pytest.mark.parametrize(
    ("model", "resolution", "key"),
    [
        (PRO, "4K", '"gemini-3-pro-image-preview" = { "4K" = CREDITS }'),
        ("nano-banana-pro", None, '"gemini-3-pro-image-preview" = { "1K" = CREDITS }'),
        (OFFICIAL, None, '"gemini-2.5-flash-image-official" = CREDITS'),
    ],
)
def test_the_missing_price_is_named_as_it_is_written_in_prices(
    model: str, resolution: str | None, key: str
) -> None:
    assert credits.price_key(model, resolution) == key


# --- the ledger's sum --------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _price(request: Any) -> float:
    return credits.request_price(PRICES, request) or 0.0


def test_the_days_credits_are_the_prices_of_its_counted_submissions(tmp_path: Path) -> None:
    clock = _Clock()
    with Ledger(tmp_path / LEDGER_NAME, clock=clock) as ledger:
        old = ledger.ensure_job("h0", 1, {"model": PRO, "resolution": "4K"}, "r")
        ledger.transition(old.id, S.PENDING, S.SUBMITTING)  # yesterday: not counted
        clock.now = 2000.0
        a = ledger.ensure_job("h1", 1, {"model": PRO, "resolution": "4K"}, "r")
        b = ledger.ensure_job("h2", 1, {"model": FLASH, "metadata": {}}, "r")
        c = ledger.ensure_job("h3", 1, {"model": PRO}, "r")
        other = ledger.ensure_job("h4", 1, {"model": PRO}, "other")
        ledger.transition(a.id, S.PENDING, S.SUBMITTING)
        ledger.transition(a.id, S.SUBMITTING, S.RUNNING)  # 48
        ledger.transition(b.id, S.PENDING, S.SUBMITTING)
        ledger.transition(b.id, S.SUBMITTING, S.PENDING, detail="rate limited")  # given back
        ledger.transition(b.id, S.PENDING, S.SUBMITTING)  # 8, sent again
        ledger.transition(c.id, S.PENDING, S.SUBMITTING)
        ledger.transition(c.id, S.SUBMITTING, S.FAILED, error="refused")  # given back
        ledger.transition(other.id, S.PENDING, S.SUBMITTING)  # another rule's

        assert ledger.credits_since(1500.0, "r", _price) == 56.0
        assert ledger.credits_since(1500.0, "other", _price) == 24.0
        assert ledger.credits_since(0.0, "r", _price) == 104.0  # yesterday's 4K too
        assert ledger.spent_since(1500.0, "r") == 2  # the same submissions daily_budget counts


def test_an_intent_commits_only_while_its_price_fits_the_days_credits(tmp_path: Path) -> None:
    """The check made inside the commit: whoever races for the last credits cannot overspend."""
    with Ledger(tmp_path / LEDGER_NAME, clock=_Clock()) as ledger:
        jobs = [ledger.ensure_job(f"h{i}", 1, {"model": PRO}, "r") for i in range(3)]

        def cap(price: float) -> Budget:
            return Budget("r", 0.0, None, credits=50.0, price=price, price_of=_price)

        ledger.transition(jobs[0].id, S.PENDING, S.SUBMITTING, budget=cap(24.0))
        ledger.transition(jobs[1].id, S.PENDING, S.SUBMITTING, budget=cap(24.0))  # 48 of 50
        with pytest.raises(BudgetSpent):
            ledger.transition(jobs[2].id, S.PENDING, S.SUBMITTING, budget=cap(24.0))
        assert ledger.get_job(jobs[2].id).state is S.PENDING  # nothing committed
        ledger.transition(jobs[1].id, S.SUBMITTING, S.PENDING, detail="429: nothing created")
        ledger.transition(jobs[2].id, S.PENDING, S.SUBMITTING, budget=cap(24.0))  # room again
        assert ledger.credits_since(0.0, "r", _price) == 48.0


# --- the rules file ----------------------------------------------------------------------------

_RULE = '\n[[rules]]\nname = "drop"\npath = "d"\n'

GOOD = [
    pytest.param(
        '[prices]\n"gemini-3-pro-image-preview" = { "1K" = 24, "2K" = 24, "4K" = 48 }\n'
        '"nano-banana" = { "1K" = 8 }      # an alias is accepted and means its model\n',
        {PRO: {"1K": 24.0, "2K": 24.0, "4K": 48.0}, FLASH: {"1K": 8.0}},
        id="the_briefs_example",
    ),
    pytest.param(
        '[prices]\n"gemini-2.5-flash-image-official" = 5\n',
        {OFFICIAL: 5.0},
        id="one_number_for_a_model_without_resolutions",
    ),
    pytest.param(
        '[prices]\n"nano-banana-official" = 2.5\n', {OFFICIAL: 2.5}, id="alias_with_a_number"
    ),
    pytest.param(
        '[prices."gemini-3.1-flash-image-preview"]\n"0.5K" = 2\n"4K" = 30\n',
        {"gemini-3.1-flash-image-preview": {"0.5K": 2.0, "4K": 30.0}},
        id="a_sub_table_and_a_partial_price_list",
    ),
    pytest.param('[prices]\n"nano-banana" = { "1K" = 0 }\n', {FLASH: {"1K": 0.0}}, id="free"),
    pytest.param("", {}, id="no_prices"),
]


@pytest.mark.parametrize(("text", "prices"), GOOD)
def test_a_good_prices_table_is_read_with_canonical_model_ids(
    tmp_path: Path, text: str, prices: Prices
) -> None:
    path = tmp_path / "r.rules.toml"
    path.write_text(text + _RULE + "daily_credits = 40\n")
    rules = read_rules(path)
    assert rules.prices == prices
    assert rules.rules[0].daily_credits == 40.0
    jsonschema.Draft202012Validator(json_schema("rules")).validate(tomllib.loads(path.read_text()))


BAD = [
    pytest.param(
        '[prices]\n"dall-e" = { "1K" = 1 }\n',
        2,
        "unknown model 'dall-e'; the models are: gemini-2.5-flash-image-preview (nano-banana)",
        True,
        id="unknown_model",
    ),
    pytest.param(
        '[prices]\n"nano-banan" = { "1K" = 1 }\n',
        2,
        "unknown model 'nano-banan'; did you mean 'nano-banana'?",
        True,
        id="near_miss",
    ),
    pytest.param(
        '[prices]\n"nano-banana" = { "4K" = 8 }\n',
        2,
        "gemini-2.5-flash-image-preview (nano-banana) has no resolution '4K' "
        "(gemini-3-pro-image-preview (nano-banana-pro),",
        True,
        id="resolution_the_model_does_not_offer",
    ),
    pytest.param(
        '[prices]\n"nano-banana" = { "1K" = 8, "0.5K" = 1 }\n',
        2,
        "has no resolution '0.5K' (gemini-3.1-flash-image-preview offer it); it offers 1K",
        True,
        id="half_k_for_nano_banana",
    ),
    pytest.param(
        '[prices]\n"gemini-3.1-flash-image-preview" = { 0.5K = 1 }\n',
        2,
        'write "0.5K" in quotes',
        True,
        id="unquoted_half_k",
    ),
    pytest.param(
        '[prices]\n"nano-banana" = 8\n',
        2,
        'needs a table of its resolutions (1K) with credits per task, like "nano-banana" = '
        '{ "1K" = 10 }; it is 8',
        True,
        id="number_for_a_model_with_resolutions",
    ),
    pytest.param(
        '[prices]\n"gemini-2.5-flash-image-official" = { "1K" = 5 }\n',
        2,
        "has no resolutions: price it with one number, 0 or more",
        True,
        id="table_for_a_model_without_resolutions",
    ),
    pytest.param(
        '[prices]\n"nano-banana-pro" = { "4K" = -1 }\n',
        2,
        "gemini-3-pro-image-preview (nano-banana-pro) at 4K must be a number of credits, "
        "0 or more; it is -1",
        True,
        id="negative",
    ),
    pytest.param(
        '[prices]\n"nano-banana-pro" = { "4K" = "48" }\n',
        2,
        'at 4K must be a number of credits, 0 or more; it is the text "48"',
        True,
        id="quoted_number",
    ),
    pytest.param(
        '[prices]\n"nano-banana-pro" = { "4K" = true }\n',
        2,
        "at 4K must be a number of credits, 0 or more; it is true",
        True,
        id="boolean",
    ),
    pytest.param(
        '[prices]\n"nano-banana-pro" = { "4K" = inf }\n',
        2,
        "at 4K must be a number of credits, 0 or more; it is inf",
        False,  # JSON has no infinity: a schema cannot refuse it
        id="infinite",
    ),
    pytest.param(
        '[prices]\n"nano-banana" = { "1K" = 8 }\n"gemini-2.5-flash-image-preview" = { "1K" = 9 }\n',
        3,
        '"nano-banana" and "gemini-2.5-flash-image-preview" are the same model '
        "(gemini-2.5-flash-image-preview); price it once",
        False,  # a JSON Schema cannot say that two keys mean one model
        id="alias_and_id_both",
    ),
    pytest.param(
        "prices = 8\n",
        1,
        "prices must be a table ([prices]) of model names",
        True,
        id="not_a_table",
    ),
    pytest.param(
        '[prise]\n"nano-banana" = { "1K" = 8 }\n',
        1,
        "unknown key 'prise': did you mean 'prices'?",
        True,
        id="misspelt_table",
    ),
]


@pytest.mark.parametrize(("text", "line", "message", "schema_refuses"), BAD)
def test_a_bad_prices_table_is_refused_where_it_is_written_saying_what_is_allowed(
    tmp_path: Path, text: str, line: int, message: str, schema_refuses: bool
) -> None:
    path = tmp_path / "r.rules.toml"
    path.write_text(text + _RULE)
    with pytest.raises(SpecError) as caught:
        read_rules(path)
    [problem] = caught.value.problems
    assert message in problem.message
    assert problem.line == line
    schema = jsonschema.Draft202012Validator(json_schema("rules"))
    assert schema.is_valid(tomllib.loads(path.read_text())) is not schema_refuses


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"40"', 'it is the text "40" (write daily_credits = 40 without quotes)'),
        ("0", "daily_credits must be a number of credits greater than 0"),
        ("-5", "it is -5"),
        ("true", "it is true"),
        ("nan", "daily_credits must be a number of credits greater than 0"),
        ("inf", "daily_credits must be a number of credits greater than 0"),
    ],
)
def test_a_bad_daily_credits_is_refused_in_our_words(
    tmp_path: Path, value: str, message: str
) -> None:
    path = tmp_path / "r.rules.toml"
    path.write_text(_RULE + f"daily_credits = {value}\n")
    with pytest.raises(SpecError) as caught:
        read_rules(path)
    [problem] = caught.value.problems
    assert problem.message.startswith("rule 'drop': ")
    assert message in problem.message
    assert problem.line == 5


def test_a_rules_file_built_in_code_normalises_its_prices_too() -> None:
    rules = RulesFile.model_validate(
        {"rules": [{"name": "a", "path": "d"}], "prices": {"nano-banana-pro": {"4K": 48}}}
    )
    assert rules.prices == {PRO: {"4K": 48.0}}
    with pytest.raises(ValueError, match="unknown model"):
        RulesFile.model_validate({"rules": [{"name": "a", "path": "d"}], "prices": {"x": 1}})


# --- the daemon against the emulator ---------------------------------------------------------

_FLASH_8: Prices = {FLASH: {"1K": 8.0}}


def _credit_notes(paths: list[Path]) -> list[Path]:
    return [p for p in paths if note_path(p).exists() and "credits" in note_path(p).read_text()]


def test_daily_credits_stop_submission_when_the_next_task_would_go_over_and_the_note_says_so(
    tmp_path: Path, emulator: Emulator
) -> None:
    """20 credits at 8 a task: two go (16), the third would need 8 of the 4 left."""
    folder = tmp_path / "drop"
    paths = _prompts(folder, 4)
    rule = _rule(folder, None).model_copy(update={"daily_credits": 20.0})
    clock = Clock()

    async def main() -> None:
        async with _engine(tmp_path / "state", emulator, rule, clock, prices=_FLASH_8) as engine:
            await _take_up(engine, rule)
            await engine.wait_idle()
            assert engine.ledger.state_counts() == {"done": 2, "waiting": 2}
            assert engine.credits_spent(rule.name) == 16.0
            assert engine.credits_left(rule.name) == 4.0
            assert engine.status().credits_left == {rule.name: 4.0}

            clock.tomorrow()  # a new day's 20 credits: the other two
            await _until(lambda: len(_made(paths)) == 4, "the second day's images")
            await engine.wait_idle()

    asyncio.run(main())
    assert _submitted(emulator) == 4
    assert not any(note_path(p).exists() for p in paths)


def test_the_credit_note_and_status_name_the_credits(tmp_path: Path, emulator: Emulator) -> None:
    folder = tmp_path / "drop"
    paths = _prompts(folder, 3)
    rule = _rule(folder, None).model_copy(update={"daily_credits": 20.0})
    clock = Clock()

    async def main() -> None:
        async with _engine(tmp_path / "state", emulator, rule, clock, prices=_FLASH_8) as engine:
            await _take_up(engine, rule)
            await engine.wait_idle()

    asyncio.run(main())
    assert _submitted(emulator) == 2
    [waiting] = _credit_notes(paths)
    assert waiting not in _made(paths)
    text = note_path(waiting).read_text()
    assert "daily limit of 20 credits has only 4 credits left today" in text
    assert "this file's image costs 8 credits" in text
    assert "raise daily_credits" in text and "Nothing was sent or paid" in text
    assert "daily budget" not in text

    rules = RulesFile(rules=[rule], prices=_FLASH_8)
    with Ledger(tmp_path / "state" / LEDGER_NAME) as ledger:
        assert budget_rows(ledger, rules, clock.now) == [
            {
                "rule": rule.name,
                "tasks_today": 2,
                "daily_budget": None,
                "credits_today": 16.0,
                "daily_credits": 20.0,
            }
        ]
        out = io.StringIO()
        print_status(ledger, out, as_json=False, rules=rules, now=clock.now)
        lines = out.getvalue().splitlines()
        assert lines[1] == f"today {rule.name}: 2 tasks, 16 of 20 credits"
        [held] = [line for line in lines if line.startswith("waiting")]
        assert "the daily credits of 20 are spent (4 left, the task costs 8)" in held
        out = io.StringIO()
        print_status(ledger, out, as_json=True, rules=rules, now=clock.now)
        assert json.loads(out.getvalue())["budgets"][0]["credits_today"] == 16.0


def test_with_both_limits_set_the_task_budget_can_be_the_one_that_stops(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    paths = _prompts(folder, 3)
    rule = _rule(folder, 1).model_copy(update={"daily_credits": 100.0})
    clock = Clock()

    async def main() -> None:
        async with _engine(tmp_path / "state", emulator, rule, clock, prices=_FLASH_8) as engine:
            await _take_up(engine, rule)
            await engine.wait_idle()
            assert engine.ledger.state_counts() == {"done": 1, "waiting": 2}

    asyncio.run(main())
    assert _submitted(emulator) == 1
    texts = [note_path(p).read_text() for p in paths if note_path(p).exists()]
    assert len(texts) == 2
    assert all("daily budget of 1 image is used up" in t for t in texts)


def test_many_jobs_racing_for_the_last_credits_submit_only_what_fits(
    tmp_path: Path, emulator: Emulator
) -> None:
    """Each job awaits an upload between its first look at the credits and its intent: only
    the check made with the commit keeps the sum under the limit."""
    folder = tmp_path / "drop"
    folder.mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (40, 200, 40)).save(buf, "PNG")
    (folder / "style.png").write_bytes(buf.getvalue())
    paths = _prompts(folder, 8, 'references = ["style.png"]\n')
    rule = _rule(folder, None).model_copy(update={"daily_credits": 20.0})
    clock = Clock()

    async def main() -> None:
        async with _engine(tmp_path / "state", emulator, rule, clock, prices=_FLASH_8) as engine:
            await _take_up(engine, rule)
            await engine.wait_idle()
            assert engine.ledger.state_counts() == {"done": 2, "waiting": 6}
            assert engine.credits_spent(rule.name) == 16.0

    asyncio.run(main())
    assert _submitted(emulator) == 2
    assert len(_credit_notes(paths)) == 6


def test_an_unpriced_task_is_held_with_a_note_naming_the_price_and_sent_once_it_is_added(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    paths = _prompts(folder, 2)
    rule = _rule(folder, None).model_copy(update={"daily_credits": 100.0})
    clock = Clock()
    only_pro: Prices = {PRO: {"1K": 24.0}}

    async def main() -> None:
        async with _engine(tmp_path / "state", emulator, rule, clock, prices=only_pro) as engine:
            await _take_up(engine, rule)
            await engine.wait_idle()
            assert engine.ledger.state_counts() == {"waiting": 2}  # held: not sent, not failed
            assert emulator.stats()["submit_requests"] == 0  # zero API calls to submit

            clock.tomorrow()  # a new day does not help: it still has no price
            assert engine.recheck_budgets() == 0
            assert _submitted(emulator) == 0
            for path in paths:
                text = note_path(path).read_text()
                assert "no price for gemini-2.5-flash-image-preview at 1K" in text
                assert '"gemini-2.5-flash-image-preview" = { "1K" = CREDITS }' in text
                assert "[prices]" in text and "Nothing was sent or paid" in text

            # The price added (a reload): the held files start at once.
            engine.update_rules([rule], {**only_pro, **_FLASH_8})
            await _until(lambda: len(_made(paths)) == 2, "the images once priced")
            await engine.wait_idle()
            assert engine.credits_spent(rule.name) == 16.0

    asyncio.run(main())
    assert _submitted(emulator) == 2
    assert not any(note_path(p).exists() for p in paths)


def test_a_task_dearer_than_a_whole_days_credits_is_held_and_says_why(
    tmp_path: Path, emulator: Emulator
) -> None:
    folder = tmp_path / "drop"
    [path] = _prompts(folder, 1)
    rule = _rule(folder, None).model_copy(update={"daily_credits": 5.0})
    clock = Clock()

    async def main() -> None:
        async with _engine(tmp_path / "state", emulator, rule, clock, prices=_FLASH_8) as engine:
            await _take_up(engine, rule)
            await engine.wait_idle()
            assert engine.ledger.state_counts() == {"waiting": 1}

    asyncio.run(main())
    assert _submitted(emulator) == 0
    text = note_path(path).read_text()
    assert "costs 8 credits, more than this folder's daily limit of 5 credits" in text
    assert "cannot start on any day" in text


@pytest.mark.parametrize(
    ("prices", "code", "states"),
    [
        (_FLASH_8, 0, [S.DONE, S.DONE, S.WAITING]),  # waits for tomorrow's credits: as asked
        ({PRO: {"1K": 24.0}}, 1, [S.WAITING, S.WAITING, S.WAITING]),  # held for a price
    ],
    ids=["credits_spent", "unpriced"],
)
def test_once_exits_1_only_when_a_file_is_held_for_a_missing_price(
    tmp_path: Path, emulator: Emulator, prices: Prices, code: int, states: list[JobState]
) -> None:
    folder, state = tmp_path / "drop", tmp_path / "state"
    state.mkdir()
    _prompts(folder, 3)
    rule = _rule(folder, None).model_copy(update={"daily_credits": 20.0})
    opts = WatchOptions(
        rules=RulesFile(rules=[rule], prices=prices),
        state_dir=state,
        api_key=CANARY,
        base_url=emulator.base_url,
        once=True,
        engine=FAST,
    )

    assert asyncio.run(run(opts)) == code

    assert _submitted(emulator) == states.count(S.DONE)
    with Ledger(state / LEDGER_NAME) as ledger:
        assert sorted(j.state for j in ledger.jobs()) == sorted(states)


# --- what a held job says, and the metrics ----------------------------------------------------

_NEXT = datetime(2025, 3, 15)


@pytest.mark.parametrize(
    ("hold", "reason", "note"),
    [
        (
            Hold(Verdict.UNPRICED, Room(None, 40.0, 40.0), None, PRO, "4K", None),
            "no price for gemini-3-pro-image-preview at 4K in [prices]",
            '"gemini-3-pro-image-preview" = { "4K" = CREDITS }',
        ),
        (
            Hold(Verdict.UNPRICED, Room(None, 40.0, 40.0), None, OFFICIAL, None, None),
            "no price for gemini-2.5-flash-image-official in [prices]",
            '"gemini-2.5-flash-image-official" = CREDITS',
        ),
        (
            Hold(Verdict.TOO_DEAR, Room(None, 40.0, 40.0), 48.0, PRO, "4K", None),
            "costs 48 credits, more than the daily credits of 40",
            "more than this folder's daily limit of 40 credits",
        ),
        (
            Hold(Verdict.CREDITS_SPENT, Room(3, 40.0, 16.0), 24.0, PRO, "1K", 5),
            "the daily credits of 40 are spent (16 left, the task costs 24)",
            "has only 16 credits left today, and this file's image costs 24 credits",
        ),
        (
            Hold(Verdict.CREDITS_SPENT, Room(None, 2.5, 0.0), 0.5, FLASH, "1K", None),
            "the daily credits of 2.5 are spent (0 left, the task costs 0.5)",
            "daily limit of 2.5 credits is used up for today",
        ),
        (
            Hold(Verdict.TASKS_SPENT, Room(0, 40.0, 40.0), 8.0, FLASH, "1K", 3),
            "the daily budget of 3 is spent",
            "daily budget of 3 images is used up",
        ),
    ],
)
def test_a_held_job_says_which_limit_or_price_holds_it(hold: Hold, reason: str, note: str) -> None:
    assert reason in notes.hold_reason(hold)
    text = notes.held_text(hold, _NEXT)
    assert note in text
    assert "What to do:" in text and "Nothing was sent or paid" in text


def test_the_metrics_show_the_credits_left_per_rule() -> None:
    families = list(_EngineCollector._families(EngineStatus(credits_left={"studio": 4.5})))
    [family] = [f for f in families if f.name == "promptdrop_credits_left"]
    assert [(s.labels, s.value) for s in family.samples] == [({"rule": "studio"}, 4.5)]
