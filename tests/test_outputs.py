"""Files in users' folders: naming, atomic no-clobber writes, provenance, error notes, temp cleanup.

Everything happens on real files in tmp_path. OS faults (a full disk, a file system without hard
links) come from a real small tmpfs where the sandbox allows mounting one, otherwise they are
injected at the OS-call layer.
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from promptdrop import imaging, outputs
from promptdrop.outputs import (
    NAME_MAX_BYTES,
    NOTE_MARKER,
    TEMP_PREFIX,
    cleanup_temps,
    clear_note,
    copy_atomic,
    is_own_note,
    is_own_temp,
    move_no_clobber,
    note_path,
    output_path,
    read_provenance,
    source_stem,
    versioned_path,
    with_provenance,
    write_atomic,
    write_note,
)

INFO = {
    "promptdrop:prompt": 'Eine Katze im Raumanzug 🚀, "retro" poster\nsecond line',
    "promptdrop:model": "gemini-2.5-flash-image-preview",
    "promptdrop:size": "16:9",
    "promptdrop:task_id": "task_01J9ABC",
    "promptdrop:source": "posters/poster.prompt.toml",
    "promptdrop:version": "0.1.0",
}


def temps(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX))


def make_image(fmt: str, size: tuple[int, int] = (40, 24), **save: object) -> bytes:
    img = Image.new("RGB", size)
    img.putdata(
        [
            ((x * 7) % 256, (y * 11) % 256, (x * y) % 256)
            for y in range(size[1])
            for x in range(size[0])
        ]
    )
    buf = io.BytesIO()
    img.save(buf, format=fmt.upper(), **save)
    return buf.getvalue()


def pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.mode, img.size, img.tobytes()


@pytest.fixture
def no_hardlinks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder's file system refuses hard links, as vfat and many FUSE/SMB mounts do."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)


# --- names -----------------------------------------------------------------------------------


def test_outputs_are_named_after_the_prompt_file() -> None:
    src = Path("/share/posters/poster.prompt.toml")
    assert source_stem(src) == "poster"
    assert source_stem("my.cat.prompt.toml") == "my.cat"
    assert output_path(src, 1, 1, "png") == Path("/share/posters/poster.png")
    assert output_path(src, 1, 1, "jpeg") == Path("/share/posters/poster.jpg")
    assert output_path(src, 1, 3, "webp") == Path("/share/posters/poster-1.webp")
    assert output_path(src, 3, 3, "png") == Path("/share/posters/poster-3.png")
    assert note_path(src) == Path("/share/posters/poster.error.txt")


def test_output_path_rejects_impossible_indexes_and_unknown_formats() -> None:
    with pytest.raises(ValueError):
        output_path("a.prompt.toml", 0, 2, "png")
    with pytest.raises(ValueError):
        output_path("a.prompt.toml", 3, 2, "png")
    with pytest.raises(ValueError):
        output_path("a.prompt.toml", 1, 1, "tiff")


def test_a_prompt_file_with_an_empty_stem_does_not_make_hidden_outputs() -> None:
    assert output_path(".prompt.toml", 1, 1, "png").name == "prompt.png"


def test_versioned_path_takes_the_first_free_number(tmp_path: Path) -> None:
    final = tmp_path / "poster.png"
    assert versioned_path(final) == tmp_path / "poster.v1.png"
    (tmp_path / "poster.v1.png").write_bytes(b"1")
    assert versioned_path(final) == tmp_path / "poster.v2.png"
    (tmp_path / "poster.v3.png").write_bytes(b"3")
    assert versioned_path(final) == tmp_path / "poster.v2.png"
    # A dangling symlink is not free: moving onto it would replace it.
    (tmp_path / "poster.v2.png").symlink_to(tmp_path / "nowhere")
    assert versioned_path(final) == tmp_path / "poster.v4.png"


def test_names_for_a_255_byte_prompt_file_stay_within_the_limit(tmp_path: Path) -> None:
    stem = "x" * (NAME_MAX_BYTES - len(b".prompt.toml"))
    src = tmp_path / f"{stem}.prompt.toml"
    src.write_text('prompt = "x"\n')  # the file system accepts the source name itself
    for path in [output_path(src, 1, 1, "webp"), output_path(src, 10, 10, "jpeg"), note_path(src)]:
        assert len(os.fsencode(path.name)) <= NAME_MAX_BYTES
        write_atomic(path, b"data")
    # Kept versions of the longest output name need more room than is left.
    latest = output_path(src, 10, 10, "webp")
    write_atomic(latest, b"v0")
    for version in range(1, 120):
        kept = versioned_path(latest)
        assert len(os.fsencode(kept.name)) <= NAME_MAX_BYTES
        move_no_clobber(latest, kept)
        write_atomic(latest, b"v%d" % version)
    assert len(os.listdir(tmp_path)) == 4 + 120
    assert temps(tmp_path) == []


def test_long_names_are_shortened_by_whole_characters_and_deterministically(
    tmp_path: Path,
) -> None:
    # A name without the prompt suffix keeps a longer stem; 3-byte characters, so a cut in the
    # wrong place would split one.
    stem = "猫" * 84
    src = tmp_path / f"{stem}.toml"
    first = output_path(src, 10, 10, "webp")
    assert len(first.name.encode("utf-8")) <= NAME_MAX_BYTES  # also: still valid UTF-8
    assert first.name.endswith("-10.webp")
    assert output_path(src, 10, 10, "webp") == first
    assert output_path(src, 9, 10, "webp") != first
    assert output_path(tmp_path / f"{stem[:-1]}犬.toml", 10, 10, "webp") != first
    write_atomic(first, b"data")
    assert first.read_bytes() == b"data"


def test_names_with_newlines_and_odd_unicode_work(tmp_path: Path) -> None:
    for stem in ["new\nline", "tab\there", "e\u0301 Cafe\u0301 ☕", "rtl \u202e gnp", "\udcff raw"]:
        src = tmp_path / f"{stem}.prompt.toml"
        final = output_path(src, 1, 1, "png")
        assert final.name == f"{stem}.png"
        write_atomic(final, b"img")
        assert final.read_bytes() == b"img"
        assert write_note(src, "The prompt is empty.")
        note = note_path(src).read_text(encoding="utf-8", errors="replace")
        assert note.startswith(NOTE_MARKER)
        # The name's control characters cannot break the one-line header.
        assert note.split("\n")[1] == ""
        assert clear_note(src)
    assert temps(tmp_path) == []


# --- atomic writes ---------------------------------------------------------------------------


def test_write_atomic_creates_exactly_the_final_file(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    write_atomic(tmp_path / "poster.png", data)
    assert os.listdir(tmp_path) == ["poster.png"]
    assert (tmp_path / "poster.png").read_bytes() == data


def test_written_files_are_readable_by_the_folders_other_users(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "poster.png", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "poster.png").stat().st_mode & 0o777 == 0o644


def test_write_atomic_never_replaces_an_existing_file(tmp_path: Path) -> None:
    final = tmp_path / "poster.png"
    final.write_bytes(b"the user's own poster")
    with pytest.raises(FileExistsError):
        write_atomic(final, b"ours")
    assert final.read_bytes() == b"the user's own poster"
    assert temps(tmp_path) == []


def test_write_atomic_loses_a_race_for_the_name_without_clobbering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is taken after the early check, while our temp file is being written."""
    final = tmp_path / "poster.png"
    real_fsync = os.fsync

    def fsync_then_someone_writes(fd: int) -> None:
        real_fsync(fd)
        if not final.exists():
            final.write_bytes(b"theirs")

    monkeypatch.setattr(os, "fsync", fsync_then_someone_writes)
    with pytest.raises(FileExistsError):
        write_atomic(final, b"ours")
    assert final.read_bytes() == b"theirs"
    assert temps(tmp_path) == []


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    """An empty folder, and whether it is a real 64 KiB tmpfs (when the sandbox allows mounting)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
            capture_output=True,
            timeout=10,
            check=False,
        )
        mounted = done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        mounted = False
    try:
        yield mnt, mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], capture_output=True, timeout=10, check=False)


def test_a_full_disk_leaves_no_partial_image_and_no_temp(
    small_fs: tuple[Path, bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, mounted = small_fs
    if not mounted:
        # No mount allowed: the disk fills up after the first 16 KiB reach it.
        real_write = os.write
        calls = {"n": 0}

        def write_until_full(fd: int, data: bytes | memoryview) -> int:
            calls["n"] += 1
            if calls["n"] > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, bytes(data[:16384]))

        monkeypatch.setattr(os, "write", write_until_full)
    final = folder / "poster.png"
    with pytest.raises(OSError) as caught:
        write_atomic(final, os.urandom(256 * 1024))
    assert caught.value.errno == errno.ENOSPC
    assert os.listdir(folder) == []
    # The daemon carries on once space is free again.
    if not mounted:
        monkeypatch.undo()
    write_atomic(final, b"small image")
    assert os.listdir(folder) == ["poster.png"]


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC, errno.EDQUOT])
def test_a_failing_fsync_leaves_no_image_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    """Network file systems often report a full disk or I/O error only when data is flushed."""

    def failing_fsync(fd: int) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError) as caught:
        write_atomic(tmp_path / "poster.png", b"x" * 1000)
    assert caught.value.errno == err
    assert os.listdir(tmp_path) == []


@pytest.mark.usefixtures("no_hardlinks")
@pytest.mark.parametrize("renameat2", ["available", "missing"])
def test_without_hard_links_writes_fall_back_to_a_no_clobber_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renameat2: str
) -> None:
    if renameat2 == "missing":
        monkeypatch.setattr(outputs.atomic, "_RENAMEAT2", None)
    final = tmp_path / "poster.png"
    write_atomic(final, b"image")
    assert final.read_bytes() == b"image"
    with pytest.raises(FileExistsError):
        write_atomic(final, b"second")
    assert final.read_bytes() == b"image"
    move_no_clobber(final, tmp_path / "poster.v1.png")
    assert os.listdir(tmp_path) == ["poster.v1.png"]
    (tmp_path / "other.png").write_bytes(b"other")
    with pytest.raises(FileExistsError):
        move_no_clobber(tmp_path / "other.png", tmp_path / "poster.v1.png")
    assert (tmp_path / "poster.v1.png").read_bytes() == b"image"
    assert (tmp_path / "other.png").read_bytes() == b"other"
    assert temps(tmp_path) == []


def test_copy_atomic_copies_without_clobbering(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"A")
    copy_atomic(tmp_path / "a.png", tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes() == b"A"
    (tmp_path / "c.png").write_bytes(b"C")
    with pytest.raises(FileExistsError):
        copy_atomic(tmp_path / "a.png", tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes() == b"C"
    assert temps(tmp_path) == []


def test_move_no_clobber_keeps_both_files_when_the_name_is_taken(tmp_path: Path) -> None:
    (tmp_path / "poster.png").write_bytes(b"old")
    move_no_clobber(tmp_path / "poster.png", tmp_path / "poster.v1.png")
    assert sorted(os.listdir(tmp_path)) == ["poster.v1.png"]
    (tmp_path / "poster.png").write_bytes(b"new")
    with pytest.raises(FileExistsError):
        move_no_clobber(tmp_path / "poster.png", tmp_path / "poster.v1.png")
    assert (tmp_path / "poster.png").read_bytes() == b"new"
    assert (tmp_path / "poster.v1.png").read_bytes() == b"old"
    with pytest.raises(FileNotFoundError):
        move_no_clobber(tmp_path / "missing.png", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --- temporary files -------------------------------------------------------------------------


def test_cleanup_temps_removes_only_our_leftover_files(tmp_path: Path) -> None:
    (tmp_path / f"{TEMP_PREFIX}abc").write_bytes(b"partial")
    (tmp_path / f"{TEMP_PREFIX}def").write_bytes(b"partial")
    (tmp_path / f"{TEMP_PREFIX}dir").mkdir()
    (tmp_path / f"{TEMP_PREFIX}link").symlink_to(tmp_path / "poster.png")
    (tmp_path / "poster.png").write_bytes(b"img")
    (tmp_path / ".promptdrop-other").write_bytes(b"x")
    (tmp_path / ".~lock.poster.png#").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / f"{TEMP_PREFIX}nested").write_bytes(b"x")
    assert cleanup_temps(tmp_path) == 2
    assert sorted(os.listdir(tmp_path)) == sorted(
        [
            f"{TEMP_PREFIX}dir",
            f"{TEMP_PREFIX}link",
            "poster.png",
            ".promptdrop-other",
            ".~lock.poster.png#",
            "sub",
        ]
    )
    assert (tmp_path / "poster.png").read_bytes() == b"img"
    assert cleanup_temps(tmp_path / "gone") == 0


def test_cleanup_temps_can_spare_temps_another_writer_is_using(tmp_path: Path) -> None:
    fresh, stale = tmp_path / f"{TEMP_PREFIX}fresh", tmp_path / f"{TEMP_PREFIX}stale"
    fresh.write_bytes(b"x")
    stale.write_bytes(b"x")
    os.utime(stale, (1_000_000_000, 1_000_000_000))
    assert cleanup_temps(tmp_path, older_than=60) == 1
    assert fresh.exists() and not stale.exists()


def test_is_own_temp_recognises_our_temp_names() -> None:
    assert is_own_temp(f"{TEMP_PREFIX}0123abcd")
    assert is_own_temp(Path("/x") / f"{TEMP_PREFIX}0123abcd")
    assert not is_own_temp("poster.png")
    assert not is_own_temp(f"dir{TEMP_PREFIX}x")


# --- provenance ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_png_provenance_round_trips_without_touching_pixels(mode: str) -> None:
    img = Image.open(io.BytesIO(make_image("png"))).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    original = buf.getvalue()
    stamped = with_provenance(original, "png", INFO)
    assert read_provenance(stamped) == INFO
    assert pixels(stamped) == pixels(original)
    assert imaging.inspect(stamped).format == "png"
    with Image.open(io.BytesIO(stamped)) as decoded:
        decoded.verify()  # checks every chunk CRC
    with Image.open(io.BytesIO(stamped)) as decoded:
        assert isinstance(decoded, PngImagePlugin.PngImageFile)
        assert {k: decoded.text[k] for k in INFO} == INFO


def test_stamping_a_png_again_replaces_the_earlier_provenance() -> None:
    original = make_image("png", pnginfo=_pnginfo({"Author": "someone", "promptdrop:size": "1:1"}))
    once = with_provenance(original, "png", INFO)
    again = with_provenance(once, "png", {**INFO, "promptdrop:source": "copy.prompt.toml"})
    found = read_provenance(again)
    assert found == {**INFO, "promptdrop:source": "copy.prompt.toml", "Author": "someone"}
    assert again.count(b"promptdrop:source") == 1
    assert pixels(again) == pixels(original)


def _pnginfo(text: dict[str, str]) -> object:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    return info


def test_jpeg_provenance_round_trips_without_touching_pixels() -> None:
    exif = Image.Exif()
    exif[0x0131] = "camera software"  # Software
    original = make_image("jpeg", quality=85, exif=exif.tobytes(), comment=b"made by hand")
    stamped = with_provenance(original, "jpeg", INFO)
    assert read_provenance(stamped) == INFO
    assert pixels(stamped) == pixels(original)
    # Our comment segment is the only difference: nothing was re-encoded.
    assert _without_json_comments(stamped) == original
    with Image.open(io.BytesIO(stamped)) as decoded:
        assert decoded.getexif()[0x0131] == "camera software"
        assert decoded.info["comment"] in (b"made by hand", _com_payload(stamped))
    again = with_provenance(stamped, "jpeg", {**INFO, "promptdrop:task_id": "task_2"})
    assert read_provenance(again)["promptdrop:task_id"] == "task_2"
    assert again.count(b"promptdrop:task_id") == 1
    assert b"made by hand" in again
    assert pixels(again) == pixels(original)


def _without_json_comments(data: bytes) -> bytes:
    """The JPEG with every COM segment that holds a JSON object cut out."""
    out, pos = b"", 0
    while (start := data.find(b"\xff\xfe", pos)) != -1:
        end = start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")
        try:
            is_json = isinstance(json.loads(data[start + 4 : end]), dict)
        except ValueError:
            is_json = False
        out += data[pos:start] if is_json else data[pos:end]
        pos = end
    return out + data[pos:]


def _com_payload(data: bytes) -> bytes:
    start = data.index(b"\xff\xfe")
    length = int.from_bytes(data[start + 2 : start + 4], "big")
    return data[start + 4 : start + 2 + length]


def test_jpeg_provenance_comment_comes_after_the_jfif_header() -> None:
    stamped = with_provenance(make_image("jpeg"), "jpeg", INFO)
    assert stamped[2:4] == b"\xff\xe0"  # APP0 still directly follows SOI


def test_a_webp_without_our_xmp_has_no_provenance() -> None:
    """WebP now carries provenance as XMP (tests/test_webp_provenance.py); a plain one has none."""
    assert read_provenance(make_image("webp")) == {}


def test_provenance_refuses_data_that_is_not_the_named_format() -> None:
    png = make_image("png")
    with pytest.raises(imaging.ImageError):
        with_provenance(png, "jpeg", INFO)
    with pytest.raises(imaging.ImageError):
        with_provenance(png[: len(png) // 2], "png", INFO)
    with pytest.raises(ValueError):
        with_provenance(png, "png", {"ключ": "non-Latin-1 PNG keyword"})


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n\0\0", b"\xff\xd8\xff"])
def test_read_provenance_of_garbage_is_empty(data: bytes) -> None:
    assert read_provenance(data) == {}


# --- error notes -----------------------------------------------------------------------------


def test_an_error_note_says_who_wrote_it_and_when_it_goes_away(tmp_path: Path) -> None:
    src = tmp_path / "poster.prompt.toml"
    assert write_note(src, "Line 3: size must be one of 1:1, 16:9, ...\nFix the size and save.")
    text = (tmp_path / "poster.error.txt").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == f"{NOTE_MARKER}poster.prompt.toml"
    assert "Line 3: size must be one of 1:1, 16:9, ..." in lines
    assert "poster.prompt.toml" in lines[-1] and "goes away" in lines[-1]
    assert is_own_note(tmp_path / "poster.error.txt")
    assert temps(tmp_path) == []


def test_our_earlier_note_is_replaced_and_then_cleared(tmp_path: Path) -> None:
    src = tmp_path / "poster.prompt.toml"
    note = tmp_path / "poster.error.txt"
    assert write_note(src, "first problem")
    assert write_note(src, "second problem")
    assert "second problem" in note.read_text() and "first problem" not in note.read_text()
    assert clear_note(src)
    assert not note.exists()
    assert not clear_note(src)
    assert os.listdir(tmp_path) == []


def test_an_unchanged_note_is_not_rewritten(tmp_path: Path) -> None:
    """Sync clients would otherwise upload the same note again on every rescan."""
    src = tmp_path / "poster.prompt.toml"
    write_note(src, "same problem")
    before = os.stat(note_path(src)).st_ino
    assert write_note(src, "same problem")
    assert os.stat(note_path(src)).st_ino == before


@pytest.mark.parametrize(
    "make_foreign",
    [
        lambda p: p.write_text("My notes about the poster errors\n"),
        lambda p: p.write_bytes(b""),
        lambda p: p.mkdir(),
        lambda p: os.mkfifo(p),
        lambda p: p.symlink_to(p.with_name("elsewhere.txt")),
    ],
    ids=["user-text", "empty", "folder", "fifo", "symlink"],
)
def test_a_file_we_did_not_write_is_never_touched(
    tmp_path: Path, make_foreign: Callable[[Path], object]
) -> None:
    src = tmp_path / "poster.prompt.toml"
    note = note_path(src)
    make_foreign(note)
    before = os.lstat(note)
    content = note.read_bytes() if note.is_file() and not note.is_symlink() else None
    assert write_note(src, "a problem") is False
    assert clear_note(src) is False
    after = os.lstat(note)
    assert (after.st_ino, after.st_mode, after.st_mtime_ns) == (
        before.st_ino,
        before.st_mode,
        before.st_mtime_ns,
    )
    if content is not None:
        assert note.read_bytes() == content
    assert not note.with_name("elsewhere.txt").exists()
    assert temps(tmp_path) == []


def test_a_symlink_to_our_note_is_not_ours(tmp_path: Path) -> None:
    """Following it would let a link make us replace or delete a file elsewhere."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_note(elsewhere / "poster.prompt.toml", "x")
    note_path(tmp_path / "poster.prompt.toml").symlink_to(elsewhere / "poster.error.txt")
    assert not clear_note(tmp_path / "poster.prompt.toml")
    assert (elsewhere / "poster.error.txt").exists()
