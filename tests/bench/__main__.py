"""Run the benchmarks and print each figure beside its limit or baseline.

    python -m tests.bench                    # full run (~12 min)
    python -m tests.bench --quick            # smaller numbers (~3 min)
    python -m tests.bench --only restart     # one benchmark (repeatable, or comma-separated)
    python -m tests.bench --markdown         # a table for the README, with the machine

Benchmarks: throughput, overhead, restart, footprint, drop, requests.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .harness import BenchError, machine
from .scenarios import BENCHMARKS, Row, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="smaller numbers, ~5 minutes")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these ({', '.join(BENCHMARKS)})",
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    names = [n for item in args.only for n in item.split(",") if n] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    work = Path(tempfile.mkdtemp(prefix="promptdrop-bench-"))
    settings = Settings(quick=args.quick, work=work)
    info = machine(work)
    rows: list[Row] = []
    failed = False
    started = time.monotonic()
    try:
        for name in names:
            print(f"running {name}…", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            try:
                got = BENCHMARKS[name](settings)
            except (BenchError, OSError, AssertionError) as exc:
                failed = True
                traceback.print_exc()
                got = [Row(name, "did not finish", "-", "-", "-", False, str(exc)[:200])]
            rows.extend(got)
            print(f"  {name} took {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    mode = "--quick" if args.quick else "full"
    print(markdown(rows, info, mode, elapsed) if args.markdown else text(rows, info, mode, elapsed))
    return 1 if failed else 0


def _mark(ok: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[ok]


def text(rows: list[Row], info: dict[str, str], mode: str, elapsed: float) -> str:
    """A plain table for a terminal."""
    head = ("benchmark", "figure", "measured", "limit / baseline", "target", "met")
    body = [(r.bench, r.figure, r.value, r.reference, r.target, _mark(r.ok)) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in (head, tuple("-" * w for w in widths), *body)
    ]
    lines.append("")
    lines.extend(f"{r.bench} / {r.figure}: {r.note}" for r in rows if r.note)
    lines.append("")
    lines.append(f"{mode} run, {elapsed:.0f} s; " + "; ".join(f"{k}: {v}" for k, v in info.items()))
    return "\n".join(lines)


def markdown(rows: list[Row], info: dict[str, str], mode: str, elapsed: float) -> str:
    """A Markdown table for the README, with the machine it ran on."""
    lines = [
        f"Measured by `python -m tests.bench{' --quick' if mode != 'full' else ''} --markdown` "
        f"({elapsed:.0f} s) on {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"{info['kernel']}, temporary folder on {info['tmp filesystem']}; load average at "
        f"start {info['load average at start']}.",
        "",
        "| benchmark | figure | measured | limit / baseline | target | met | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r.bench, r.figure, r.value, r.reference, r.target, _mark(r.ok), r.note]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
