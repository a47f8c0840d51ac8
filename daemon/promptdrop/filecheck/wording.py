"""What is wrong with a value or a key, in words a designer understands.

Pydantic's own text never reaches the user: every message is ours, per key, and an unknown key
gets a close-match suggestion ("did you mean 'size'?").
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from typing import Any

from promptdrop.capabilities import OPTIONS, SAFETY_CATEGORIES, SAFETY_THRESHOLDS
from promptdrop.filecheck.fields import (
    CHOICES,
    DEFAULTS_NAME,
    MAX_PROMPT_CHARS,
    MAX_REFERENCES,
    NEEDS,
    OPTION_CHOICES,
    OPTION_NEEDS,
    STYLE_SEPARATOR,
)

OPTION_KEYS: tuple[str, ...] = tuple(OPTIONS)


def describe(value: Any) -> str:
    """A TOML value as the user wrote it, briefly: `true`, `the text "..."`, `a list`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'the text "{shown}"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date or time"
    return type(value).__name__


def field_message(key: str, value: Any) -> str:
    """Our own wording for a wrong value: the key, what it is, what is allowed."""
    choices = CHOICES.get(key)
    if choices is not None:
        if isinstance(value, str):
            return f"{key} '{value}' is not one of {', '.join(choices)}"
        return f"{key} must be one of {', '.join(choices)} (in quotes); it is {describe(value)}"
    if key == "prompt" and isinstance(value, str):
        return prompt_length_message(value, None)
    if key == "style" and isinstance(value, str):
        return (
            f"style is {len(value)} characters long; with the prompt it must stay within "
            f"{MAX_PROMPT_CHARS}"
        )
    if key == "references" and isinstance(value, list):
        return f"references lists {len(value)} images; the API takes at most {MAX_REFERENCES}"
    need = NEEDS.get(key, "a different value")
    msg = f"{key} must be {need}; it is {describe(value)}"
    if isinstance(value, str) and key in ("count", "max_in_flight", "daily_budget"):
        msg += f" (write {key} = {value.strip()} without quotes)" if value.strip().isdigit() else ""
    return msg


def option_message(loc: Sequence[str | int], err: Mapping[str, Any], table: Any) -> str:
    """Our wording for a wrong entry of an [options] table; `loc` starts at the option's name."""
    name = str(loc[0])
    if err["type"] == "extra_forbidden":
        return "[options] " + unknown_key_message(name, OPTION_KEYS, "options")
    value = table.get(name) if isinstance(table, Mapping) else None
    if name == "safety_settings" and len(loc) > 1 and isinstance(loc[1], int):
        entry = f"options.safety_settings entry {loc[1] + 1}"
        if len(loc) > 2:
            part = str(loc[2])
            if err["type"] == "extra_forbidden":
                return f"{entry} has an unknown key '{part}'; it takes category and threshold"
            if err["type"] == "missing":
                return f'{entry} has no {part}; add {part} = "..."'
            allowed = SAFETY_CATEGORIES if part == "category" else SAFETY_THRESHOLDS
            return f"{entry}: {part} must be one of {', '.join(allowed)}"
        return f'{entry} must be a table like {{ category = "...", threshold = "..." }}'
    choices = OPTION_CHOICES.get(name)
    if choices is not None:
        if isinstance(value, str):
            return f"options.{name} '{value}' is not one of {', '.join(choices)}"
        return f"options.{name} must be one of {', '.join(choices)} (in quotes); it is " + (
            describe(value)
        )
    return f"options.{name} must be {OPTION_NEEDS.get(name, 'a different value')}; it is " + (
        describe(value)
    )


def prompt_length_message(prompt: str, style: str | None) -> str:
    """Why a prompt (with the folder style, if any) is empty or too long."""
    if not prompt.strip():
        return 'prompt is empty; write what the image should show, like prompt = "a red fox"'
    if style:
        total = len(prompt) + len(STYLE_SEPARATOR) + len(style)
        return (
            f"prompt with the folder style is {total} characters long (prompt {len(prompt)}, "
            f"style {len(style)}); the API takes at most {MAX_PROMPT_CHARS}. Shorten the "
            f"prompt, or the style in {DEFAULTS_NAME}"
        )
    return (
        f"prompt is {len(prompt)} characters long; the API takes at most {MAX_PROMPT_CHARS}. "
        "Shorten it"
    )


def unknown_key_message(key: str, allowed: Sequence[str], what: str) -> str:
    """An unknown key in a `what` table ("prompt", "defaults", "rule"...): a close match, or
    the keys allowed; a key that belongs in the other kind of file says where it goes."""
    if what == "defaults" and key == "prompt":
        return (
            f"'prompt' does not belong in {DEFAULTS_NAME}; put it in a NAME.prompt.toml file "
            "(use 'style' for text added to every prompt)"
        )
    if what == "prompt" and key == "style":
        return (
            f"'style' belongs in the folder's {DEFAULTS_NAME}; in a prompt file, write it "
            "into the prompt text"
        )
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key '{key}': did you mean '{close[0]}'?"
    return f"unknown key '{key}'; the keys allowed here are: {', '.join(allowed)}"
