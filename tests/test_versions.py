"""Versions follow the source (issue 13): which file at which name becomes which version, as a
plan over a listing (no files); the ledger's settled check and its current files; the roots;
and, through a real daemon, a paid image that is never dropped when a foreign file takes its
name while it is being made."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from harness import CANARY, Daemon, cli, daemon_env, rules_file, spawn, wait_for, write_prompt
from promptdrop.api import ToApisClient
from promptdrop.emulator import Emulator, EmulatorConfig
from promptdrop.jobs.engine import Engine
from promptdrop.jobs.notes import displaced_text, link_expired_text
from promptdrop.ledger import Job, JobState, Ledger
from promptdrop.outputs import read_provenance
from promptdrop.outputs.naming import next_version, plain_names
from promptdrop.outputs.versions import Found, Move, Plan, plan_placement
from promptdrop.spec import RuleConfig

W = Path("/w")
OURS, CUR, FOR = Found.OURS, Found.CURRENT, Found.FOREIGN


def _plan(final: str, found: dict[str, Found], taken: set[str], kept: str | None = None) -> Plan:
    names = {W / n for n in taken} | {W / n for n in found}
    return plan_placement(
        W / final,
        {W / n: kind for n, kind in found.items()},
        lambda p: p in names,
        kept=None if kept is None else W / kept,
    )


def _moves(*pairs: tuple[str, str]) -> tuple[Move, ...]:
    return tuple(Move(W / a, W / b) for a, b in pairs)


# --- the plan, as a table -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("final", "found", "taken", "aside", "write_to"),
    [
        # Nothing there yet: the image takes the plain name.
        ("poster.png", {}, set(), (), "poster.png"),
        # An earlier image of ours in another format is set aside too: one current image.
        (
            "poster.jpg",
            {"poster.png": OURS},
            set(),
            (("poster.png", "poster.v1.png"),),
            "poster.jpg",
        ),
        (
            "poster.png",
            {"poster.png": OURS},
            set(),
            (("poster.png", "poster.v1.png"),),
            "poster.png",
        ),
        # Version numbers count across formats: v1 is held by a JPEG, so the PNG becomes v2.
        (
            "poster.png",
            {"poster.png": OURS},
            {"poster.v1.jpg"},
            (("poster.png", "poster.v2.png"),),
            "poster.png",
        ),
        # Two earlier images of ours, each to its own number.
        (
            "poster.webp",
            {"poster.png": OURS, "poster.jpg": OURS},
            {"poster.v1.png"},
            (("poster.jpg", "poster.v2.jpg"), ("poster.png", "poster.v3.png")),
            "poster.webp",
        ),
        # A foreign file under another extension is left alone; the image takes its own name.
        ("poster.png", {"poster.jpg": FOR}, set(), (), "poster.png"),
        # Several images: only this index's names are looked at.
        (
            "poster-2.png",
            {"poster-2.jpg": OURS},
            {"poster-1.png"},
            (("poster-2.jpg", "poster-2.v1.jpg"),),
            "poster-2.png",
        ),
    ],
)
def test_placing_an_image_sets_aside_every_earlier_image_of_ours_at_the_plain_names(
    final: str,
    found: dict[str, Found],
    taken: set[str],
    aside: tuple[tuple[str, str], ...],
    write_to: str,
) -> None:
    plan = _plan(final, found, taken)
    assert plan == Plan(aside=_moves(*aside), write_to=W / write_to)
    assert plan.image == W / write_to


def test_a_foreign_file_at_the_plain_name_sends_the_new_image_to_the_next_version_name() -> None:
    plan = _plan("poster.png", {"poster.png": FOR, "poster.jpg": OURS}, {"poster.v1.png"})
    assert plan.aside == _moves(("poster.jpg", "poster.v2.jpg"))
    assert plan.write_to == W / "poster.v3.png"  # v1 taken, v2 just given to the JPEG
    assert plan.displaced_by == W / "poster.png"


def test_the_image_already_in_place_is_not_written_again_and_others_of_ours_step_aside() -> None:
    assert _plan("poster.png", {"poster.png": CUR}, set()) == Plan(current=W / "poster.png")
    plan = _plan("poster.png", {"poster.png": CUR, "poster.jpg": OURS}, set())
    assert plan == Plan(aside=_moves(("poster.jpg", "poster.v1.jpg")), current=W / "poster.png")


def test_a_revert_moves_the_kept_version_back_and_the_current_image_becomes_a_version() -> None:
    plan = _plan("poster.png", {"poster.png": OURS}, {"poster.v1.png"}, kept="poster.v1.png")
    assert plan.aside == _moves(("poster.png", "poster.v2.png"))
    assert plan.restore == Move(W / "poster.v1.png", W / "poster.png")
    assert plan.write_to is None and plan.image == W / "poster.png"


def test_a_revert_whose_plain_name_is_foreign_leaves_the_kept_image_where_it_is() -> None:
    plan = _plan("poster.png", {"poster.png": FOR}, {"poster.v1.png"}, kept="poster.v1.png")
    assert plan == Plan(displaced_by=W / "poster.png")


@pytest.mark.parametrize(
    ("path", "taken", "expected"),
    [
        ("/w/poster.png", set(), "/w/poster.v1.png"),
        ("/w/poster.png", {"/w/poster.v1.webp"}, "/w/poster.v2.png"),
        ("/w/poster.jpg", {"/w/poster.v1.jpg", "/w/poster.v2.png"}, "/w/poster.v3.jpg"),
        ("/w/poster.png", {"/w/poster.v2.jpg"}, "/w/poster.v1.png"),  # the first free number
        ("/w/poster.png", {"/w/other.v1.png"}, "/w/poster.v1.png"),
    ],
)
def test_the_next_version_number_is_free_in_every_image_format(
    path: str, taken: set[str], expected: str
) -> None:
    assert next_version(path, lambda p: str(p) in taken) == Path(expected)


def test_the_plain_names_of_an_image_are_one_per_format() -> None:
    assert plain_names("/w/poster.prompt.toml", 1, 1) == [
        W / "poster.png",
        W / "poster.jpg",
        W / "poster.webp",
    ]
    assert plain_names("/w/poster.prompt.toml", 2, 3)[0] == W / "poster-2.png"


def test_the_notes_say_where_the_image_went_and_which_retry_pays() -> None:
    text = displaced_text("poster.png", "poster.v1.png")
    assert "poster.v1.png" in text and "did not make" in text and "What to do" in text
    expired = link_expired_text("task_1", Path("/w/tram.prompt.toml"))
    assert "retry --force /w/tram.prompt.toml" in expired and "paid" in expired


# --- the ledger: settled means each current image is recorded ------------------------------


def _done(ledger: Ledger, job: Job) -> Job:
    for src, dst in (
        (JobState.PENDING, JobState.SUBMITTING),
        (JobState.SUBMITTING, JobState.RUNNING),
        (JobState.RUNNING, JobState.DOWNLOADING),
        (JobState.DOWNLOADING, JobState.DONE),
    ):
        job = ledger.transition(job.id, src, dst)
    return job


def test_settled_outputs_names_the_current_files_and_not_the_versions_set_aside(
    tmp_path: Path,
) -> None:
    source = tmp_path / "poster.prompt.toml"
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        (job,) = ledger.take_up(
            source,
            rule="r",
            content_sha256="c1",
            request_hash="a" * 64,
            image_count=1,
            request={"prompt": "a", "references": []},
        )
        job = _done(ledger, job)
        assert ledger.settled_outputs(source, "c1") is None  # nothing written yet
        plain = tmp_path / "poster.png"
        ledger.record_output(plain, job=job, source_path=source, sha256="s", fmt="png")
        assert ledger.settled_outputs(source, "c1") == [str(plain)]
        aside = tmp_path / "poster.v1.png"
        ledger.move_output(plain, aside)  # set aside: no longer the current image
        assert ledger.settled_outputs(source, "c1") is None
        ledger.move_output(aside, plain, superseded=False)  # brought back (a revert)
        assert ledger.settled_outputs(source, "c1") == [str(plain)]
        assert ledger.is_settled(source, "c1") and not ledger.is_settled(source, "c2")
        copy = tmp_path / "copy.png"
        ledger.record_output(copy, job=job, source_path=None, sha256="s", fmt="png")
        assert [o.path for o in ledger.outputs_with_sha("s")] == [str(plain), str(copy)]
        ledger.forget_output(copy)
        assert ledger.output_at(copy) is None


# --- through the daemon: a paid image is never dropped --------------------------------------


@pytest.fixture
def slow_emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(api_key=CANARY, latency=1.5, jitter=0.0, rate_limits=None)
    with Emulator(config) as emu:
        yield emu


def test_a_paid_image_whose_name_was_taken_meanwhile_is_saved_under_a_version_name(
    tmp_path: Path, slow_emulator: Emulator
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    rules = rules_file(tmp_path / "rules.toml", drop, settle=0.3)
    daemon: Daemon = spawn(
        rules, tmp_path / "state", daemon_env(slow_emulator.base_url), cwd=tmp_path
    )
    try:
        daemon.wait_watching(timeout=20)
        source = write_prompt(drop / "poster.prompt.toml", "a lighthouse")
        wait_for(lambda: slow_emulator.stats()["submissions"], "the submission", daemon=daemon)
        foreign = drop / "poster.png"  # someone's own image lands while the task runs
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (10, 200, 10)).save(buf, "PNG")
        foreign.write_bytes(buf.getvalue())
        before = foreign.read_bytes()
        kept = drop / "poster.v1.png"
        wait_for(kept.exists, "the paid image under a version name", daemon=daemon)
        assert read_provenance(kept.read_bytes())["promptdrop:prompt"] == "a lighthouse"
        assert foreign.read_bytes() == before  # never replaced
        note = wait_for(lambda: _note(drop), "a note saying where the image went", daemon=daemon)
        assert "poster.v1.png" in note and "poster.png" in note
        assert len(slow_emulator.stats()["submissions"]) == 1
        assert source.exists()
    finally:
        daemon.terminate()


def _note(folder: Path) -> str:
    path = folder / "poster.error.txt"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def test_an_earlier_image_known_only_by_its_provenance_becomes_a_version_not_a_blocker(
    tmp_path: Path,
) -> None:
    """A ledger that never saw poster.png (a new state folder) still knows it by the prompt
    file its provenance names: the edit's image takes the plain name, the old one is kept."""
    config = EmulatorConfig(api_key=CANARY, latency=0.1, jitter=0.0, rate_limits=None)
    with Emulator(config) as emu:
        drop = tmp_path / "drop"
        drop.mkdir()
        source = write_prompt(drop / "poster.prompt.toml", "a boat, first")
        assert _once(tmp_path, emu, drop, tmp_path / "one").returncode == 0
        write_prompt(source, "a boat, second")
        done = _once(tmp_path, emu, drop, tmp_path / "two")
        assert done.returncode == 0, done.stderr
        found = {
            p.name: read_provenance(p.read_bytes()).get("promptdrop:prompt")
            for p in drop.iterdir()
            if p.suffix == ".png"
        }
        assert found == {"poster.png": "a boat, second", "poster.v1.png": "a boat, first"}
        assert [s["prompt"] for s in emu.stats()["submissions"]] == [
            "a boat, first",
            "a boat, second",
        ]


def _once(cwd: Path, emu: Emulator, folder: Path, state: Path) -> subprocess.CompletedProcess[str]:
    return cli(
        "watch",
        "--once",
        str(folder),
        "--state-dir",
        str(state),
        "--poll-interval",
        "0.1",
        env=daemon_env(emu.base_url),
        cwd=cwd,
        timeout=60,
    )


# --- a deleted image: copied back from a kept copy, else a note once the link is gone --------


def _expire_links(state: Path) -> None:
    """Age every result link past its 24 hours, as a day's wait would."""
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        db.execute("UPDATE jobs SET expires_at = 0")


def test_a_deleted_image_is_copied_back_from_another_file_of_the_same_request(
    tmp_path: Path,
) -> None:
    config = EmulatorConfig(api_key=CANARY, latency=0.1, jitter=0.0, rate_limits=None)
    with Emulator(config) as emu:
        drop, state = tmp_path / "drop", tmp_path / "state"
        drop.mkdir()
        one = write_prompt(drop / "one.prompt.toml", "a kite")
        write_prompt(drop / "two.prompt.toml", "a kite")
        assert _once(tmp_path, emu, drop, state).returncode == 0
        (drop / "one.png").unlink()
        _expire_links(state)  # no download possible: only the kept copy can bring it back
        one.touch()
        assert _once(tmp_path, emu, drop, state).returncode == 0
        assert (drop / "one.png").read_bytes() == (drop / "two.png").read_bytes()
        assert not (drop / "one.error.txt").exists()
        assert len(emu.stats()["submissions"]) == 1


def test_a_deleted_image_past_its_link_says_a_new_one_is_paid_and_status_says_missing(
    tmp_path: Path,
) -> None:
    config = EmulatorConfig(api_key=CANARY, latency=0.1, jitter=0.0, rate_limits=None)
    with Emulator(config) as emu:
        drop, state = tmp_path / "drop", tmp_path / "state"
        drop.mkdir()
        source = write_prompt(drop / "tram.prompt.toml", "a tram")
        assert _once(tmp_path, emu, drop, state).returncode == 0
        (drop / "tram.png").unlink()
        _expire_links(state)
        _once(tmp_path, emu, drop, state)
        note = (drop / "tram.error.txt").read_text(encoding="utf-8")
        assert f"promptdrop retry --force {source}" in note and "paid" in note
        assert not (drop / "tram.png").exists()
        assert len(emu.stats()["submissions"]) == 1
        env, args = daemon_env(emu.base_url), ("status", "--state-dir", str(state))
        text = cli(*args, env=env, cwd=tmp_path).stdout
        assert "tram.png (missing" in text, text
        (job,) = json.loads(cli(*args, "--json", env=env, cwd=tmp_path).stdout)["jobs"]
        assert job["missing"] == [str(drop / "tram.png")] == job["current"]


# --- the roots -------------------------------------------------------------------------------


def test_only_prompt_files_inside_the_loaded_roots_get_an_image(tmp_path: Path) -> None:
    """A request shared with prompt files outside every rule's folder (or below a rule that
    is not recursive) is delivered only to the ones inside."""
    flat, deep, away = tmp_path / "flat", tmp_path / "deep", tmp_path / "away"
    files = [flat / "a.prompt.toml", flat / "sub" / "b.prompt.toml", deep / "x" / "c.prompt.toml"]
    files.append(away / "d.prompt.toml")
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_prompt(path, "shared")
    rules = [
        RuleConfig(name="flat", path=flat, recursive=False),
        RuleConfig(name="deep", path=deep),
    ]

    async def main() -> list[Path]:
        with Ledger(tmp_path / "ledger.sqlite3") as ledger:
            async with ToApisClient(CANARY, "http://127.0.0.1:9") as client:
                engine = Engine(ledger, client, rules)
                job = None
                for path in files:
                    (job,) = ledger.take_up(
                        path,
                        rule=None,
                        content_sha256=path.name,
                        request_hash="e" * 64,
                        image_count=1,
                        request={"prompt": "shared", "references": []},
                    )
                assert job is not None
                return engine._live_sources(job)

    assert asyncio.run(main()) == [files[2], files[0]]  # sorted by path: deep/, then flat/
