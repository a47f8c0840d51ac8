"""`promptdrop models`: what each model of the family takes, from the capability table.

The README's model table is `markdown_table()`; tests/test_models_table.py keeps the two equal.
"""

from __future__ import annotations

import re
from typing import TextIO

from promptdrop.capabilities import DEFAULT_MODEL, MODELS, OPTIONS, ModelRow


def _resolutions(row: ModelRow) -> str:
    if not row.resolutions:
        return "none (about 1K)"
    return ", ".join(f"**{r}**" if r == row.default_resolution else r for r in row.resolutions)


def _facts(row: ModelRow) -> dict[str, str]:
    return {
        "sizes": ", ".join(row.sizes),
        "resolution": _resolutions(row),
        "orientation": "yes" if row.orientation else "no",
        "references": str(row.max_references),
        "prompt": f"{row.prompt_limit} characters" if row.prompt_limit else "no stated limit",
        "options": ", ".join(row.options) if row.options else "none",
    }


def _title(row: ModelRow) -> str:
    names = ", ".join(f"`{a}`" for a in row.aliases)
    default = " (default)" if row.id == DEFAULT_MODEL else ""
    return f"`{row.id}`{default}" + (f"<br>{names}" if names else "")


def markdown_table() -> str:
    """The README's table: one row per model, then what each option is."""
    head = (
        "| model | sizes | resolution (**default**) | orientation | references | prompt | options |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for row in MODELS:
        f = _facts(row)
        lines.append(
            f"| {_title(row)} | {f['sizes']} | {f['resolution']} | {f['orientation']} | "
            f"{f['references']} | {f['prompt']} | {f['options']} |"
        )
    lines += ["", "| option | value | what it does |", "|---|---|---|"]
    for opt in OPTIONS.values():
        lines.append(f"| `{opt.name}` | {_value(opt.name)} | {opt.help} |")
    return "\n".join(lines) + "\n"


def _value(name: str) -> str:
    opt = OPTIONS[name]
    if opt.choices:
        return " \\| ".join(f'`"{c}"`' for c in opt.choices)
    if opt.kind == "boolean":
        return "`true` \\| `false`"
    if opt.kind == "safety":
        return "list of `{ category, threshold }`"
    low = int(opt.minimum) if opt.kind == "integer" and opt.minimum is not None else opt.minimum
    high = int(opt.maximum) if opt.kind == "integer" and opt.maximum is not None else opt.maximum
    return f"{'whole number' if opt.kind == 'integer' else 'number'} {low} to {high}"


def print_models(out: TextIO) -> int:
    """The table as plain text, one block per model."""
    for row in MODELS:
        default = "  (the default)" if row.id == DEFAULT_MODEL else ""
        out.write(f"{row.id}{default}\n")
        if row.aliases:
            out.write(f"  also called   {', '.join(row.aliases)}\n")
        for label, value in _facts(row).items():
            shown = re.sub(r"\*\*(\S+)\*\*", r"\1 (default)", value)
            out.write(f"  {label:<13} {shown}\n")
        out.write("\n")
    out.write(
        "Write `model`, `size`, `resolution` and `[options]` in a prompt file or in "
        ".promptdrop.toml;\n`promptdrop check` says what a model does not take.\n"
    )
    return 0
