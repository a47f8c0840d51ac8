"""`promptdrop demo`: the example prompts made into images by the built-in emulator."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import promptdrop
from promptdrop.emulator import Emulator, EmulatorConfig
from promptdrop.imaging import EXTENSIONS
from promptdrop.jobs.engine import EngineOptions
from promptdrop.outputs import note_path
from promptdrop.service.runner import AlreadyRunning, ConfigError, WatchOptions, run
from promptdrop.spec import PROMPT_SUFFIX, rules_for_folders

EXAMPLES = Path(promptdrop.__file__).resolve().parents[2] / "rules" / "examples"


def run_demo(folder: Path, state_dir: Path | None = None, *, latency: float = 1.0) -> int:
    """Copy the examples into `folder`, make their images on the emulator, say where they are."""
    if not EXAMPLES.is_dir():
        print(
            f"promptdrop demo: the example prompts are not at {EXAMPLES}; run the demo from a "
            "checkout of the repository (pip install -e .)",
            file=sys.stderr,
        )
        return 2
    folder = folder.absolute()
    try:
        copied = copy_examples(folder)
    except OSError as exc:
        print(folder_problem(folder, exc), file=sys.stderr)
        return 1
    prompts = sorted(p.name for p in folder.glob(f"*{PROMPT_SUFFIX}"))
    before = set(_images(folder))
    print(
        f"promptdrop demo: {len(prompts)} prompt files in {folder} ({copied} copied from the "
        "examples); generating on the built-in emulator, no API key needed...",
        flush=True,
    )
    config = EmulatorConfig(latency=latency, jitter=latency / 2, image_format="alternate")
    with Emulator(config).start() as emu:
        opts = WatchOptions(
            rules=rules_for_folders([folder]),
            state_dir=state_dir or folder / ".promptdrop-state",
            api_key="demo-key",
            base_url=emu.base_url,
            once=True,
            engine=EngineOptions(poll_first=0.5, poll_interval=0.5, retry_later=1.0),
            progress=sys.stderr.isatty(),
        )
        try:
            rc = asyncio.run(run(opts))
        except (ConfigError, AlreadyRunning) as exc:
            print(f"promptdrop demo: {exc}", file=sys.stderr)
            return 1
        stats = emu.stats()
    images = _images(folder)
    print(f"\n{len(images)} images in {folder}:")
    for image in images:
        print(f"  {image}" + ("" if image in before else "  (new)"))
    failed = failures(folder, prompts)
    if failed:
        print(f"\n{len(failed)} prompt file{'s' if len(failed) != 1 else ''} made no image:")
        for name, reason in failed:
            print(f"  {name}: {reason}")
    print(f"\nThe emulator received {len(stats['submissions'])} paid submissions.", end=" ")
    if failed:
        print("Fix the files above (each has a note beside it) and run the demo again.")
    else:
        print(
            "Run the demo again: nothing is paid twice. Edit a prompt file and run it "
            "again: one new image."
        )
    return rc


def copy_examples(folder: Path) -> int:
    """Make `folder` and copy the examples it does not have yet into it; how many were
    copied. Raises OSError."""
    folder.mkdir(parents=True, exist_ok=True)
    copied = 0
    for item in sorted(EXAMPLES.iterdir()):
        target = folder / item.name
        if item.is_file() and not target.exists():  # never overwrite what is already there
            shutil.copyfile(item, target)
            copied += 1
    return copied


def folder_problem(folder: Path, exc: OSError) -> str:
    """The line for a demo folder that cannot be made or written."""
    if isinstance(exc, NotADirectoryError | FileExistsError):
        why = "part of that path is a file, not a folder"
    else:
        why = exc.strerror or str(exc)
    return (
        f"promptdrop demo: cannot put the examples in {folder} ({why}); name a folder you "
        "may write, such as: promptdrop demo ~/promptdrop-demo"
    )


def _images(folder: Path) -> list[str]:
    suffixes = set(EXTENSIONS.values())
    return sorted(
        p.name for p in folder.iterdir() if p.suffix in suffixes and p.name != "sketch.png"
    )


def note_reason(text: str) -> str:
    """The problems an error note lists (its "- " lines), on one line; else its first line."""
    lines = [line.strip() for line in text.splitlines()]
    problems = [line[2:] for line in lines if line.startswith("- ")]
    if problems:
        return "; ".join(problems)
    return next((line for line in lines if line), "see its note")


def failures(folder: Path, prompts: list[str]) -> list[tuple[str, str]]:
    """(prompt file, why) for each prompt file that has an error note beside it."""
    found = []
    for name in prompts:
        note = note_path(folder / name)
        try:
            text = note.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        found.append((name, f"{note_reason(text)} (see {note.name})"))
    return found
