"""Where a key is written in a TOML text: best-effort 1-based line and column, for problems."""

from __future__ import annotations

import re
from typing import Any

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")


def _key_pattern(key: str) -> re.Pattern[str]:
    k = re.escape(key)
    return re.compile(rf"^(\s*)(?:{k}|\"{k}\"|'{k}')\s*(?:=|\.)")


def _toggles_multiline(line: str) -> bool:
    return (line.count('"""') + line.count("'''")) % 2 == 1


def locate(
    text: str, key: str | None, table: str | None = None, index: int | None = None
) -> tuple[int | None, int | None]:
    """Best-effort line and column of `key` in a table (None: top level).

    `table` is a dotted header such as "api", "rules" or "rules.defaults"; `index` picks the
    n-th `[[rules]]` the table belongs to. With `key` None the header line itself is returned.
    Lines inside multi-line strings are skipped, roughly.
    """
    pat = _key_pattern(key) if key is not None else None
    current: str | None = None
    rules_seen = -1
    in_multiline = False
    for n, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            if _toggles_multiline(line):
                in_multiline = False
            continue
        h = _HEADER.match(line)
        if h and not line.lstrip().startswith(("[=", '["')):
            current = h[2]
            if current == "rules" and h[1] == "[[":
                rules_seen += 1
            if (
                pat is None
                and table is not None
                and (current == table or current.startswith(table + "."))
                and (index is None or index == rules_seen)
            ):
                return n, line.index("[") + 1
            continue
        if (
            pat is not None
            and current == table
            and (index is None or table is None or index == rules_seen)
        ):
            m = pat.match(line)
            if m:
                return n, len(m[1]) + 1
        if _toggles_multiline(line):
            in_multiline = True
    return None, None


def locate_key(
    text: str, key: str, value: Any, table: str | None = None, index: int | None = None
) -> tuple[int | None, int | None]:
    """Where a key is written: as `key = ...`, or as a `[table.key]` header of its own."""
    line, col = locate(text, key, table, index)
    if line is None and isinstance(value, dict | list):
        line, col = locate(text, None, f"{table}.{key}" if table else key, index)
    return line, col
