"""Late references (issue 13): a prompt file refused only because its reference images are not
there yet waits for them, says so, and is made once they land; nothing else changes.

The bookkeeping and the texts are pure and tested as tables; the daemon-level tests drive a real
`watch` process on real folders against the emulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import (
    CANARY,
    cli,
    daemon_env,
    image_for,
    note_for,
    rules_file,
    spawn,
    wait_for,
)
from promptdrop.emulator import Emulator, EmulatorConfig
from promptdrop.jobs import notes
from promptdrop.jobs.late_refs import LateReferences, present, shown_names
from promptdrop.spec import Problem, SpecError, read_prompt_file

SKETCH = Path(__file__).parent.parent / "rules" / "examples" / "sketch.png"
A, B, C = Path("/w/refs/a.png"), Path("/w/refs/b.png"), Path("/w/c.png")


# The bookkeeping ------------------------------------------------------------------------------


def test_a_waiting_file_is_due_only_once_its_path_held_still_between_two_looks() -> None:
    late = LateReferences()
    late.wait(Path("/w/p.prompt.toml"), "drop", [A])
    assert late.arrived({}) == []  # not there
    assert late.arrived({A: (10, 1)}) == []  # there, first look: maybe still copying
    assert late.arrived({A: (20, 2)}) == []  # it grew
    assert late.arrived({A: (20, 2)}) == [(Path("/w/p.prompt.toml"), "drop")]
    assert len(late) == 0  # forgotten: taking it up again records it anew if need be


@pytest.mark.parametrize(
    ("looks", "due"),
    [
        ([{A: (1, 1)}, {A: (1, 1)}], ["/w/one.prompt.toml", "/w/two.prompt.toml"]),
        ([{B: (1, 1)}, {B: (1, 1)}], ["/w/two.prompt.toml"]),
        ([{C: (1, 1)}, {C: (1, 1)}], []),  # nobody waits for it
        ([{A: (1, 1)}, {}, {A: (1, 1)}], []),  # gone between the looks: starts over
    ],
)
def test_any_appeared_path_makes_every_file_waiting_for_it_due(
    looks: list[dict[Path, tuple[int, int]]], due: list[str]
) -> None:
    late = LateReferences()
    late.wait(Path("/w/one.prompt.toml"), "drop", [A])
    late.wait(Path("/w/two.prompt.toml"), "drop", [A, B])
    found: list[tuple[Path, str]] = []
    for seen in looks:
        found += late.arrived(seen)
    assert [str(src) for src, _ in found] == due


def test_forgetting_a_file_stops_looking_for_its_paths() -> None:
    late = LateReferences()
    late.wait(Path("/w/p.prompt.toml"), "drop", [A, B])
    assert late.paths() == {A, B}
    late.forget(Path("/w/p.prompt.toml"))
    assert late.paths() == set() and len(late) == 0


def test_present_sees_files_and_their_size(tmp_path: Path) -> None:
    there = tmp_path / "there.png"
    there.write_bytes(b"12345")
    seen = present([there, tmp_path / "absent.png"])
    assert list(seen) == [there] and seen[there][0] == 5


def test_missing_paths_are_shown_relative_to_the_prompt_files_folder(tmp_path: Path) -> None:
    source = tmp_path / "sub" / "p.prompt.toml"
    names = shown_names(source, [tmp_path / "sub" / "refs" / "a.png", tmp_path / "b.png"])
    assert names == ["refs/a.png", "../b.png"]


# What the spec says ---------------------------------------------------------------------------


def _refusal(tmp_path: Path, text: str) -> SpecError:
    source = tmp_path / "p.prompt.toml"
    source.write_text(text)
    with pytest.raises(SpecError) as caught:
        read_prompt_file(source, tmp_path)
    return caught.value


def test_a_missing_local_reference_is_told_apart_from_other_problems(tmp_path: Path) -> None:
    exc = _refusal(tmp_path, 'prompt = "x"\nreferences = ["refs/a.png", "b.png"]\n')
    assert exc.missing_references() == (tmp_path / "refs" / "a.png", tmp_path / "b.png")
    # The problem's message is the one it always was.
    assert "reference 'refs/a.png' was not found" in exc.problems[0].message


@pytest.mark.parametrize(
    "text",
    [
        'prompt = ""\nreferences = ["refs/a.png"]\n',  # another problem beside it
        'prompt = "x"\nreferences = ["../outside.png"]\n',  # outside the root: never arrives
        'prompt = "x"\nreferences = ["notes.txt"]\n',  # there, but not an image
    ],
)
def test_a_file_with_any_other_problem_does_not_wait(tmp_path: Path, text: str) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    assert _refusal(tmp_path, text).missing_references() == ()


def test_a_missing_reference_listed_by_folder_defaults_is_waited_for(tmp_path: Path) -> None:
    (tmp_path / ".promptdrop.toml").write_text('references = ["style.png"]\n')
    exc = _refusal(tmp_path, 'prompt = "x"\n')
    assert exc.missing_references() == (tmp_path / "style.png",)


# The texts ------------------------------------------------------------------------------------


def test_the_waiting_note_names_the_file_it_waits_for_and_says_nothing_was_paid() -> None:
    text = notes.waiting_for_text(["refs/sketch.png"])
    assert text.startswith("Waiting for refs/sketch.png:")
    assert "made by itself as soon as it appears" in text and "nothing was sent or paid" in text
    assert "fix the file" not in text  # the file is not wrong
    two = notes.waiting_for_text(["a.png", "b.png"])
    assert "a.png, b.png" in two and "as soon as they appear" in two


def test_a_problem_in_folder_defaults_is_told_with_that_files_name_and_line(
    tmp_path: Path,
) -> None:
    source = tmp_path / "sub" / "p.prompt.toml"
    exc = SpecError(
        [
            Problem(tmp_path / ".promptdrop.toml", "unknown key 'sise'", 1, 1),
            Problem(source, "size must be one of ...", 2, 1),
        ]
    )
    text = notes.problems_text(exc, source)
    assert "- in ../.promptdrop.toml, line 1: unknown key 'sise'" in text
    assert "- line 2: size must be one of" in text
    assert "touching it is enough" in text
    # Without a problem elsewhere, the text is what it always was.
    alone = notes.problems_text(SpecError([Problem(source, "the prompt is empty", 1, 1)]), source)
    assert alone.endswith("What to do: fix the file and save it again; nothing was sent or paid.")


# The daemon -----------------------------------------------------------------------------------


@pytest.fixture
def emu() -> Iterator[Emulator]:
    config = EmulatorConfig(api_key=CANARY, latency=0.1, jitter=0.0, rate_limits=None)
    with Emulator(config) as emulator:
        yield emulator


def _once(emu: Emulator, tmp_path: Path, drop: Path) -> int:
    done = cli(
        "watch",
        "--once",
        str(drop),
        "--state-dir",
        str(tmp_path / "state"),
        "--poll-interval",
        "0.1",
        env=daemon_env(emu.base_url),
        cwd=tmp_path,
        timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode


def _paid(emu: Emulator) -> list[str]:
    return [s["prompt"] for s in emu.stats()["submissions"]]


def test_an_unchanged_invalid_file_is_checked_again_on_the_next_run(
    tmp_path: Path, emu: Emulator
) -> None:
    """No edit: once the reference is there, the next `--once` (a restart) makes the image."""
    drop = tmp_path / "drop"
    drop.mkdir()
    source = drop / "art.prompt.toml"
    source.write_text('prompt = "late art"\nreferences = ["sketch.png"]\n')
    assert _once(emu, tmp_path, drop) == 1
    assert "Waiting for sketch.png" in note_for(source).read_text()
    (drop / "sketch.png").write_bytes(SKETCH.read_bytes())
    assert _once(emu, tmp_path, drop) == 0
    assert image_for(source) is not None and not note_for(source).exists()
    assert _paid(emu) == ["late art"]


def test_a_restarted_daemon_still_waits_for_a_reference_refused_before(
    tmp_path: Path, emu: Emulator
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    source = drop / "art.prompt.toml"
    source.write_text('prompt = "waits across a restart"\nreferences = ["refs/s.png"]\n')
    assert _once(emu, tmp_path, drop) == 1  # refused, recorded as invalid in the ledger
    rules = rules_file(tmp_path / "rules.toml", drop, settle=0.3)
    daemon = spawn(rules, tmp_path / "state", daemon_env(emu.base_url), cwd=tmp_path)
    try:
        daemon.wait_watching(timeout=20)
        (drop / "refs").mkdir()
        (drop / "refs" / "s.png").write_bytes(SKETCH.read_bytes())
        wait_for(lambda: image_for(source), "the image once the reference landed", daemon=daemon)
        assert _paid(emu) == ["waits across a restart"]
    finally:
        daemon.terminate()


def test_a_conflict_copys_note_goes_when_the_copy_is_deleted(tmp_path: Path, emu: Emulator) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    rules = rules_file(tmp_path / "rules.toml", drop, settle=0.3)
    daemon = spawn(rules, tmp_path / "state", daemon_env(emu.base_url), cwd=tmp_path)
    try:
        daemon.wait_watching(timeout=20)
        copy = drop / "poster (conflicted copy).prompt.toml"
        copy.write_text('prompt = "a fox"\n')
        note = note_for(copy)
        wait_for(note.exists, "the conflict copy's note", daemon=daemon)
        assert "It goes away when this copy is deleted." in note.read_text()
        copy.unlink()
        wait_for(lambda: not note.exists(), "the note to go with the copy", daemon=daemon)
        assert _paid(emu) == []
    finally:
        daemon.terminate()
