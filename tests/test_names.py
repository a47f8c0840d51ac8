"""The one name filter (watch/names.py): which names are prompt files, conflict copies of them,
or nothing promptdrop looks at. The watcher, `watch --once`, the reconcile pass and `check` all
use it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from promptdrop.commands.check import EXIT_VALID, run_check
from promptdrop.watch import classify, is_candidate
from promptdrop.watch.names import is_candidate_under

PROMPTS = [
    "poster.prompt.toml",
    "Poster Final v2.prompt.toml",
    "a.b.c.prompt.toml",
    "ünïcödé poster.prompt.toml",
    # Google Drive's copy of a name that already exists: an ordinary prompt file (same content,
    # same request, nothing is paid twice).
    "poster (1).prompt.toml",
]

CONFLICTS = [
    # Dropbox
    "poster (Ann's conflicted copy 2024-05-01).prompt.toml",
    "poster (conflicted copy).prompt.toml",
    "poster (Ann's Conflicted Copy 2024-05-01).prompt.toml",
    "poster (Ann's conflicted copy 2024-05-01 (1)).prompt.toml",
    # Syncthing, marker before the last extension or before the prompt suffix
    "poster.prompt.sync-conflict-20240501-101010-ABCDEFG.toml",
    "poster.sync-conflict-20240501-101010-ABCDEFG.prompt.toml",
    # safeBackup copies
    "poster-safeBackup-0001.prompt.toml",
]

NOTHING = [
    # our own temporary files, outputs, notes and folder defaults
    ".promptdrop-tmp-0123abcd89ef",
    ".promptdrop-tmp-abc123.prompt.toml",
    "poster.png",
    "poster-2.png",
    "poster.jpg",
    "poster.webp",
    "poster.error.txt",
    ".promptdrop.toml",
    # other TOML files
    "rules.toml",
    "poster.toml",
    "poster.prompt.toml.bak",
    # temporary files of sync apps, browsers and editors
    ".syncthing.poster.prompt.toml.tmp",
    "~syncthing~poster.prompt.toml.tmp",
    ".poster.prompt.toml.Xa8f3Q",
    "poster.prompt.toml.partial",
    "poster.prompt.toml.crdownload",
    "poster.prompt.toml.part",
    "poster.prompt.toml.filepart",
    "poster.prompt.toml.tmp",
    "POSTER.PROMPT.TOML.TMP",
    "~$poster.prompt.toml",
    ".~lock.poster.prompt.toml#",
    ".poster.prompt.toml.swp",
    "poster.prompt.toml~",
    ".goutputstream-XYZ123",
    ".nfs000000000123abcd00000001",
    ".fuse_hidden0000000400000001",
    "._poster.prompt.toml",
    # OS litter
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    # conflict copies of files that are not prompt files
    "photo (Ann's conflicted copy 2024-05-01).jpg",
    "poster (Ann's conflicted copy 2024-05-01).png",
    "settings (conflicted copy).toml",
    "rules.sync-conflict-20240501-101010-ABCDEFG.toml",
    "notes.sync-conflict-20240501-101010-ABCDEFG.txt",
    "poster.error (conflicted copy).txt",
    # a temporary file of a conflict copy is still a temporary file
    "poster (conflicted copy).prompt.toml.partial",
    ".poster.sync-conflict-20240501-101010-ABCDEFG.prompt.toml.tmp",
    # Google Drive and OneDrive copies that no longer end in the prompt suffix
    "poster.prompt (1).toml",
    "poster.prompt-LAPTOP-4F2.toml",
    # degenerate names
    "",
    ".prompt.toml",
]


@pytest.mark.parametrize("name", PROMPTS)
def test_prompt_file_names_are_prompt_files(name: str) -> None:
    assert classify(name) == "prompt"
    assert is_candidate(Path("/drop") / name)


@pytest.mark.parametrize("name", CONFLICTS)
def test_sync_apps_conflict_copies_of_prompt_files_are_conflicts(name: str) -> None:
    assert classify(name) == "conflict"
    assert is_candidate(Path("/drop") / name)


@pytest.mark.parametrize("name", NOTHING)
def test_every_other_name_is_never_looked_at(name: str) -> None:
    assert classify(name) is None
    if name:
        assert not is_candidate(Path("/drop") / name)


@pytest.mark.parametrize(
    ("path", "recursive", "expected"),
    [
        ("/drop/poster.prompt.toml", True, True),
        ("/drop/poster.prompt.toml", False, True),
        ("/drop/sub/poster.prompt.toml", True, True),
        ("/drop/sub/poster.prompt.toml", False, False),
        ("/drop/.dropbox.cache/poster.prompt.toml", True, False),
        ("/drop/sub/.tmp.drivedownload/poster.prompt.toml", True, False),
        ("/drop/sub/poster.png", True, False),
        ("/dropbox/poster.prompt.toml", True, False),
        ("/elsewhere/poster.prompt.toml", True, False),
        ("/drop", True, False),
    ],
)
def test_paths_under_a_root_are_candidates_by_name_and_folder(
    path: str, recursive: bool, expected: bool
) -> None:
    assert is_candidate_under("/drop", path, recursive=recursive) is expected
    assert is_candidate_under("/drop/", path, recursive=recursive) is expected
    if recursive:
        assert is_candidate(path, "/drop") is expected


def test_check_takes_up_in_folders_only_what_the_daemon_takes_up(tmp_path: Path) -> None:
    """An Office lock file or a conflict copy next to a prompt file is not checked: the daemon
    never reads them as prompt files either."""
    (tmp_path / "poster.prompt.toml").write_text('prompt = "a cat"\n', encoding="utf-8")
    (tmp_path / ".promptdrop.toml").write_text('size = "16:9"\n', encoding="utf-8")
    (tmp_path / "~$poster.prompt.toml").write_bytes(b"\x00\x01 office lock")
    (tmp_path / "poster (Ann's conflicted copy 2024-05-01).prompt.toml").write_text(
        "promt = 'typo'\n", encoding="utf-8"
    )
    (tmp_path / "poster.prompt.sync-conflict-20240501-101010-ABCDEFG.toml").write_text(
        "not = [toml\n", encoding="utf-8"
    )
    out = io.StringIO()
    assert run_check([tmp_path], out) == EXIT_VALID, out.getvalue()
    assert out.getvalue().strip().splitlines()[-1] == "checked 2 files: all valid"
