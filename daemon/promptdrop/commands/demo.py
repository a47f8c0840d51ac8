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
from promptdrop.service.runner import WatchOptions, run
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
    folder.mkdir(parents=True, exist_ok=True)
    copied = 0
    for item in sorted(EXAMPLES.iterdir()):
        target = folder / item.name
        if item.is_file() and not target.exists():  # never overwrite what is already there
            shutil.copyfile(item, target)
            copied += 1
    prompts = sorted(p.name for p in folder.glob(f"*{PROMPT_SUFFIX}"))
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
        rc = asyncio.run(run(opts))
        stats = emu.stats()
    images = sorted(
        p
        for p in folder.iterdir()
        if p.suffix in set(EXTENSIONS.values()) and p.name != "sketch.png"
    )
    print(f"\n{len(images)} images in {folder}:")
    for image in images:
        print(f"  {image.name}")
    print(
        f"The emulator received {len(stats['submissions'])} paid submissions. Run the demo "
        "again: nothing is paid twice. Edit a prompt file and run it again: one new image."
    )
    return rc
