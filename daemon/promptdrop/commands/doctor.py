"""`promptdrop doctor`: is this machine ready to run the daemon? A table of checks, with a fix
for every problem: the API key, the API, each watched folder, the inotify limits, the ledger's
folder. Exit 1 when any check found a problem, 0 otherwise. The key itself is never printed.

The checks of the machine itself are in `doctor_checks`; the key, the API and the table here.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from promptdrop.api import (
    AccountBlocked,
    ApiError,
    Balance,
    BalanceUnavailable,
    RateLimited,
    RateLimits,
    RetryPolicy,
    ToApisClient,
    TransientError,
)
from promptdrop.commands.doctor_checks import (
    INOTIFY,
    INSTANCES_FIX,
    WATCHES_FIX,
    Check,
    folder_check,
    inotify_check,
    read_int,
    state_check,
)
from promptdrop.service.config import ConfigError, key_source, resolve_api_key, resolve_base_url
from promptdrop.spec import ApiSettings, RulesFile, SpecError, read_rules, rules_for_folders

__all__ = [
    "INSTANCES_FIX",
    "KEY_HELP",
    "WATCHES_FIX",
    "Check",
    "api_checks",
    "balance_rows",
    "diagnose",
    "inotify_check",
    "print_table",
    "run_doctor",
]

KEY_HELP = (
    "set TOAPIS_API_KEY, or pass --api-key-file FILE, or (under systemd) give the "
    "credential 'toapis-api-key' with LoadCredential="
)

ADDRESS_HELP = (
    "set TOAPIS_BASE_URL (or [api] base_url in the rules file) to the API's address, such "
    "as https://toapis.com, or leave both unset"
)

# --- the key and the API ----------------------------------------------------------------------


def refused(exc: AccountBlocked, where: str) -> list[Check]:
    """The rows for a balance request the API refused: a bad key, or no credit left."""
    reach = Check("API", f"reachable: {where}")
    if exc.reason == "auth":
        key = Check(
            "API key",
            f"rejected by the API (it answered HTTP {exc.status or '401'})",
            "check the key was copied whole (get it again from the ToAPIs "
            "console if needed), then " + KEY_HELP,
        )
    else:
        key = Check("API key", "accepted, but the account has no credit left", ADD_CREDIT)
    return [key, reach]


ADD_CREDIT = (
    "add credit to the ToAPIs account (1 USD buys 200 credits); until then the API refuses "
    "new images and promptdrop holds them"
)


def credits_text(credits: float) -> str:
    """A credit count as people read it: "1,234 credits", "0.5 credits", "1 credit"."""
    if float(credits).is_integer():
        number = f"{int(credits):,}"
    else:
        number = f"{credits:,.2f}".rstrip("0").rstrip(".")
    return f"{number} credit{'' if number == '1' else 's'}"


def balance_rows(balance: Balance | BalanceUnavailable, where: str) -> list[Check]:
    """The rows for a balance the API answered: credits left, unlimited, empty (a problem:
    nothing can be made), or `success: false` (a problem: the key's balance is unknown)."""
    reach = Check("API", f"reachable: {where}")
    if isinstance(balance, BalanceUnavailable):
        return [
            Check(
                "API key",
                f"the API could not report this key's balance: {balance.reason}",
                "check in the ToAPIs console that the key still exists (a deleted key "
                "answers 'record not found'); if not, create one, then " + KEY_HELP,
            ),
            reach,
        ]
    if balance.unlimited:
        return [Check("API key", "accepted, unlimited quota"), reach]
    if balance.remain_credits is None:
        left = f"a balance of {balance.remain_balance:g}"
    else:
        left = credits_text(balance.remain_credits)
    if balance.empty:
        return [
            Check("API key", f"accepted, but the account is empty ({left} left)", ADD_CREDIT),
            reach,
        ]
    return [Check("API key", f"accepted, {left} left"), reach]


def unreachable(exc: ApiError, where: str) -> list[Check]:
    """The rows for a balance request that got no usable answer."""
    if isinstance(exc, TransientError | RateLimited):
        return [
            Check("API key", "not checked: the API could not be reached"),
            Check(
                "API",
                f"cannot reach {where}: " + exc.message.split(" promptdrop will")[0],
                "check the network connection, firewall or proxy, and that "
                "TOAPIS_BASE_URL (or base_url in the rules file) is right",
            ),
        ]
    return [
        Check("API key", "not checked: the API gave an unexpected answer"),
        Check(
            "API",
            f"{where} answered unexpectedly: {exc.message}",
            "check that TOAPIS_BASE_URL (or base_url in the rules file) is the "
            "ToAPIs API's address",
        ),
    ]


async def api_checks(api_key: str, base_url: str, *, timeout: float = 10.0) -> list[Check]:
    """Ask the API for the balance (cheap, authenticated): is it reachable, is the key good,
    is there credit left?"""
    where = f"the API at {base_url}"
    try:
        client = ToApisClient(
            api_key,
            base_url,
            rate_limits=RateLimits.unlimited(),
            retry=RetryPolicy(attempts=2, base=0.3, cap=1.0),
            timeout=timeout,
            connect_timeout=min(5.0, timeout),
        )
    except ValueError as exc:
        return [
            Check("API address", str(exc), ADDRESS_HELP),
            Check("API key", "not checked: the API address is unusable"),
        ]
    async with client:
        try:
            balance = await client.balance()
        except AccountBlocked as exc:
            return refused(exc, where)
        except BalanceUnavailable as exc:
            return balance_rows(exc, where)
        except ApiError as exc:
            return unreachable(exc, where)
    return balance_rows(balance, where)


def key_checks(api_key_file: Path | None, base_url: str) -> list[Check]:
    """The rows for the API key and the API: found where, accepted, reachable."""
    try:
        key = resolve_api_key(api_key_file)
    except ConfigError as exc:
        return [
            Check("API key", str(exc), "make the file readable, or " + KEY_HELP),
            Check("API", f"not checked: no usable API key ({base_url})"),
        ]
    if not key:
        return [
            Check("API key", "none found", KEY_HELP),
            Check("API", f"not checked: no usable API key ({base_url})"),
        ]
    found = asyncio.run(api_checks(key, base_url))
    key_row = found[0]
    if not key_row.problem and not key_row.result.startswith("not checked"):
        found[0] = Check(key_row.name, f"{key_row.result} (key from {key_source(api_key_file)})")
    return found


def address_or_key_checks(rules: RulesFile | None, api_key_file: Path | None) -> list[Check]:
    """The key and API rows; when the API address itself is unusable, a row saying so instead
    (the key cannot be blamed for an address that no request can be sent to)."""
    try:
        base_url = resolve_base_url(rules.api if rules is not None else ApiSettings())
    except ConfigError as exc:
        return [
            Check("API address", str(exc), ADDRESS_HELP),
            Check("API key", "not checked: the API address is unusable"),
        ]
    return key_checks(api_key_file, base_url)


# --- the whole run ----------------------------------------------------------------------------


def load_rules(rules_path: Path | None, folders: Sequence[Path]) -> RulesFile | None:
    """The rules as `watch` would build them; None when neither was given. Raises SpecError."""
    if rules_path is not None:
        return read_rules(rules_path)
    if folders:
        return rules_for_folders(list(folders))
    return None


def rules_check(rules_path: Path | None, folders: Sequence[Path]) -> tuple[Check, RulesFile | None]:
    """The row for the rules, and the rules when they could be read."""
    try:
        rules = load_rules(rules_path, folders)
    except SpecError as exc:
        fix = f"fix the rules file (promptdrop check {rules_path} lists each problem)"
        return Check("rules file", f"has errors: {exc}", fix), None
    if rules is None:
        return Check(
            "rules file",
            "none given: the watched folders are not checked "
            "(pass the same FOLDER… or --rules FILE as to watch)",
        ), None
    what = str(rules_path) if rules_path is not None else "folders from the command line"
    n = len(rules.rules)
    return Check("rules file", f"ok: {what}, {n} watched folder{'s' if n != 1 else ''}"), rules


def folder_checks(rules: RulesFile) -> list[Check]:
    """A row per watched folder, then the inotify limits for the folders watched that way."""
    checks: list[Check] = []
    folders_total = 0
    inotify_roots = 0
    for rule in rules.rules:
        check, n = folder_check(rule)
        checks.append(check)
        if n:
            folders_total += n
            inotify_roots += 1
    limits = inotify_check(
        folders_total,
        inotify_roots,
        read_int(INOTIFY / "max_user_watches"),
        read_int(INOTIFY / "max_user_instances"),
    )
    return [*checks, limits]


def diagnose(
    rules_path: Path | None, folders: Sequence[Path], state_dir: Path, api_key_file: Path | None
) -> list[Check]:
    """Run every check; never raises for a problem it can describe."""
    rules_row, rules = rules_check(rules_path, folders)
    checks = [rules_row, *address_or_key_checks(rules, api_key_file)]
    if rules is not None:
        checks.extend(folder_checks(rules))
    checks.append(state_check(state_dir))
    return checks


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]


def table_lines(checks: Sequence[Check], *, width: int = 50) -> list[str]:
    """The checks as columns CHECK, RESULT, FIX (the last two wrapped at `width` characters,
    never inside a word or a path)."""
    rows = [("CHECK", "RESULT", "FIX")] + [
        (c.name, ("PROBLEM: " if c.problem else "") + c.result, c.fix or "-") for c in checks
    ]
    w0 = max(len(r[0]) for r in rows)
    wrapped = [(name, _wrap(result, width), _wrap(fix, width)) for name, result, fix in rows]
    w1 = max(len(x) for _, left, _ in wrapped for x in left)
    lines = []
    for name, left, right in wrapped:
        for i in range(max(len(left), len(right))):
            cells = (
                name if i == 0 else "",
                left[i] if i < len(left) else "",
                right[i] if i < len(right) else "",
            )
            lines.append(f"{cells[0]:<{w0}}  {cells[1]:<{w1}}  {cells[2]}".rstrip())
    return lines


def print_table(checks: Sequence[Check], out: TextIO, *, width: int = 50) -> None:
    """The table of `table_lines`, then a one-line verdict."""
    for line in table_lines(checks, width=width):
        print(line, file=out)
    problems = sum(1 for c in checks if c.problem)
    if problems:
        print(
            f"\n{problems} problem{'s' if problems != 1 else ''} found: see the FIX column.",
            file=out,
        )
    else:
        print("\nEverything looks ready.", file=out)


def run_doctor(
    rules_path: Path | None,
    folders: Sequence[Path],
    state_dir: Path,
    api_key_file: Path | None,
    out: TextIO,
) -> int:
    """Print the table of checks to `out`; 1 when any check found a problem, else 0."""
    checks = diagnose(rules_path, folders, state_dir, api_key_file)
    print_table(checks, out)
    return 1 if any(c.problem for c in checks) else 0
