"""The folder is the truth (issue 13): versions, reverts, adoption, missing images, late
references, the roots, and notes that say what will happen.

Each test drives the real daemon (`watch --once`, or a live `watch`) on real folders against
the emulator over TCP, and judges what a user sees: the files in the folder, the notes, and the
emulator's record of paid tasks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import (
    CANARY,
    Daemon,
    cli,
    daemon_env,
    image_for,
    note_for,
    rules_file,
    spawn,
    wait_for,
    write_prompt,
)
from promptdrop.emulator import Emulator, EmulatorConfig
from promptdrop.emulator.faults import Faults
from promptdrop.outputs import read_provenance

SETTLE = 0.3


@dataclass
class Folder:
    """Watched folders under one temporary folder, one state folder and one emulator."""

    tmp: Path
    emu: Emulator
    state: Path
    daemons: list[Daemon] = field(default_factory=list)

    def folder(self, name: str = "drop") -> Path:
        path = self.tmp / name
        path.mkdir(exist_ok=True)
        return path

    def cli(self, *args: str) -> Any:
        return cli(*args, env=daemon_env(self.emu.base_url), cwd=self.tmp, timeout=60)

    def once(self, *folders: Path, state: Path | None = None) -> Any:
        done = self.cli(
            "watch",
            "--once",
            *(str(f) for f in folders),
            "--state-dir",
            str(state or self.state),
            "--poll-interval",
            "0.1",
            "--log-format",
            "json",
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def start(self, folder: Path) -> Daemon:
        rules = rules_file(self.tmp / "rules.toml", folder, settle=SETTLE)
        daemon = spawn(
            rules, self.state, daemon_env(self.emu.base_url), cwd=self.tmp, name="daemon"
        )
        self.daemons.append(daemon)
        return daemon.wait_watching(timeout=20)

    def paid(self) -> list[str]:
        """The prompt of every task the emulator created (every paid submission)."""
        return [s["prompt"] for s in self.emu.stats()["submissions"]]

    def status(self, state: Path | None = None) -> dict[str, Any]:
        done = self.cli("status", "--json", "--state-dir", str(state or self.state))
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result


@pytest.fixture
def fx(tmp_path: Path) -> Iterator[Folder]:
    config = EmulatorConfig(api_key=CANARY, latency=0.1, jitter=0.0, rate_limits=None)
    with Emulator(config) as emu:
        f = Folder(tmp=tmp_path, emu=emu, state=tmp_path / "state")
        try:
            yield f
        finally:
            for daemon in f.daemons:
                daemon.terminate()


def images(folder: Path, stem: str) -> dict[str, str]:
    """Every image named STEM.* or STEM.vN.* in the folder, by name: the request it was made
    for (from its embedded provenance)."""
    found = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(stem + ".") and path.suffix in (".png", ".jpg", ".webp"):
            info = read_provenance(path.read_bytes())
            found[path.name] = info.get("promptdrop:prompt", "?")
    return found


def plain(folder: Path, stem: str) -> list[str]:
    """The images at the plain name STEM.EXT (any extension)."""
    return [n for n in images(folder, stem) if n.count(".") == 1]


# 1 ------------------------------------------------------------------------------------------


def test_an_edit_whose_image_has_another_format_leaves_one_current_image(tmp_path: Path) -> None:
    """PNG first, JPEG after the edit: the PNG becomes poster.v1.png, poster.jpg is current."""
    config = EmulatorConfig(
        api_key=CANARY, latency=0.1, jitter=0.0, rate_limits=None, image_format="alternate"
    )
    with Emulator(config) as emu:
        fx = Folder(tmp=tmp_path, emu=emu, state=tmp_path / "state")
        drop = fx.folder()
        source = write_prompt(drop / "poster.prompt.toml", "a cat, first version")
        assert fx.once(drop).returncode == 0
        assert images(drop, "poster") == {"poster.png": "a cat, first version"}
        write_prompt(source, "a cat, second version")
        assert fx.once(drop).returncode == 0
        assert images(drop, "poster") == {
            "poster.jpg": "a cat, second version",
            "poster.v1.png": "a cat, first version",
        }
        assert fx.paid() == ["a cat, first version", "a cat, second version"]


# 2 ------------------------------------------------------------------------------------------


def test_reverting_an_edit_brings_the_earlier_image_back_for_free(fx: Folder) -> None:
    drop = fx.folder()
    source = write_prompt(drop / "poster.prompt.toml", "a dog, take one")
    fx.once(drop)
    write_prompt(source, "a dog, take two")
    fx.once(drop)
    assert images(drop, "poster") == {
        "poster.png": "a dog, take two",
        "poster.v1.png": "a dog, take one",
    }
    write_prompt(source, "a dog, take one")  # back to the first text
    assert fx.once(drop).returncode == 0
    found = images(drop, "poster")
    assert [found[n] for n in plain(drop, "poster")] == ["a dog, take one"]
    assert sorted(found.values()) == ["a dog, take one", "a dog, take two"]  # nothing lost
    assert fx.paid() == ["a dog, take one", "a dog, take two"]  # the revert paid nothing


# 3 ------------------------------------------------------------------------------------------


def test_a_fresh_ledger_adopts_the_images_already_in_the_folder(fx: Folder) -> None:
    drop = fx.folder()
    for i in range(3):
        write_prompt(drop / f"p{i}.prompt.toml", f"a tram number {i}")
    assert fx.once(drop).returncode == 0
    before = {p.name: p.read_bytes() for p in drop.iterdir()}
    assert len(fx.paid()) == 3

    fresh = fx.tmp / "new-state"  # a reinstall, a new laptop, a teammate's second daemon
    done = fx.once(drop, state=fresh)
    assert done.returncode == 0, done.stderr
    assert len(fx.paid()) == 3  # nothing paid again
    assert {p.name: p.read_bytes() for p in drop.iterdir()} == before
    jobs = fx.status(state=fresh)["jobs"]
    assert sorted(j["state"] for j in jobs) == ["done"] * 3


# 4 ------------------------------------------------------------------------------------------


def test_a_deleted_image_comes_back_for_free_on_a_rescan(fx: Folder) -> None:
    drop = fx.folder()
    source = write_prompt(drop / "tram.prompt.toml", "a tram in the rain")
    fx.once(drop)
    image = image_for(source)
    assert image is not None
    data = image.read_bytes()
    image.unlink()
    source.touch()
    assert fx.once(drop).returncode == 0
    back = image_for(source)
    assert back is not None and back.name == image.name
    assert read_provenance(back.read_bytes())["promptdrop:prompt"] == "a tram in the rain"
    assert len(back.read_bytes()) > 0 and data  # the same request's image, not a new one
    assert fx.paid() == ["a tram in the rain"]


def test_status_shows_a_deleted_image_as_missing(fx: Folder) -> None:
    drop = fx.folder()
    source = write_prompt(drop / "tram.prompt.toml", "a tram at night")
    fx.once(drop)
    image = image_for(source)
    assert image is not None
    image.unlink()
    done = fx.cli("status", "--state-dir", str(fx.state))
    assert done.returncode == 0
    assert "missing" in done.stdout, done.stdout


# 5 ------------------------------------------------------------------------------------------


def test_a_prompt_that_arrives_before_its_reference_is_made_once_the_reference_lands(
    fx: Folder,
) -> None:
    drop = fx.folder()
    daemon = fx.start(drop)
    source = drop / "art.prompt.toml"
    source.write_text('prompt = "make it art"\nreferences = ["refs/sketch.png"]\n')
    note = note_for(source)
    wait_for(note.exists, "a note about the missing reference", daemon=daemon)
    text = note.read_text()
    assert "refs/sketch.png" in text and "wait" in text.lower(), text
    assert fx.paid() == []
    (drop / "refs").mkdir()
    sketch = Path(__file__).parent.parent / "rules" / "examples" / "sketch.png"
    (drop / "refs" / "sketch.png").write_bytes(sketch.read_bytes())  # no edit of the prompt
    wait_for(lambda: image_for(source), "the image, once the reference landed", daemon=daemon)
    assert fx.paid() == ["make it art"]
    wait_for(lambda: not note.exists(), "the note to go", daemon=daemon)


# 6 ------------------------------------------------------------------------------------------


def test_nothing_is_written_outside_the_watched_folders(fx: Folder) -> None:
    """Two folders, one request, watched at different times: each run writes only into the
    folders it watches, even when the other folder's prompt shares the request."""
    team, drop = fx.folder("team"), fx.folder("drop")
    fx.emu.set_faults(Faults(task_failed=1.0))
    write_prompt(team / "fail.prompt.toml", "a shared request")
    fx.once(team)
    assert note_for(team / "fail.prompt.toml").exists()
    team_before = sorted(p.name for p in team.iterdir())

    fx.emu.set_faults(Faults())
    write_prompt(drop / "fail.prompt.toml", "a shared request")
    fx.once(drop)  # the request failed before: a note here, and nothing in team
    assert sorted(p.name for p in team.iterdir()) == team_before
    fx.cli("retry", str(drop / "fail.prompt.toml"), "--state-dir", str(fx.state))
    fx.once(drop)
    assert image_for(drop / "fail.prompt.toml") is not None
    assert sorted(p.name for p in team.iterdir()) == team_before


# 7 ------------------------------------------------------------------------------------------


def test_deleting_a_prompt_file_removes_its_note(fx: Folder) -> None:
    drop = fx.folder()
    daemon = fx.start(drop)
    source = drop / "bad.prompt.toml"
    source.write_text('prompt = ""\n')
    note = note_for(source)
    wait_for(note.exists, "the error note", daemon=daemon)
    source.unlink()
    wait_for(lambda: not note.exists(), "the note to go with its prompt file", daemon=daemon)


def test_a_conflict_copy_note_says_what_will_actually_happen(fx: Folder) -> None:
    drop = fx.folder()
    write_prompt(drop / "poster.prompt.toml", "a fox")
    conflict = write_prompt(drop / "poster (conflicted copy).prompt.toml", "a fox, other take")
    fx.once(drop)
    text = note_for(conflict).read_text()
    assert "makes an image" not in text  # a conflict copy never makes one
    assert "delete" in text.lower()


def test_a_problem_in_folder_defaults_names_the_defaults_file(fx: Folder) -> None:
    drop = fx.folder()
    (drop / ".promptdrop.toml").write_text('sise = "16:9"\n')
    source = write_prompt(drop / "poster.prompt.toml", "a fox")
    fx.once(drop)
    text = note_for(source).read_text()
    assert ".promptdrop.toml" in text, text
    assert fx.paid() == []


def test_retry_force_lists_every_file_sharing_the_request_and_asks_for_yes(fx: Folder) -> None:
    drop = fx.folder()
    one = write_prompt(drop / "one.prompt.toml", "the same request")
    two = write_prompt(drop / "two.prompt.toml", "the same request")
    fx.once(drop)
    assert fx.paid() == ["the same request"]
    asked = fx.cli("retry", "--force", str(one), "--state-dir", str(fx.state))
    assert asked.returncode != 0
    assert two.name in asked.stdout + asked.stderr
    assert "--yes" in asked.stdout + asked.stderr
    fx.once(drop)
    assert fx.paid() == ["the same request"]  # nothing was queued without --yes
    done = fx.cli("retry", "--force", "--yes", str(one), "--state-dir", str(fx.state))
    assert done.returncode == 0, done.stderr
    fx.once(drop)
    assert fx.paid() == ["the same request"] * 2
