"""`promptdrop init [FOLDER]`: a starter rules file, a drop folder and one example prompt.

Never overwrites: every file it would write is checked first, and when any exists nothing at
all is written. The files are created exclusively (`x` mode), so a file that appears between
the check and the write is refused too, never replaced.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

RULES_NAME = "promptdrop.rules.toml"
DROP_NAME = "drop"
EXAMPLE_NAME = "example.prompt.toml"

EXIT_OK = 0
EXIT_REFUSED = 1

RULES_TEXT = """\
# promptdrop rules file, written by `promptdrop init`.
#
# Check it with:   promptdrop check {rules}
# See the cost:    promptdrop watch --rules {rules} --dry-run
# Run it with:     promptdrop watch --rules {rules}
# Every setting is described in the rules/ folder of promptdrop's sources
# (`promptdrop schema rules` prints the JSON Schema editors can complete with).
#
# The API key never goes in this file: set TOAPIS_API_KEY, use --api-key-file,
# or the systemd credential "toapis-api-key".

[api]
# Your ToAPIs account group: "default", "vip" or "svip". It sets how fast promptdrop may
# submit and poll (the API's documented rate limits for that group).
account_group = "default"

# One [[rules]] table per watched folder.
[[rules]]
# A short name, unique in this file; it appears in logs, `status` and `history`.
name = "drop"

# The folder to watch, relative to this file's folder. Drop NAME.prompt.toml files in it.
path = "{drop}"

# Also watch subfolders.
recursive = true

# Seconds a prompt file must stay unchanged before it is read (so a half-saved file is not).
settle = 1.0

# At most this many tasks are submitted per day for this folder (each image is one task).
# Remove the line for no limit.
daily_budget = 20

# Credits one task costs, per model and resolution, for `daily_credits` and for the credits
# `history` and `watch --dry-run` show. promptdrop ships no prices: copy yours from your
# ToAPIs account. The numbers below are made up, only to show the form.
# [prices]
# "gemini-2.5-flash-image-preview" = {{ "1K" = 8 }}
# "gemini-3-pro-image-preview" = {{ "1K" = 24, "2K" = 24, "4K" = 48 }}
"""

EXAMPLE_TEXT = """\
# An example prompt file, written by `promptdrop init`: its image appears next to it as
# example.png. Edit the prompt and save to get a new image (the earlier one is kept).
prompt = "A lighthouse on a rocky coast at sunset, warm light, watercolour"

# 1:1 (the default), 16:9, 9:16, 4:3, 3:4, 3:2, 2:3 (`promptdrop models` lists all).
size = "16:9"

# How many images to make, 1 to 10: each one is one paid task.
count = 1
"""


@dataclass(frozen=True)
class Plan:
    """What `init` writes for one folder: the rules file, the drop folder, the example."""

    rules: Path
    drop: Path
    example: Path

    def in_the_way(self) -> list[str]:
        """Why nothing may be written: each path that exists already (the drop folder only
        when it is not a folder; an existing drop folder is simply used)."""
        found = []
        for path in (self.rules, self.example):
            if os.path.lexists(path):
                found.append(f"{path} exists")
        if os.path.lexists(self.drop) and not self.drop.is_dir():
            found.append(f"{self.drop} exists and is not a folder")
        return found


def plan_for(folder: Path) -> Plan:
    """The files `init` would write under `folder`."""
    drop = folder / DROP_NAME
    return Plan(rules=folder / RULES_NAME, drop=drop, example=drop / EXAMPLE_NAME)


def next_steps(plan: Plan, shown: Path) -> list[str]:
    """The commands to run next, with paths as the user gave them (`shown` is the folder)."""
    rules = shlex.quote(str(shown / RULES_NAME))
    drop = shlex.quote(str(shown / DROP_NAME))
    return [
        f"  promptdrop check {rules} {drop}",
        f"  promptdrop watch --rules {rules} --dry-run    # what it would submit, for free",
        "  export TOAPIS_API_KEY=...                   # your ToAPIs key",
        f"  promptdrop watch --rules {rules}",
        "Or try it without a key first: promptdrop demo",
    ]


def _write_new(path: Path, text: str) -> None:
    with path.open("x", encoding="utf-8") as f:
        f.write(text)


def run_init(folder: Path, out: TextIO, err: TextIO) -> int:
    """Write the starter files under `folder` (created if missing); 1, writing nothing, when
    any of them exists or the folder cannot be made."""
    plan = plan_for(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        print(f"promptdrop init: {folder} is not a folder", file=err)
        return EXIT_REFUSED
    blocked = plan.in_the_way()
    if blocked:
        for why in blocked:
            print(f"promptdrop init: {why}; not overwritten (nothing was written)", file=err)
        return EXIT_REFUSED
    try:
        plan.drop.mkdir(parents=True, exist_ok=True)
        _write_new(plan.rules, RULES_TEXT.format(rules=RULES_NAME, drop=DROP_NAME))
        _write_new(plan.example, EXAMPLE_TEXT)
    except FileExistsError as exc:
        print(f"promptdrop init: {exc.filename} exists; not overwritten", file=err)
        return EXIT_REFUSED
    except OSError as exc:
        print(f"promptdrop init: cannot write in {folder}: {exc.strerror or exc}", file=err)
        return EXIT_REFUSED
    print(f"wrote {folder / RULES_NAME}", file=out)
    print(f"wrote {plan.example} (in the watched folder {plan.drop})", file=out)
    print("Next:", file=out)
    for line in next_steps(plan, folder):
        print(line, file=out)
    return EXIT_OK
