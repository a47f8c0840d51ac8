"""Run the reliability suites and publish their figures.

    python tests/reliability.py                 # quick run (what CI runs, in one process)
    python tests/reliability.py --long          # the long crash loop too (200 files, 30 kills)
    python tests/reliability.py --write-readme  # also replace the README's "Reliability" table

Every figure comes from the run itself: each suite records what it injected and what it saw
(tests/figures.py), and this script only lays the numbers out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = [
    "test_crash.py",
    "test_faults.py",
    "test_hostile.py",
    "test_disk_full.py",
    "test_ledger_full.py",
    "test_stateful.py",
    "test_daemon.py",
]
BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="include the long crash loop")
    parser.add_argument("--write-readme", action="store_true", help="update README.md")
    args = parser.parse_args()
    suites = [f"tests/{s}" for s in SUITES if (ROOT / "tests" / s).exists()]
    with tempfile.TemporaryDirectory() as figures:
        env = {**os.environ, "PROMPTDROP_FIGURES_DIR": figures}
        if args.long:
            env["PROMPTDROP_LONG"] = "1"
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", *suites],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        elapsed = time.monotonic() - started
        tail = [line for line in proc.stdout.splitlines() if " passed" in line or " failed" in line]
        table = render(Path(figures), tail[-1] if tail else "no result", elapsed, args.long)
    print(table)
    if proc.returncode != 0:
        print(proc.stdout[-5000:], file=sys.stderr)
    if args.write_readme and proc.returncode == 0:
        readme = ROOT / "README.md"
        text = readme.read_text()
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
        readme.write_text(pattern.sub(lambda _m: f"{BEGIN}\n{table}\n{END}", text))
    return proc.returncode


def render(folder: Path, result: str, elapsed: float, long: bool) -> str:
    lines = [
        f"Measured by `python tests/reliability.py{' --long' if long else ''}` on "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores: {result.strip('= ')} in {elapsed:.0f} s.",
        "",
        "| suite | figure | value |",
        "|---|---|---|",
    ]
    for path in sorted(folder.glob("*.json")):
        for key, value in sorted(json.loads(path.read_text()).items()):
            lines.append(f"| {path.stem.replace('_', ' ')} | {key.replace('_', ' ')} | {value} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
