"""One TOML table checked against one pydantic model, every problem reported in our words."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from promptdrop.filecheck.locate import locate, locate_key
from promptdrop.filecheck.problems import Problem
from promptdrop.filecheck.wording import (
    describe,
    field_message,
    option_message,
    unknown_key_message,
)

M = TypeVar("M", bound=BaseModel)


def validate_table(
    model: type[M],
    raw: Mapping[str, Any],
    path: Path,
    text: str,
    what: str,
    *,
    table: str | None = None,
    index: int | None = None,
    prefix: str = "",
    skip: Sequence[str] = (),
) -> tuple[M | None, list[Problem]]:
    """Validate one TOML table against a model; return the model (if valid) and all problems.

    Unknown keys are reported by us (with a close-match suggestion), wrong values with our own
    wording per key; pydantic's text never reaches the user. `table` and `index` say where the
    table is written (for locating keys), `prefix` starts every message, and the keys in `skip`
    are left for the caller to check.
    """
    allowed = tuple(model.model_fields)
    problems: list[Problem] = []
    known: dict[str, Any] = {}
    for key, value in raw.items():
        if key in allowed:
            known[key] = value
        else:
            line, col = locate_key(text, key, value, table, index)
            problems.append(
                Problem(path, prefix + unknown_key_message(key, allowed, what), line, col)
            )
    for key in skip:
        known.pop(key, None)
    try:
        obj = model.model_validate(known)
    except ValidationError as exc:
        problems += _value_problems(exc, known, path, text, table, index, prefix)
        return None, problems
    return (obj if not problems else None), problems


def _value_problems(
    exc: ValidationError,
    known: Mapping[str, Any],
    path: Path,
    text: str,
    table: str | None,
    index: int | None,
    prefix: str,
) -> list[Problem]:
    """One problem per key pydantic refused (the first error of each key)."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for err in exc.errors():
        loc = err["loc"]
        if not loc:
            continue
        key = str(loc[0])
        if key == "options" and len(loc) > 1:
            # One problem per option, each found in its [options] table if written there.
            name = str(loc[1])
            if f"options.{name}" in seen:
                continue
            seen.add(f"options.{name}")
            line, col = locate(text, name, f"{table}.options" if table else "options", index)
            if line is None:
                line, col = locate(text, key, table, index)
            message = option_message(loc[1:], err, known.get(key))
            problems.append(Problem(path, prefix + message, line, col))
            continue
        if key in seen:
            continue
        seen.add(key)
        line, col = locate(text, key, table, index)
        if err["type"] == "missing":
            line, col = None, None
        problems.append(Problem(path, prefix + _value_message(key, err, known), line, col))
    return problems


def _value_message(key: str, err: ErrorDetails, known: Mapping[str, Any]) -> str:
    loc = err["loc"]
    if err["type"] == "missing":
        if key == "prompt":
            return 'prompt is missing; add a line like prompt = "a red fox in the snow"'
        return f"{key} is missing; it is required"
    if key == "references" and len(loc) > 1 and isinstance(loc[1], int):
        return (
            f"references entry {loc[1] + 1} must be a file name or web address in "
            f"quotes; it is {describe(err['input'])}"
        )
    return field_message(key, known.get(key))
