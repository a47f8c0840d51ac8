"""Reading a rules file: every problem found, each located and worded for the person who wrote it.

The order problems are found in matters for those on the same line (the sort is stable): top-level
keys, then `[api]`, then `ledger`, then each `[[rules]]` in turn.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from promptdrop.config.defaults import FolderDefaults
from promptdrop.config.models import ApiSettings, RuleConfig, RulesFile
from promptdrop.config.prices import Prices, price_problems
from promptdrop.filecheck.fields import MAX_RULES_FILE_BYTES
from promptdrop.filecheck.locate import locate, locate_key
from promptdrop.filecheck.problems import Problem, SpecError, by_position
from promptdrop.filecheck.reading import load
from promptdrop.filecheck.refform import reference_forms
from promptdrop.filecheck.validate import validate_table
from promptdrop.filecheck.wording import describe, field_message, unknown_key_message

_TOP_LEVEL = ("api", "rules", "ledger", "prices")


def read_rules(path: Path) -> RulesFile:
    """Read and check a rules file; raise SpecError with every problem found.

    Relative rule paths are resolved against the rules file's folder after expanding `~`; the
    folders need not exist yet (the daemon reports a missing root). Rule names must be unique.
    """
    path = Path(path)
    raw, text = load(path.absolute().resolve(), MAX_RULES_FILE_BYTES, "rules file")
    problems: list[Problem] = []
    for key in raw:
        if key not in _TOP_LEVEL:
            line, col = locate_key(text, key, raw[key])
            problems.append(Problem(path, unknown_key_message(key, _TOP_LEVEL, "rules"), line, col))
    api, more = _read_api(raw.get("api", {}), path, text)
    problems += more
    ledger, more = _read_ledger(raw.get("ledger"), path, text)
    problems += more
    prices, more = _read_prices(raw.get("prices", {}), path, text)
    problems += more
    rules, more = _read_rules_list(raw.get("rules"), path, text)
    problems += more
    if problems:
        raise SpecError(sorted(problems, key=by_position))
    return RulesFile(api=api, rules=rules, ledger=ledger, prices=prices)


def _read_api(raw_api: Any, path: Path, text: str) -> tuple[ApiSettings, list[Problem]]:
    """The `[api]` table; its defaults when it is missing or wrong (the problems say why)."""
    if not isinstance(raw_api, dict):
        line, col = locate(text, "api")
        return ApiSettings(), [Problem(path, field_message("api", raw_api), line, col)]
    api, problems = validate_table(
        ApiSettings, raw_api, path, text, "api", table="api", prefix="[api] "
    )
    if api is None:
        return ApiSettings(), problems
    if api.base_url is not None:
        parts = urlsplit(api.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            line, col = locate(text, "base_url", "api")
            message = "[api] " + field_message("base_url", api.base_url)
            problems.append(Problem(path, message, line, col))
    return api, problems


def _read_ledger(ledger: Any, path: Path, text: str) -> tuple[str | None, list[Problem]]:
    """The optional shared-ledger URL: a PostgreSQL URL or nothing."""
    if ledger is None or (
        isinstance(ledger, str) and ledger.split(":", 1)[0].lower() in ("postgresql", "postgres")
    ):
        return ledger, []
    line, col = locate(text, "ledger")
    # The value is not repeated: it may hold a password.
    message = (
        "ledger must be a PostgreSQL URL in quotes, such as "
        '"postgresql://promptdrop@db.example.com/promptdrop"; leave it '
        "out to keep the ledger on this computer"
    )
    return None, [Problem(path, message, line, col)]


def _read_prices(raw_prices: Any, path: Path, text: str) -> tuple[Prices, list[Problem]]:
    """The `[prices]` table, its models by their canonical ids; each problem at its model."""
    prices, found = price_problems(raw_prices)
    problems = []
    for keys, message in found:
        line, col = locate(text, keys[0], "prices") if keys else locate(text, "prices")
        if line is None:
            line, col = locate(text, None, "prices")
        problems.append(Problem(path, message, line, col))
    return prices, problems


def _credits_problem(value: Any) -> str | None:
    """What is wrong with a rule's daily_credits (None: nothing)."""
    if value is None or (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value > 0
        and value != float("inf")
    ):
        return None
    msg = (
        "daily_credits must be a number of credits greater than 0 (leave it out for no "
        f"limit); it is {describe(value)}"
    )
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        msg += f" (write daily_credits = {value.strip()} without quotes)"
    return msg


def _read_rules_list(
    raw_rules: Any, path: Path, text: str
) -> tuple[list[RuleConfig], list[Problem]]:
    """Every `[[rules]]` table, with names unique across them."""
    if raw_rules is None or raw_rules == []:
        message = "there are no rules; add at least one [[rules]] table with a name and a path"
        return [], [Problem(path, message)]
    if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
        line, col = locate(text, "rules")
        return [], [Problem(path, field_message("rules", raw_rules), line, col)]
    base = path.absolute().parent
    rules: list[RuleConfig] = []
    problems: list[Problem] = []
    names: set[str] = set()
    for i, raw_rule in enumerate(raw_rules):
        rule, more = _read_rule(raw_rule, i, base, path, text)
        problems += more
        if rule is None:
            continue
        if rule.name in names:
            line, col = locate(text, "name", "rules", i)
            message = f"rule name '{rule.name}' is used twice; give each rule its own name"
            problems.append(Problem(path, message, line, col))
        names.add(rule.name)
        rules.append(rule)
    return rules, problems


def _read_rule(
    raw: dict[str, Any], i: int, base: Path, path: Path, text: str
) -> tuple[RuleConfig | None, list[Problem]]:
    """The `i`-th `[[rules]]` table, its path made absolute against `base`."""
    name = raw.get("name")
    label = f"rule '{name}': " if isinstance(name, str) and name else f"rule {i + 1}: "
    obj, problems = validate_table(
        RuleConfig,
        raw,
        path,
        text,
        "rule",
        table="rules",
        index=i,
        prefix=label,
        skip=("defaults", "daily_credits"),
    )
    credits = raw.get("daily_credits")
    wrong = _credits_problem(credits)
    if wrong is not None:
        line, col = locate(text, "daily_credits", "rules", i)
        problems.append(Problem(path, label + wrong, line, col))
    defaults, more = _read_rule_defaults(raw.get("defaults"), i, label, path, text)
    problems += more
    raw_path = raw.get("path")
    if isinstance(raw_path, str) and not raw_path.strip():
        line, col = locate(text, "path", "rules", i)
        problems.append(
            Problem(path, label + "path is empty; write the folder to watch", line, col)
        )
    if obj is None or problems:
        return None, problems
    folder = Path(os.path.normpath(base / Path(raw_path or "").expanduser()))
    update = {"path": folder, "defaults": defaults, "daily_credits": _credits(credits)}
    return obj.model_copy(update=update), []


def _credits(value: Any) -> float | None:
    return None if value is None else float(value)


def _read_rule_defaults(
    raw_defaults: Any, i: int, label: str, path: Path, text: str
) -> tuple[FolderDefaults | None, list[Problem]]:
    """A rule's `[rules.defaults]` table; its references are checked for their form only."""
    if raw_defaults is None:
        return None, []
    if not isinstance(raw_defaults, dict):
        line, col = locate(text, "defaults", "rules", i)
        return None, [Problem(path, label + field_message("defaults", raw_defaults), line, col)]
    prefix = label + "[rules.defaults] "
    defaults, problems = validate_table(
        FolderDefaults,
        raw_defaults,
        path,
        text,
        "defaults",
        table="rules.defaults",
        index=i,
        prefix=prefix,
    )
    problems += reference_forms(
        raw_defaults.get("references"), path, text, prefix, "rules.defaults", i
    )
    return defaults, problems
