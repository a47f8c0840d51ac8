"""Figures the reliability suites measure, collected for the README's "Reliability" section.

A suite calls `record(name, {...})`; when PROMPTDROP_FIGURES_DIR is set (as
`python tests/reliability.py` sets it), the figures are written there as NAME.json.
Outside that run it does nothing, so ordinary test runs leave no files behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def record(name: str, figures: dict[str, Any]) -> None:
    folder = os.environ.get("PROMPTDROP_FIGURES_DIR")
    if not folder:
        return
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    merged: dict[str, Any] = {}
    if path.exists():
        merged = json.loads(path.read_text())
    for key, value in figures.items():
        # Counts from several tests of one suite add up; anything else keeps the last value.
        if isinstance(value, int) and isinstance(merged.get(key), int):
            merged[key] += value
        else:
            merged[key] = value
    path.write_text(json.dumps(merged, indent=2, sort_keys=True))
