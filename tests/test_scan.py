"""Walking a watched root: `watch --once` and the watcher's scans take up exactly the names the
one name filter (watch/names.py) calls prompt files or conflict copies of them."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from harness import cli, daemon_env, write_prompt
from promptdrop.emulator import Emulator
from promptdrop.ledger import LEDGER_NAME
from promptdrop.spec import RuleConfig
from promptdrop.watch.scan import scan, scan_tree

OTHER_CONFLICT_COPIES = [
    "photo (Ann's conflicted copy 2024-05-01).jpg",
    "settings (Ann's conflicted copy 2024-05-01).toml",
    "notes.sync-conflict-20240501-101010-ABCDEFG.txt",
]


def _rules(path: Path, folder: Path, *, recursive: bool) -> Path:
    text = (
        f'[[rules]]\nname = "drop"\npath = {json.dumps(str(folder))}\n'
        f"recursive = {'true' if recursive else 'false'}\nsettle = 0.1\n"
    )
    path.write_text(text, encoding="utf-8")
    return path


def _ledger_sources(state: Path) -> dict[str, str]:
    with sqlite3.connect(state / LEDGER_NAME) as db:
        return dict(db.execute("SELECT path, status FROM sources").fetchall())


@pytest.mark.parametrize("recursive", [False, True], ids=["flat", "recursive"])
def test_once_leaves_conflict_copies_of_other_files_alone(
    tmp_path: Path, emulator: Emulator, recursive: bool
) -> None:
    """A sync app's conflict copy of a photo or a settings file is not a prompt file: `watch
    --once` writes no note for it and keeps no ledger row, just as the watcher ignores it."""
    folder, state = tmp_path / "drop", tmp_path / "state"
    folder.mkdir()
    for name in OTHER_CONFLICT_COPIES:
        (folder / name).write_bytes(b"not a prompt\n")
    poster = write_prompt(folder / "poster.prompt.toml", "a cat in a spacesuit")
    rules = _rules(tmp_path / "rules.toml", folder, recursive=recursive)
    done = cli(
        "watch", "--once", "--rules", str(rules), "--state-dir", str(state),
        "--log-format", "json",
        env=daemon_env(emulator.base_url),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert _ledger_sources(state) == {str(poster): "active"}
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".error.txt")) == []
    assert {p.name for p in folder.iterdir()} >= {*OTHER_CONFLICT_COPIES, "poster.png"}


def _tree(root: Path) -> None:
    for rel in [
        "poster.prompt.toml",
        "poster (Ann's conflicted copy 2024-05-01).prompt.toml",
        "poster.prompt.sync-conflict-20240501-101010-ABCDEFG.toml",
        "photo (Ann's conflicted copy 2024-05-01).jpg",
        "poster.png",
        "poster.error.txt",
        ".promptdrop-tmp-0123abcd",
        "poster.prompt.toml.partial",
        "sub/flyer.prompt.toml",
        ".dropbox.cache/old.prompt.toml",
    ]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'prompt = "x"\n')
    (root / "folder.prompt.toml").mkdir()  # a folder with a prompt file's name


@pytest.mark.parametrize("recursive", [False, True], ids=["flat", "recursive"])
def test_the_once_scan_and_the_watchers_scan_find_the_same_files(
    tmp_path: Path, recursive: bool
) -> None:
    _tree(tmp_path)
    rule = RuleConfig.model_validate(
        {"name": "drop", "path": str(tmp_path), "recursive": recursive}
    )
    listed = [p.relative_to(tmp_path).as_posix() for p in scan(rule)]
    walked = {
        Path(p).relative_to(tmp_path).as_posix() for p in scan_tree(str(tmp_path), recursive).files
    }
    expected = [
        "poster (Ann's conflicted copy 2024-05-01).prompt.toml",
        "poster.prompt.sync-conflict-20240501-101010-ABCDEFG.toml",
        "poster.prompt.toml",
        *(["sub/flyer.prompt.toml"] if recursive else []),
    ]
    assert listed == expected
    assert walked == set(expected)


def test_a_scan_of_a_folder_that_cannot_be_listed_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        scan_tree(os.fspath(tmp_path / "missing"), True)
