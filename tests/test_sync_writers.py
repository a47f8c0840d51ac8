"""Sync clients and network mounts writing into a watched folder, through the real daemon.

GitHub issue "Synced drives and network mounts: settle, ignore, poll, reconcile": Syncthing,
rsync, browsers, editors and Dropbox all write prompt files in their own odd ways (temp names,
renames over placeholders, slow growth, touches, conflict copies, a share that drops away).
Each test runs `python -m promptdrop watch` as a subprocess against the emulator and checks what
was paid for (the emulator's submissions) and what landed in the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import CANARY, Daemon, daemon_env, spawn, stop_all, wait_for
from promptdrop import outputs
from promptdrop.emulator import Emulator
from promptdrop.ledger import LEDGER_NAME
from promptdrop.spec import STYLE_SEPARATOR

SETTLE = 0.4
POLL_INTERVAL = 0.3
MODES = ["never", "always"]  # inotify events only / polling only


def prompts(emu: Emulator) -> list[str]:
    return [s["prompt"] for s in emu.stats()["submissions"]]


def toml_prompt(text: str, size: str | None = None) -> str:
    body = f'prompt = "{text}"\n'
    if size is not None:
        body += f'size = "{size}"\n'
    return body


@dataclass
class Root:
    name: str
    path: Path
    settle: float = SETTLE
    poll: str = "never"
    defaults: dict[str, str] = field(default_factory=dict)

    def toml(self) -> str:
        lines = [
            "[[rules]]",
            f'name = "{self.name}"',
            f"path = {json.dumps(str(self.path))}",
            f'poll = "{self.poll}"',
            f"poll_interval = {POLL_INTERVAL}",
            f"settle = {self.settle}",
            "reconcile_interval = 10",
        ]
        if self.defaults:
            lines.append("[rules.defaults]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in self.defaults.items()]
        return "\n".join(lines) + "\n"


def source_statuses(state: Path) -> dict[str, str]:
    """Source path -> status, read from the daemon's ledger without writing to it."""
    uri = (state / LEDGER_NAME).as_uri() + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=5)
    try:
        return dict(db.execute("SELECT path, status FROM sources").fetchall())
    finally:
        db.close()


@pytest.fixture
def emu(emulator_factory: Callable[..., Emulator]) -> Emulator:
    return emulator_factory(api_key=CANARY, latency=0.1, rate_limits=None)


Start = Callable[[list[Root]], Daemon]


@pytest.fixture
def start_daemon(tmp_path: Path, emu: Emulator) -> Iterator[Start]:
    """Start `promptdrop watch` on these roots and wait until it watches."""
    started: list[Daemon] = []

    def start(roots: list[Root]) -> Daemon:
        rules = tmp_path / "test.rules.toml"
        rules.write_text("\n".join(r.toml() for r in roots), encoding="utf-8")
        d = spawn(rules, tmp_path / "state", daemon_env(emu.base_url), cwd=tmp_path)
        started.append(d)
        return d.wait_watching()

    try:
        yield start
    finally:
        stop_all(started)


def one_root(tmp_path: Path, start: Start, poll: str) -> tuple[Path, Daemon]:
    folder = tmp_path / "drop"
    folder.mkdir()
    return folder, start([Root("drop", folder, poll=poll)])


def write_slowly(path: Path, data: bytes, chunks: int = 5, pause: float = 0.1) -> None:
    step = max(1, len(data) // chunks)
    with open(path, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(pause)


def image(folder: Path, stem: str = "poster") -> Path | None:
    found = sorted(folder.glob(f"{stem}.png")) + sorted(folder.glob(f"{stem}.jpg"))
    return found[0] if found else None


def drop_marker(folder: Path, emu: Emulator, name: str = "marker") -> None:
    """Drop a fresh prompt file and wait for its image: everything queued before it has been
    seen by then, so counting submissions afterwards is not a race against the settle timer."""
    (folder / f"{name}.prompt.toml").write_text(toml_prompt(f"marker {name}"), encoding="utf-8")
    wait_for(lambda: image(folder, name), what=f"the image of {name}")
    time.sleep(2 * SETTLE)


# --------------------------------------------------------------------------- temp-then-rename


@pytest.mark.parametrize("poll", MODES)
def test_syncthing_temp_file_renamed_into_place_is_submitted_once(
    tmp_path: Path, emu: Emulator, start_daemon: Start, poll: str
) -> None:
    folder, _ = one_root(tmp_path, start_daemon, poll)
    temp = folder / ".syncthing.poster.prompt.toml.tmp"
    write_slowly(temp, toml_prompt("a poster synced by syncthing").encode())
    time.sleep(SETTLE + 0.3)  # the temp name settles, and must still be ignored
    os.rename(temp, folder / "poster.prompt.toml")

    wait_for(lambda: image(folder), what="poster image")
    drop_marker(folder, emu)
    assert prompts(emu).count("a poster synced by syncthing") == 1
    assert len(prompts(emu)) == 2
    assert not outputs.note_path(temp).exists()
    assert not any(p.name.endswith(".error.txt") for p in folder.iterdir())


@pytest.mark.parametrize("poll", MODES)
def test_rsync_temp_file_renamed_into_place_is_submitted_once(
    tmp_path: Path, emu: Emulator, start_daemon: Start, poll: str
) -> None:
    folder, _ = one_root(tmp_path, start_daemon, poll)
    temp = folder / ".poster.prompt.toml.AbC123"
    write_slowly(temp, toml_prompt("a poster copied by rsync").encode())
    time.sleep(SETTLE + 0.3)
    os.rename(temp, folder / "poster.prompt.toml")

    wait_for(lambda: image(folder), what="poster image")
    drop_marker(folder, emu)
    assert prompts(emu).count("a poster copied by rsync") == 1
    assert len(prompts(emu)) == 2
    assert not any(p.name.endswith(".error.txt") for p in folder.iterdir())


@pytest.mark.parametrize("poll", MODES)
def test_browser_download_over_empty_placeholder_submits_the_final_content_once(
    tmp_path: Path, emu: Emulator, start_daemon: Start, poll: str
) -> None:
    folder, _ = one_root(tmp_path, start_daemon, poll)
    final = folder / "poster.prompt.toml"
    final.write_bytes(b"")  # browsers reserve the name with an empty file first
    part = folder / "poster.prompt.toml.part"
    write_slowly(part, toml_prompt("a poster downloaded by a browser").encode(), chunks=8)
    time.sleep(SETTLE + 0.3)  # the empty placeholder has settled by now
    os.replace(part, final)

    wait_for(lambda: image(folder), what="poster image")
    drop_marker(folder, emu)
    assert prompts(emu) == ["a poster downloaded by a browser", "marker marker"]
    assert not outputs.note_path(final).exists()


# --------------------------------------------------------------------------- slow writers


def test_file_growing_for_three_seconds_is_submitted_once_after_the_last_write(
    tmp_path: Path, emu: Emulator, start_daemon: Start
) -> None:
    folder, _ = one_root(tmp_path, start_daemon, "never")
    text = "a slowly synced poster of a lighthouse at dusk with gulls"
    data = toml_prompt(text).encode()
    # The closing quote and newline come last: before that the TOML does not parse.
    body, tail = data[:-2], data[-2:]
    path = folder / "poster.prompt.toml"
    chunk = max(1, len(body) // 30)
    with open(path, "wb") as f:
        for i in range(0, len(body), chunk):
            f.write(body[i : i + chunk])
            f.flush()
            time.sleep(0.1)
            assert emu.stats()["submissions"] == [], "submitted while the file was growing"
        f.write(tail)
    last_write = time.monotonic()

    wait_for(lambda: emu.stats()["submissions"], what="the submission")
    assert time.monotonic() - last_write >= SETTLE * 0.9
    wait_for(lambda: image(folder), what="poster image")
    drop_marker(folder, emu)
    assert prompts(emu) == [text, "marker marker"]
    assert not outputs.note_path(path).exists()


def test_editor_atomic_save_over_a_done_file_submits_once_and_keeps_the_old_image(
    tmp_path: Path, emu: Emulator, start_daemon: Start
) -> None:
    folder, _ = one_root(tmp_path, start_daemon, "never")
    path = folder / "poster.prompt.toml"
    path.write_text(toml_prompt("first draft"), encoding="utf-8")
    first = wait_for(lambda: image(folder), what="first image")
    assert first is not None
    first_bytes = first.read_bytes()

    temp = folder / ".goutputstream-XYZ"
    temp.write_text(toml_prompt("second draft"), encoding="utf-8")
    os.replace(temp, path)

    wait_for(lambda: len(prompts(emu)) == 2, what="the second submission")
    kept = folder / f"poster.v1{first.suffix}"
    wait_for(kept.exists, what=str(kept))

    def replaced() -> bool:
        current = image(folder)
        return current is not None and current.read_bytes() != first_bytes

    wait_for(replaced, what="the new image")
    drop_marker(folder, emu)
    assert prompts(emu) == ["first draft", "second draft", "marker marker"]
    assert kept.read_bytes() == first_bytes


def test_touches_and_identical_resyncs_of_done_files_submit_nothing(
    tmp_path: Path, emu: Emulator, start_daemon: Start
) -> None:
    folder, _ = one_root(tmp_path, start_daemon, "never")
    files = [folder / f"p{i}.prompt.toml" for i in range(10)]
    for i, f in enumerate(files):
        f.write_text(toml_prompt(f"picture {i}"), encoding="utf-8")
    wait_for(lambda: all(image(folder, f"p{i}") for i in range(10)), what="ten images")
    assert len(prompts(emu)) == 10

    for n in range(100):
        f = files[n % 10]
        kind = n % 3
        if kind == 0:
            os.utime(f)
        elif kind == 1:
            f.write_bytes(f.read_bytes())
        else:
            temp = folder / f".{f.name}.sync{n}"
            shutil.copyfile(f, temp)
            os.replace(temp, f)
        time.sleep(0.005)
    time.sleep(SETTLE + 0.5)

    drop_marker(folder, emu)
    assert len(prompts(emu)) == 11
    assert not any(p.name.endswith(".error.txt") for p in folder.iterdir())


# --------------------------------------------------------------------------- conflict copies


@pytest.mark.parametrize("poll", MODES)
def test_conflict_copies_are_not_submitted_and_get_a_note(
    tmp_path: Path, emu: Emulator, start_daemon: Start, poll: str
) -> None:
    folder, _ = one_root(tmp_path, start_daemon, poll)
    copies = [
        folder / "poster (Alice's conflicted copy 2026-11-25).prompt.toml",
        folder / "poster.sync-conflict-20261125-123456-ABCDEFG.prompt.toml",
    ]
    for c in copies:
        c.write_text(toml_prompt("a conflicting poster"), encoding="utf-8")

    for c in copies:
        note = outputs.note_path(c)
        wait_for(note.exists, what=f"a note for {c.name}")
        assert "conflict copy" in note.read_text(encoding="utf-8")
    drop_marker(folder, emu)
    assert prompts(emu) == ["marker marker"]


# --------------------------------------------------------------------------- several roots


def test_each_root_applies_its_own_defaults_and_folder_style(
    tmp_path: Path, emu: Emulator, start_daemon: Start
) -> None:
    wide, tall = tmp_path / "wide", tmp_path / "tall"
    (wide / "styled").mkdir(parents=True)
    tall.mkdir()
    (wide / "styled" / ".promptdrop.toml").write_text(
        'style = "in watercolour"\n', encoding="utf-8"
    )
    start_daemon(
        [
            Root("wide", wide, settle=0.3, defaults={"size": "16:9"}),
            Root("tall", tall, settle=0.8, poll="always", defaults={"size": "9:16"}),
        ]
    )
    (wide / "a.prompt.toml").write_text(toml_prompt("wide plain"), encoding="utf-8")
    (wide / "styled" / "b.prompt.toml").write_text(toml_prompt("wide styled"), encoding="utf-8")
    (tall / "c.prompt.toml").write_text(toml_prompt("tall plain"), encoding="utf-8")
    (tall / "d.prompt.toml").write_text(toml_prompt("tall square", "1:1"), encoding="utf-8")

    wait_for(
        lambda: all(
            image(f.parent, f.name.split(".")[0])
            for f in [wide / "a.x", wide / "styled" / "b.x", tall / "c.x", tall / "d.x"]
        ),
        what="four images",
    )
    got = {s["prompt"]: s["size"] for s in emu.stats()["submissions"]}
    assert got == {
        "wide plain": "16:9",
        "wide styled" + STYLE_SEPARATOR + "in watercolour": "16:9",
        "tall plain": "9:16",
        "tall square": "1:1",
    }


# --------------------------------------------------------------------------- vanishing root


@pytest.mark.parametrize("poll", MODES)
def test_a_root_that_vanishes_and_returns_loses_nothing_and_pays_nothing(
    tmp_path: Path, emu: Emulator, start_daemon: Start, poll: str
) -> None:
    folder, daemon = one_root(tmp_path, start_daemon, poll)
    for i in range(3):
        (folder / f"p{i}.prompt.toml").write_text(toml_prompt(f"kept {i}"), encoding="utf-8")
    wait_for(lambda: all(image(folder, f"p{i}") for i in range(3)), what="three images")

    away = tmp_path / "unmounted"
    os.rename(folder, away)
    wait_for(lambda: "cannot be read" in daemon.log(), what="the daemon to notice")
    time.sleep(SETTLE + 0.3)
    os.rename(away, folder)
    wait_for(lambda: "watcher_root_back" in daemon.log(), what="the daemon to see it back")

    (folder / "fresh.prompt.toml").write_text(toml_prompt("after the return"), encoding="utf-8")
    wait_for(lambda: image(folder, "fresh"), what="the image of the new file")
    time.sleep(2 * SETTLE)
    assert sorted(prompts(emu)) == ["after the return", "kept 0", "kept 1", "kept 2"]
    statuses = source_statuses(tmp_path / "state")
    assert statuses == {
        str(folder / f"{n}.prompt.toml"): "active" for n in ("p0", "p1", "p2", "fresh")
    }
