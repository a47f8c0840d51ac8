"""The watcher: real watchdog observers on real temporary folders."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from promptdrop import watch as watcher_module
from promptdrop.watch import (
    FileEvent,
    Watcher,
    WatchRoot,
    is_candidate,
    is_conflict_copy,
    is_ignored,
    limit_advice,
)
from promptdrop.watch.fstypes import (
    PollMode,
    filesystem_type,
    find_mount,
    is_network_fstype,
    parse_mountinfo,
    should_poll,
    unescape,
)

MOUNTINFO = Path(__file__).parent / "data" / "mountinfo"
PROMPT = b'prompt = "a cat in a spacesuit"\n'
T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class Recorder:
    """Collects a watcher's events and waits for the ones a test expects."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.events: list[FileEvent] = []

    async def until(self, pred: Callable[[FileEvent], bool], timeout: float = 5.0) -> FileEvent:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if pred(event):
                return event
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"expected event not seen; got {self.kinds()}")
            try:
                event = await asyncio.wait_for(self.watcher.get(), remaining)
            except TimeoutError:
                continue
            self.events.append(event)
            if pred(event):
                return event

    async def settled(self, path: Path, timeout: float = 5.0) -> FileEvent:
        return await self.until(lambda e: e.kind == "settled" and e.path == path, timeout)

    async def quiet(self, seconds: float) -> None:
        """Keep collecting for `seconds` (to show that nothing more arrives)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                self.events.append(await asyncio.wait_for(self.watcher.get(), remaining))
            except TimeoutError:
                break

    def kinds(self, kind: str | None = None) -> list[tuple[str, str]]:
        return [(e.kind, e.path.name) for e in self.events if kind is None or e.kind == kind]

    def count(self, kind: str, path: Path) -> int:
        return sum(1 for e in self.events if e.kind == kind and e.path == path)


def root_at(
    path: Path,
    *,
    settle: float = 0.3,
    poll_interval: float = 0.2,
    poll: PollMode = "auto",
    recursive: bool = True,
) -> WatchRoot:
    return WatchRoot(
        "drop", path, recursive=recursive, poll=poll, poll_interval=poll_interval, settle=settle
    )


async def started(root: WatchRoot, warnings: list[str] | None = None) -> tuple[Watcher, Recorder]:
    w = Watcher([root], on_warning=None if warnings is None else warnings.append)
    await w.start()
    await asyncio.wait_for(w.ready.wait(), 10)
    return w, Recorder(w)


def write(path: Path, data: bytes = PROMPT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- names -----------------------------------------------------------------------------------

IGNORED = [
    ".promptdrop-tmp-abc123.prompt.toml",
    ".syncthing.poster.prompt.toml.tmp",
    "~syncthing~poster.prompt.toml.tmp",
    ".poster.prompt.toml.Xa8f3Q",
    "poster.prompt.toml.partial",
    "poster.prompt.toml.crdownload",
    "poster.prompt.toml.part",
    "poster.prompt.toml.filepart",
    "~$poster.prompt.toml",
    ".~lock.poster.prompt.toml#",
    ".poster.prompt.toml.swp",
    "poster.prompt.toml~",
    ".goutputstream-XYZ123",
    ".nfs000000000123abcd00000001",
    ".fuse_hidden0000000400000001",
    "._poster.prompt.toml",
    ".DS_Store",
    "Thumbs.db",
    ".prompt.toml",
]
IGNORED_FOLDERS = [".~tmp~", ".dropbox.cache", ".tmp.drivedownload", ".tmp.driveupload", ".git"]


@pytest.mark.parametrize("name", IGNORED)
def test_temporary_and_system_names_are_ignored(name: str) -> None:
    assert is_ignored(name)
    assert not is_candidate(Path("/drop") / name)


@pytest.mark.parametrize("folder", IGNORED_FOLDERS)
def test_prompt_files_inside_hidden_folders_are_not_candidates(folder: str) -> None:
    assert not is_candidate(Path("/drop") / folder / "poster.prompt.toml", Path("/drop"))


def test_hidden_folders_above_the_root_do_not_matter() -> None:
    root = Path("/home/ann/.local/drop")
    assert is_candidate(root / "sub" / "poster.prompt.toml", root)
    assert not is_candidate(Path("/elsewhere/poster.prompt.toml"), root)


@pytest.mark.parametrize(
    "name",
    [
        "poster (Ann's conflicted copy 2024-05-01).prompt.toml",
        "poster.prompt.sync-conflict-20240501-101010-ABCDEFG.toml",
        "poster.sync-conflict-20240501-101010-ABCDEFG.prompt.toml",
        "poster-safeBackup-0001.prompt.toml",
    ],
)
def test_conflict_copies_are_recognised_candidates(name: str) -> None:
    assert is_conflict_copy(name)
    assert is_candidate(Path("/drop") / name)


def test_plain_prompt_names_are_candidates_and_other_files_are_not() -> None:
    assert is_candidate(Path("/drop/poster.prompt.toml"))
    assert not is_conflict_copy("poster.prompt.toml")
    assert not is_candidate(Path("/drop/poster.png"))
    assert not is_candidate(Path("/drop/poster.toml"))
    assert not is_candidate(Path("/drop/.promptdrop.toml"))


def test_limit_advice_names_the_sysctl_to_raise() -> None:
    watches = limit_advice(OSError(errno.ENOSPC, "inotify watch limit reached"))
    instances = limit_advice(OSError(errno.EMFILE, "inotify instance limit reached"))
    assert watches is not None and "sysctl fs.inotify.max_user_watches=" in watches
    assert instances is not None and "sysctl fs.inotify.max_user_instances=" in instances
    assert limit_advice(OSError(errno.EACCES, "denied")) is None


# --- mountinfo -------------------------------------------------------------------------------


def mountinfo(name: str) -> str:
    return (MOUNTINFO / name).read_text()


def test_mountinfo_octal_escapes_are_decoded() -> None:
    assert unescape(r"/mnt/nas\040share") == "/mnt/nas share"
    points = {m.mount_point for m in parse_mountinfo(mountinfo("desktop-ext4-nfs-cifs.txt"))}
    assert {"/mnt/nas share", "/home/alice/old nfs", "/home/alice/usb\ttab"} <= points


def test_mountinfo_malformed_lines_are_skipped() -> None:
    mounts = parse_mountinfo(mountinfo("stacked-mounts.txt"))
    assert len(mounts) == 5


@pytest.mark.parametrize(
    ("sample", "path", "fstype"),
    [
        ("desktop-ext4-nfs-cifs.txt", "/home/alice/drop", "ext4"),
        ("desktop-ext4-nfs-cifs.txt", "/mnt/nas share/posters", "nfs4"),
        ("desktop-ext4-nfs-cifs.txt", "/mnt/nas", "ext4"),  # a prefix of a name is no match
        ("desktop-ext4-nfs-cifs.txt", "/mnt/smb", "cifs"),
        ("desktop-ext4-nfs-cifs.txt", "/home/alice/old nfs/x", "nfs"),
        ("desktop-ext4-nfs-cifs.txt", "/home/alice/usb\ttab/in", "fuseblk"),
        ("laptop-sshfs-rclone.txt", "/home/alice/remote/a/b", "fuse.sshfs"),
        ("laptop-sshfs-rclone.txt", "/home/alice/GoogleDrive", "fuse.rclone"),
        ("laptop-sshfs-rclone.txt", "/home/alice/Dropbox/team", "ext4"),
        ("wsl2-9p.txt", "/mnt/c/Users/ann/drop", "9p"),
        ("wsl2-9p.txt", "/home/ann/drop", "ext4"),
        ("docker-overlay.txt", "/app", "overlay"),
        ("docker-overlay.txt", "/drop/in", "ext4"),
        ("docker-overlay.txt", "/shared/in", "nfs"),
        ("docker-overlay.txt", "/ceph/x", "ceph"),
        ("docker-overlay.txt", "/gluster/x", "fuse.glusterfs"),
        ("stacked-mounts.txt", "/mnt/share/in", "ext4"),  # the later mount hides the earlier
        ("stacked-mounts.txt", "/mnt/share2/in", "smb3"),
        ("stacked-mounts.txt", "/mnt/afs", "afs"),
    ],
)
def test_the_longest_mount_point_decides_the_filesystem(
    sample: str, path: str, fstype: str
) -> None:
    mount = find_mount(path, parse_mountinfo(mountinfo(sample)))
    assert mount is not None and mount.fstype == fstype


@pytest.mark.parametrize(
    ("fstype", "network"),
    [
        ("nfs", True),
        ("nfs4", True),
        ("cifs", True),
        ("smb3", True),
        ("smbfs", True),
        ("fuse", True),
        ("fuseblk", True),
        ("fuse.sshfs", True),
        ("fuse.anything-new", True),
        ("9p", True),
        ("afs", True),
        ("ceph", True),
        ("glusterfs", True),
        ("sshfs", True),
        ("ext4", False),
        ("xfs", False),
        ("btrfs", False),
        ("overlay", False),
        ("tmpfs", False),
    ],
)
def test_network_and_fuse_filesystems_are_recognised(fstype: str, network: bool) -> None:
    assert is_network_fstype(fstype) is network


def test_poll_mode_auto_polls_only_on_network_mounts() -> None:
    text = mountinfo("desktop-ext4-nfs-cifs.txt")
    assert should_poll(Path("/mnt/nas share/posters"), "auto", text)
    assert should_poll(Path("/mnt/smb/in"), "auto", text)
    assert not should_poll(Path("/home/alice/drop"), "auto", text)
    assert should_poll(Path("/home/alice/drop"), "always", text)
    assert not should_poll(Path("/mnt/smb/in"), "never", text)
    assert filesystem_type(Path("/mnt/c/x"), mountinfo("wsl2-9p.txt")) == "9p"


def test_a_local_temporary_folder_is_watched_with_inotify(tmp_path: Path) -> None:
    w = Watcher([WatchRoot("a", tmp_path), WatchRoot("b", tmp_path / "b", poll="always")])
    assert not w.uses_polling("a")
    assert w.uses_polling(w.roots[1])


# --- inotify ---------------------------------------------------------------------------------


def test_a_dropped_file_settles_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        w, rec = await started(root_at(tmp_path))
        try:
            f = write(tmp_path / "poster.prompt.toml")
            event = await rec.settled(f)
            assert event.root.name == "drop"
            await rec.quiet(0.65)
            assert rec.kinds() == [("settled", "poster.prompt.toml")]
        finally:
            await w.stop()

    run(scenario())


async def write_in_chunks(path: Path, seconds: float) -> float:
    """Append a chunk every 100 ms; returns the monotonic time of the last write."""
    end = time.monotonic() + seconds
    with path.open("wb") as fh:
        fh.write(b"# ")
        while time.monotonic() < end:
            fh.write(b"x" * 100)
            fh.flush()
            await asyncio.sleep(0.1)
        fh.write(b"\n" + PROMPT)
        fh.flush()
        return time.monotonic()


@pytest.mark.parametrize("poll", ["never", "always"])
def test_a_file_written_in_chunks_settles_once_after_the_last_write(
    tmp_path: Path, poll: PollMode
) -> None:
    async def scenario() -> None:
        w, rec = await started(root_at(tmp_path, settle=0.5, poll=poll))
        try:
            assert w.uses_polling("drop") is (poll == "always")
            f = tmp_path / "slow.prompt.toml"
            writer = asyncio.create_task(write_in_chunks(f, 1.5))
            await rec.settled(f, timeout=8)
            seen = time.monotonic()
            assert writer.done(), "settled while still being written"
            assert seen - writer.result() >= 0.45
            await rec.quiet(0.8)
            assert rec.count("settled", f) == 1
        finally:
            await w.stop()

    run(scenario())


def test_an_atomic_save_settles_the_final_name_exactly_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        f = write(tmp_path / "poster.prompt.toml")
        w, rec = await started(root_at(tmp_path))
        try:
            await rec.settled(f)
            rec.events.clear()
            tmp = write(tmp_path / "poster.prompt.toml.tmp-4711", PROMPT + b'size = "16:9"\n')
            os.replace(tmp, f)
            await rec.settled(f)
            await rec.quiet(0.65)
            assert rec.kinds() == [("settled", "poster.prompt.toml")]
        finally:
            await w.stop()

    run(scenario())


def test_touching_a_settled_file_settles_it_again_once_per_burst(tmp_path: Path) -> None:
    async def scenario() -> None:
        f = write(tmp_path / "poster.prompt.toml")
        w, rec = await started(root_at(tmp_path))
        try:
            await rec.settled(f)
            rec.events.clear()
            for _ in range(3):
                f.touch()
                await asyncio.sleep(0.05)
            await rec.settled(f)
            await rec.quiet(0.65)
            assert rec.kinds() == [("settled", "poster.prompt.toml")]
        finally:
            await w.stop()

    run(scenario())


def test_ignored_names_and_hidden_folders_report_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        w, rec = await started(root_at(tmp_path))
        try:
            for name in IGNORED:
                write(tmp_path / name)
            for folder in IGNORED_FOLDERS:
                write(tmp_path / folder / "poster.prompt.toml")
            sentinel = write(tmp_path / "sentinel.prompt.toml")
            await rec.settled(sentinel)
            await rec.quiet(0.65)
            assert rec.kinds() == [("settled", "sentinel.prompt.toml")]
        finally:
            await w.stop()

    run(scenario())


def test_a_conflict_copy_is_reported_as_conflict(tmp_path: Path) -> None:
    async def scenario() -> None:
        w, rec = await started(root_at(tmp_path))
        try:
            f = write(tmp_path / "poster (Ann's conflicted copy 2024-05-01).prompt.toml")
            event = await rec.until(lambda e: e.path == f)
            assert event.kind == "conflict"
        finally:
            await w.stop()

    run(scenario())


def test_an_empty_placeholder_is_reported_only_once_it_has_content(tmp_path: Path) -> None:
    async def scenario() -> None:
        w, rec = await started(root_at(tmp_path))
        try:
            f = write(tmp_path / "download.prompt.toml", b"")
            await rec.quiet(1.0)
            assert rec.events == []
            f.write_bytes(PROMPT)
            await rec.settled(f)
        finally:
            await w.stop()

    run(scenario())


def test_deleting_a_settled_file_reports_it_deleted(tmp_path: Path) -> None:
    async def scenario() -> None:
        f = write(tmp_path / "poster.prompt.toml")
        w, rec = await started(root_at(tmp_path))
        try:
            await rec.settled(f)
            f.unlink()
            await rec.until(lambda e: e.kind == "deleted" and e.path == f)
        finally:
            await w.stop()

    run(scenario())


def test_moving_a_file_within_the_root_reports_deleted_then_settled(tmp_path: Path) -> None:
    async def scenario() -> None:
        old = write(tmp_path / "poster.prompt.toml")
        w, rec = await started(root_at(tmp_path))
        try:
            await rec.settled(old)
            new = tmp_path / "sub" / "renamed.prompt.toml"
            new.parent.mkdir()
            old.rename(new)
            await rec.settled(new)
            await rec.until(lambda e: e.kind == "deleted" and e.path == old)
            await rec.quiet(0.5)
            assert rec.count("settled", new) == 1
        finally:
            await w.stop()

    run(scenario())


def test_a_folder_moved_into_the_root_brings_its_prompt_files(tmp_path: Path) -> None:
    async def scenario() -> None:
        root = tmp_path / "root"
        root.mkdir()
        outside = tmp_path / "outside" / "batch"
        names = ["a.prompt.toml", "b.prompt.toml", "deeper/c.prompt.toml"]
        for name in names:
            write(outside / name)
        write(outside / ".hidden" / "d.prompt.toml")
        w, rec = await started(root_at(root))
        try:
            outside.rename(root / "batch")
            for name in names:
                await rec.settled(root / "batch" / name)
            await rec.quiet(0.65)
            assert sorted(rec.kinds("settled")) == sorted(("settled", Path(n).name) for n in names)
        finally:
            await w.stop()

    run(scenario())


def test_a_non_recursive_root_ignores_subfolders(tmp_path: Path) -> None:
    async def scenario() -> None:
        write(tmp_path / "old" / "existing.prompt.toml")
        w, rec = await started(root_at(tmp_path, recursive=False))
        try:
            (tmp_path / "sub").mkdir()
            write(tmp_path / "sub" / "nested.prompt.toml")
            top = write(tmp_path / "top.prompt.toml")
            await rec.settled(top)
            await rec.quiet(0.65)
            assert rec.kinds() == [("settled", "top.prompt.toml")]
        finally:
            await w.stop()

    run(scenario())


def test_the_first_scan_reports_every_existing_file_once_and_sets_ready(tmp_path: Path) -> None:
    expected = {write(tmp_path / f"d{i % 10}" / f"p{i:03}.prompt.toml") for i in range(500)}
    write(tmp_path / "empty.prompt.toml", b"")

    async def scenario() -> None:
        w = Watcher([root_at(tmp_path, settle=0.5)])
        await w.start()
        await asyncio.wait_for(w.ready.wait(), 10)
        rec = Recorder(w)
        while not w._queue.empty():
            rec.events.append(w._queue.get_nowait())
        try:
            assert {e.path for e in rec.events} == expected
            assert len(rec.events) == 500
            assert all(e.kind == "settled" for e in rec.events)
            await rec.quiet(0.3)
            assert len(rec.events) == 500
        finally:
            await w.stop()

    run(scenario())


def test_a_root_given_through_a_symlink_reports_paths_under_the_link(tmp_path: Path) -> None:
    async def scenario() -> None:
        real = tmp_path / "real"
        write(real / "before.prompt.toml")
        link = tmp_path / "link"
        link.symlink_to(real, target_is_directory=True)
        w, rec = await started(root_at(link))
        try:
            await rec.settled(link / "before.prompt.toml")
            write(real / "sub" / "after.prompt.toml")
            await rec.settled(link / "sub" / "after.prompt.toml")
        finally:
            await w.stop()

    run(scenario())


def test_rescan_reports_unchanged_files_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        f = write(tmp_path / "poster.prompt.toml")
        w, rec = await started(root_at(tmp_path))
        try:
            await rec.settled(f)
            rec.events.clear()
            w.rescan("drop")
            await rec.settled(f)
            with pytest.raises(ValueError):
                w.rescan("nope")
        finally:
            await w.stop()

    run(scenario())


def test_stop_returns_promptly(tmp_path: Path) -> None:
    async def scenario() -> float:
        w, _ = await started(root_at(tmp_path))
        polled, _ = await started(root_at(tmp_path / "p", poll="always", poll_interval=5.0))
        began = time.monotonic()
        await asyncio.gather(w.stop(), polled.stop())
        return time.monotonic() - began

    (tmp_path / "p").mkdir()
    assert run(scenario()) < 1.0


# --- polling ---------------------------------------------------------------------------------


def test_a_polled_root_reports_drops_and_deletions(tmp_path: Path) -> None:
    async def scenario() -> None:
        w, rec = await started(root_at(tmp_path, poll="always"))
        try:
            assert w.uses_polling("drop")
            f = write(tmp_path / "poster.prompt.toml")
            await rec.settled(f)
            await rec.quiet(0.6)
            assert rec.count("settled", f) == 1
            f.unlink()
            await rec.until(lambda e: e.kind == "deleted" and e.path == f)
        finally:
            await w.stop()

    run(scenario())


# --- availability and supervision ------------------------------------------------------------


def test_a_root_deleted_and_recreated_is_unavailable_then_available_without_deletions(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        root = tmp_path / "share"
        first = write(root / "a.prompt.toml")
        write(root / "sub" / "b.prompt.toml")
        warnings: list[str] = []
        w, rec = await started(root_at(root), warnings)
        try:
            await rec.settled(first)
            shutil.rmtree(root)
            await rec.until(lambda e: e.kind == "root_unavailable")
            assert any(str(root) in m for m in warnings)
            root.mkdir()
            await rec.until(lambda e: e.kind == "root_available")
            later = write(root / "later.prompt.toml")
            await rec.settled(later)
            assert rec.kinds("deleted") == []
        finally:
            await w.stop()

    run(scenario())


def test_a_root_missing_at_start_is_reported_and_picked_up_when_it_appears(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        root = tmp_path / "not-yet"
        w = Watcher([root_at(root)], on_warning=lambda m: None)
        await w.start()
        rec = Recorder(w)
        try:
            await asyncio.wait_for(w.ready.wait(), 2)
            await rec.until(lambda e: e.kind == "root_unavailable" and e.path == root)
            write(root / "poster.prompt.toml")
            await rec.until(lambda e: e.kind == "root_available")
            await rec.settled(root / "poster.prompt.toml")
        finally:
            await w.stop()

    run(scenario())


def test_most_files_vanishing_at_once_is_an_outage_not_a_burst_of_deletions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watcher_module, "MASS_DELETE_GRACE", 1.0)

    async def scenario() -> None:
        files = [write(tmp_path / f"p{i:02}.prompt.toml") for i in range(12)]
        w, rec = await started(root_at(tmp_path), [])
        try:
            for f in files[:11]:
                f.unlink()
            await rec.until(lambda e: e.kind == "root_unavailable")
            # Still gone while the folder stays readable: after the grace time it is back,
            # and the vanished files are forgotten quietly.
            await rec.until(lambda e: e.kind == "root_available", timeout=5)
            later = write(tmp_path / "later.prompt.toml")
            await rec.settled(later)
            assert rec.kinds("deleted") == []
            # Deletions after the return are reported again, one by one.
            files[11].unlink()
            await rec.until(lambda e: e.kind == "deleted" and e.path == files[11])
        finally:
            await w.stop()

    run(scenario())


def test_an_observer_stopped_behind_the_watchers_back_is_restarted(tmp_path: Path) -> None:
    async def scenario() -> None:
        w, rec = await started(root_at(tmp_path))
        try:
            observer = w._observer("drop")
            assert observer is not None
            await asyncio.to_thread(observer.stop)
            await asyncio.sleep(1.0)
            assert w._observer("drop") is not observer
            f = write(tmp_path / "after.prompt.toml")
            await rec.settled(f)
        finally:
            await w.stop()

    run(scenario())


def test_an_inotify_queue_overflow_warns_and_keeps_watching(tmp_path: Path) -> None:
    async def scenario() -> None:
        warnings: list[str] = []
        w, rec = await started(root_at(tmp_path), warnings)
        try:
            # watchdog reports an overflow only through this log line (inotify_c.py).
            logging.getLogger("watchdog.observers.inotify_c").warning(
                "Inotify queue overflowed; filesystem events were lost"
            )
            f = write(tmp_path / "poster.prompt.toml")
            await rec.settled(f)
            assert any("fs.inotify.max_queued_events" in m for m in warnings)
        finally:
            await w.stop()

    run(scenario())
