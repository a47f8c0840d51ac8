"""Hostile prompt files dropped into the folder of ONE real daemon (a subprocess per test
module and xdist worker): each gets a plain error note (where a note can be written), costs
nothing at the API, touches nothing outside the watched folder, and leaves the daemon alive
and still making images for good files."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from figures import record
from harness import CANARY, Daemon, daemon_env, rules_file, spawn, wait_for
from promptdrop.emulator import Emulator, EmulatorConfig
from promptdrop.outputs import note_path

SETTLE = 0.2
TRIED: list[str] = []


@dataclass
class World:
    folder: Path  # the watched root
    outside: Path  # files the daemon must never create, modify or read through a link
    emu: Emulator
    daemon: Daemon

    def wait(self, cond: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
        return wait_for(cond, what, timeout=timeout, daemon=self.daemon)

    def alive(self) -> bool:
        return self.daemon.proc.poll() is None


def _png(size: tuple[int, int] = (32, 32), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, fmt)
    return buf.getvalue()


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under `root` (links not followed): mtime, size and content hash."""
    found = {}
    for entry in sorted(root.rglob("*")):
        st = entry.lstat()
        digest = ""
        if entry.is_file() and not entry.is_symlink():
            digest = hashlib.sha256(entry.read_bytes()).hexdigest()
        found[str(entry.relative_to(root))] = (st.st_mtime_ns, st.st_size, digest)
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("hostile")
    folder, outside, state = tmp / "drop", tmp / "outside", tmp / "state"
    folder.mkdir()
    outside.mkdir()
    (outside / "outside-file").write_text("must never change\n")
    (outside / "ref.png").write_bytes(_png())
    (outside / "valid.prompt.toml").write_text('prompt = "from outside the root"\n')
    rules = rules_file(tmp / "rules.toml", folder, settle=SETTLE, max_in_flight=4)
    with Emulator(EmulatorConfig(api_key=CANARY, latency=0.1, jitter=0.0, rate_limits=None)) as emu:
        daemon = spawn(rules, state, daemon_env(emu.base_url), cwd=tmp)
        try:
            daemon.wait_watching(timeout=20)
            yield World(folder, outside, emu, daemon)
        finally:
            survived = daemon.proc.poll() is None
            daemon.terminate()
            print(f"\nhostile inputs tried on this daemon: {len(TRIED)}")
            record(
                "hostile_inputs",
                {
                    "inputs_tried": len(TRIED),
                    "daemon_processes": 1,
                    "daemons_dead_at_the_end": 0 if survived else 1,
                },
            )


# Each maker writes its hostile input into the folder `d` (with `o` the outside folder) and
# returns the prompt file whose note to wait for.
Maker = Callable[[Path, Path], Path]


def _text(name: str, text: str) -> Maker:
    def make(d: Path, o: Path) -> Path:
        (d / name).write_text(text, encoding="utf-8")
        return d / name

    return make


def _bytes(name: str, data: bytes) -> Maker:
    def make(d: Path, o: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name

    return make


def _with_file(name: str, text: str, extra: str, data: Callable[[], bytes]) -> Maker:
    """A prompt file plus one more file (a reference) beside it."""

    def make(d: Path, o: Path) -> Path:
        (d / extra).write_bytes(data())
        (d / name).write_text(text, encoding="utf-8")
        return d / name

    return make


def _with_link(name: str, text: str, link: str, target: str) -> Maker:
    """A prompt file plus a symlink beside it pointing into the outside folder."""

    def make(d: Path, o: Path) -> Path:
        (d / link).symlink_to(o / target)
        (d / name).write_text(text, encoding="utf-8")
        return d / name

    return make


def _linked_prompt(d: Path, o: Path) -> Path:
    (d / "linked.prompt.toml").symlink_to(o / "valid.prompt.toml")
    return d / "linked.prompt.toml"


def _ref_folder(d: Path, o: Path) -> Path:
    (d / "refdir.png").mkdir()
    return _text("refdir.prompt.toml", 'prompt = "a"\nreferences = ["refdir.png"]\n')(d, o)


def _noise_png() -> bytes:
    # Random pixels do not compress: about 11.4 MB, over the 10 MB reference limit.
    img = Image.frombytes("RGB", (2000, 1900), os.urandom(2000 * 1900 * 3))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def _nested(depth: int) -> str:
    return 'prompt = "deep"\nx = ' + "[" * depth + "]" * depth + "\n"


URLS = ", ".join(f'"https://example.com/{i}.png"' for i in range(15))

HOSTILE: dict[str, Maker] = {
    "invalid toml": _text("badtoml.prompt.toml", 'prompt = "unterminated\n'),
    "bare value": _text("bare.prompt.toml", "prompt = a cat\n"),
    "duplicate key": _text("dup.prompt.toml", 'prompt = "a"\nprompt = "b"\n'),
    "invalid utf-8": _bytes("utf8.prompt.toml", b'prompt = "caf\xff\xfe cat"\n'),
    "utf-16": _bytes("utf16.prompt.toml", 'prompt = "a cat"\n'.encode("utf-16")),
    "nul byte": _bytes("nul.prompt.toml", b'prompt = "a\x00cat"\n'),
    "only nul bytes": _bytes("nuls.prompt.toml", b"\x00" * 4096),
    "binary noise": _bytes("noise.prompt.toml", bytes(range(256)) * 8),
    "10 MB file": _bytes("huge.prompt.toml", b'prompt = "' + b"a" * (10 * 1024 * 1024) + b'"\n'),
    "deeply nested arrays": _text("deeparr.prompt.toml", _nested(5000)),
    "deeply nested tables": _text(
        "deeptab.prompt.toml", 'prompt = "deep"\n[' + ".".join(["t"] * 2000) + "]\nk = 1\n"
    ),
    "deeply nested inline tables": _text(
        "deepinl.prompt.toml", 'prompt = "deep"\nx = ' + "{a = " * 3000 + "1" + "}" * 3000 + "\n"
    ),
    "1001-character prompt": _text("long.prompt.toml", f'prompt = "{"p" * 1001}"\n'),
    "empty prompt": _text("emptyp.prompt.toml", 'prompt = ""\n'),
    "blank prompt": _text("blankp.prompt.toml", 'prompt = "   \\n  "\n'),
    "count as string": _text("cstr.prompt.toml", 'prompt = "a"\ncount = "2"\n'),
    "size as number": _text("snum.prompt.toml", 'prompt = "a"\nsize = 5\n'),
    "prompt as list": _text("plist.prompt.toml", "prompt = [1]\n"),
    "prompt as table": _text("ptab.prompt.toml", '[prompt]\ntext = "a"\n'),
    "count 0": _text("c0.prompt.toml", 'prompt = "a"\ncount = 0\n'),
    "count 11": _text("c11.prompt.toml", 'prompt = "a"\ncount = 11\n'),
    "count -1": _text("cneg.prompt.toml", 'prompt = "a"\ncount = -1\n'),
    "count 1.5": _text("cfloat.prompt.toml", 'prompt = "a"\ncount = 1.5\n'),
    "count true": _text("cbool.prompt.toml", 'prompt = "a"\ncount = true\n'),
    "unknown size": _text("sbad.prompt.toml", 'prompt = "a"\nsize = "huge"\n'),
    "references not a list": _text("rstr.prompt.toml", 'prompt = "a"\nreferences = "x.png"\n'),
    "15 references": _text("r15.prompt.toml", f'prompt = "a"\nreferences = [{URLS}]\n'),
    "reference escaping the root": _text(
        "dotdot.prompt.toml", 'prompt = "a"\nreferences = ["../outside/ref.png"]\n'
    ),
    "absolute reference": lambda d, o: _text(
        "abs.prompt.toml", f'prompt = "a"\nreferences = [{json.dumps(str(o / "ref.png"))}]\n'
    )(d, o),
    "data uri": _text(
        "data.prompt.toml", 'prompt = "a"\nreferences = ["data:image/png;base64,iVBORw0KGgo="]\n'
    ),
    "ftp url": _text("ftp.prompt.toml", 'prompt = "a"\nreferences = ["ftp://example.com/a.png"]\n'),
    "file url": _text("fileurl.prompt.toml", 'prompt = "a"\nreferences = ["file:///etc/passwd"]\n'),
    "missing reference": _text("missing.prompt.toml", 'prompt = "a"\nreferences = ["no.png"]\n'),
    "reference is a folder": _ref_folder,
    "symlink reference out of the root": _with_link(
        "slref.prompt.toml",
        'prompt = "a"\nreferences = ["slref-link.png"]\n',
        "slref-link.png",
        "ref.png",
    ),
    "symlink planted at the output": _with_link(
        "poster.prompt.toml", 'prompt = "a poster"\n', "poster.png", "outside-file"
    ),
    "prompt file linked from outside": _linked_prompt,
    "text file renamed .png": _with_file(
        "fake.prompt.toml",
        'prompt = "a"\nreferences = ["fake-ref.png"]\n',
        "fake-ref.png",
        lambda: b"just some text, not an image\n" * 10,
    ),
    "11 MB image reference": _with_file(
        "bigref.prompt.toml",
        'prompt = "a"\nreferences = ["bigref-ref.png"]\n',
        "bigref-ref.png",
        _noise_png,
    ),
    "gif reference": _with_file(
        "gif.prompt.toml",
        'prompt = "a"\nreferences = ["gif-ref.gif"]\n',
        "gif-ref.gif",
        lambda: _png(fmt="GIF"),
    ),
    "file name with a newline": _text("new\nline.prompt.toml", "prompt = [\n"),
    "255-byte file name": _text(
        "n" * (255 - len(".prompt.toml")) + ".prompt.toml", 'prompt = "a"\nunknown = 1\n'
    ),
    "unknown key": _text("unk.prompt.toml", 'prompt = "a"\ncolour = "red"\n'),
    "misspelt key": _text("promt.prompt.toml", 'promt = "a cat"\n'),
    "unknown model": _text("model.prompt.toml", 'prompt = "a"\nmodel = "no-such-model"\n'),
    "only comments": _text("comments.prompt.toml", "# a prompt will go here\n# later\n"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_prompt_file_gets_a_note_costs_nothing_and_the_daemon_carries_on(
    world: World, name: str
) -> None:
    before_stats = world.emu.stats()
    before_outside = _snapshot(world.outside)
    TRIED.append(name)

    source = HOSTILE[name](world.folder, world.outside)
    note = note_path(source)
    world.wait(note.exists, f"an error note for {name!r}", timeout=30)
    assert note.read_text(encoding="utf-8").strip()
    _still_serves(world, name, before_stats)
    assert _snapshot(world.outside) == before_outside
    assert (world.outside / "outside-file").read_text() == "must never change\n"


def _fifo(d: Path) -> None:
    os.mkfifo(d / "x.prompt.toml")


def _empty(d: Path) -> None:
    # A 0-byte file is by design a placeholder a browser or sync app fills in later (see
    # watcher.py): no note, and of course no submission.
    (d / "empty.prompt.toml").write_bytes(b"")


def _folder(d: Path) -> None:
    (d / "d.prompt.toml").mkdir()
    (d / "d.prompt.toml" / "inner.txt").write_text("not a prompt\n")


@pytest.mark.parametrize("make", [_fifo, _folder, _empty], ids=["fifo", "directory", "empty"])
def test_a_fifo_folder_or_empty_file_named_like_a_prompt_costs_nothing_and_hangs_nothing(
    world: World, make: Callable[[Path], None]
) -> None:
    before_stats = world.emu.stats()
    before_outside = _snapshot(world.outside)
    TRIED.append(make.__name__)
    make(world.folder)
    time.sleep(5 * SETTLE)  # nothing to wait for: give the watcher time to see and settle it
    _still_serves(world, make.__name__, before_stats)
    assert _snapshot(world.outside) == before_outside


def test_a_prompt_file_with_a_byte_order_mark_is_made_normally(world: World) -> None:
    source = world.folder / "bom.prompt.toml"
    before = len(world.emu.stats()["submissions"])
    source.write_bytes(b'\xef\xbb\xbfprompt = "a cat with a BOM"\n')
    world.wait(lambda: source.with_name("bom.png").exists(), "the BOM file's image")
    assert [s["prompt"] for s in world.emu.stats()["submissions"][before:]] == ["a cat with a BOM"]
    assert not note_path(source).exists()


def _still_serves(world: World, name: str, before: dict[str, Any]) -> None:
    """Drop a good file; its image must come, and it must be the only API work since `before`."""
    assert world.alive(), world.daemon.log()[-4000:]
    slug = hashlib.sha256(name.encode()).hexdigest()[:10]
    good = world.folder / f"good-{slug}.prompt.toml"
    prompt = f"a good prompt after {name!r}"
    good.write_text(f"prompt = {json.dumps(prompt)}\n", encoding="utf-8")
    world.wait(
        lambda: good.with_name(f"good-{slug}.png").exists(), f"the good file's image after {name!r}"
    )
    after = world.emu.stats()
    assert [s["prompt"] for s in after["submissions"][len(before["submissions"]) :]] == [prompt]
    assert after["submit_requests"] - before["submit_requests"] == 1
    assert after["uploads"] == before["uploads"]
    assert world.alive(), world.daemon.log()[-4000:]
