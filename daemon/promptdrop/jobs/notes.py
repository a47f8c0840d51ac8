"""Every text the engine writes next to a prompt file (the `.promptdrop.txt` note), in one place.

Each says what happened in plain words and ends with "What to do:". Pure: the callers pass in
what the text needs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from promptdrop.capabilities import BY_NAME, DEFAULT_MODEL
from promptdrop.filecheck.per_model import toml_value
from promptdrop.jobs.credits import Hold, Verdict
from promptdrop.spec import DEFAULTS_NAME, SpecError

# The error of a waiting job whose prompt file went away; the job is taken up again if the
# same request comes back, since nothing was ever sent for it.
ORPHANED = (
    "its prompt file was deleted or changed before its turn came in the daily budget; "
    "nothing was sent or paid"
)

CONFLICT = (
    "This file looks like a conflict copy made by your sync app (two people or two "
    "computers changed the same prompt file at once), so promptdrop did not use it.\n"
    "What to do: compare it with the original, keep the version you want under the "
    "original name, and delete this copy."
)


def problems_text(exc: SpecError, source: Path | None = None) -> str:
    """The prompt file failed validation: each problem, with its line when known.

    With `source` (the prompt file), a problem in a folder's `.promptdrop.toml` names that file
    (relative to the prompt file's folder), since saving the prompt file alone cannot fix it.
    """
    lines = []
    elsewhere = False
    for p in exc.problems:
        where = f"line {p.line}: " if p.line is not None else ""
        if source is not None and p.path.name == DEFAULTS_NAME and p.path != source:
            elsewhere = True
            shown = os.path.relpath(p.path, Path(source).parent)
            where = f"in {shown}" + (f", line {p.line}" if p.line is not None else "") + ": "
        lines.append(f"- {where}{p.message}")
    todo = (
        "fix each problem in the file it names (no name: this prompt file), then save this "
        "prompt file again (touching it is enough)"
        if elsewhere
        else "fix the file and save it again"
    )
    return (
        "This prompt file cannot be used yet:\n"
        + "\n".join(lines)
        + f"\nWhat to do: {todo}; nothing was sent or paid."
    )


def waiting_for_text(names: Sequence[str]) -> str:
    """Every problem is a local reference that is not there yet: the file waits for them."""
    listed = ", ".join(names)
    one = len(names) == 1
    return (
        f"Waiting for {listed}: this prompt file uses {'it' if one else 'them'} as "
        f"{'a reference image' if one else 'reference images'}, but "
        f"{'it is' if one else 'they are'} not in the folder yet (maybe still syncing or "
        f"copying). This file is made by itself as soon as {'it appears' if one else 'they appear'}"
        "; nothing was sent or paid.\n"
        f"What to do: nothing if {'it is' if one else 'they are'} on the way. Otherwise put "
        f"{'it' if one else 'them'} there, or change the references in the prompt file."
    )


def foreign_output_text(name: str) -> str:
    """An output name of this prompt file is taken by a file promptdrop did not write."""
    return (
        f'"{name}" already exists in this folder and promptdrop did not make it, '
        "so nothing was generated (promptdrop never replaces files it did not write).\n"
        f'What to do: rename or move "{name}", or give this prompt file another '
        "name, then save it again."
    )


def displaced_text(name: str, saved_as: str) -> str:
    """The image's plain name is held by a file promptdrop did not make: saved beside it."""
    return (
        f'"{name}" is a file promptdrop did not make, so it was left as it is and the new '
        f'image was saved as "{saved_as}" instead (promptdrop never replaces files it did not '
        "write).\n"
        f'What to do: nothing is lost. To have the image under its usual name, move "{name}" '
        f'away and rename "{saved_as}" to "{name}".'
    )


def asked(request: Mapping[str, Any]) -> str:
    """What a job asks, briefly: the model (id and alias), size, resolution and options."""
    row = BY_NAME.get(request.get("model") or DEFAULT_MODEL)
    parts = [str(request.get("size", "1:1"))]
    if request.get("resolution"):
        parts.append(str(request["resolution"]))
    for name, value in sorted((request.get("options") or {}).items()):
        shown = f"{len(value)} settings" if isinstance(value, list) else toml_value(value)
        parts.append(f"{name} {shown}")
    model = row.shown() if row is not None else str(request.get("model"))
    return f"{model}, {', '.join(parts)}"


def _asked_line(request: Mapping[str, Any] | None) -> str:
    return f"Asked of {asked(request)}.\n" if request else ""


def failed_text(error: str | None, request: Mapping[str, Any] | None = None) -> str:
    """The job failed with `error` (a job's error column); `request` is what it asked."""
    return (
        f"No image was made: {error or 'the request failed'}.\n"
        + _asked_line(request)
        + "What to do: change the prompt file and save it again, or run "
        '"promptdrop retry" on it to try the same request again.'
    )


def ambiguous_text(source: Path, request: Mapping[str, Any] | None = None) -> str:
    """The submission may have been paid for but its answer was lost: never sent again."""
    return (
        "promptdrop sent this request, but the answer was lost (a crash, a lost connection or a "
        "timeout), so it may or may not have been made and paid for. To avoid paying twice it "
        "was not sent again.\n"
        + _asked_line(request)
        + f'What to do: if no image appears, run "promptdrop retry {source}" to send it again.'
    )


def waiting_text(budget: int | None, when: datetime) -> str:
    """The rule's daily budget is spent; the job starts by itself at `when` (next midnight)."""
    return (
        f"Not yet: this folder's daily budget of {budget} image{'' if budget == 1 else 's'}"
        " is used up for today, so this file waits. It starts by itself tomorrow "
        f"({when:%A} {when.day} {when:%B}) from 00:00, or on a later day if more files are "
        "waiting than one day's budget allows. Nothing was sent or paid for it yet.\n"
        "What to do: nothing, it starts on its own. To have it sooner, ask whoever runs "
        "promptdrop to raise daily_budget in the rules file."
    )


def _credits(n: float) -> str:
    """A number of credits as people write it: 24, 2.5."""
    return f"{n:.10g} credit{'' if n == 1 else 's'}"


def credits_waiting_text(limit: float, left: float, price: float, when: datetime) -> str:
    """The rule's daily credits left today are fewer than this file's task costs."""
    spent = "is used up for today" if left <= 0 else f"has only {_credits(left)} left today"
    return (
        f"Not yet: this folder's daily limit of {_credits(limit)} {spent}, and this file's "
        f"image costs {_credits(price)}, so this file waits. It starts by itself tomorrow "
        f"({when:%A} {when.day} {when:%B}) "
        "from 00:00, or on a later day if more files are waiting than one day's credits "
        "allow. Nothing was sent or paid for it yet.\n"
        "What to do: nothing, it starts on its own. To have it sooner, ask whoever runs "
        "promptdrop to raise daily_credits in the rules file."
    )


def too_dear_text(limit: float, price: float, key: str) -> str:
    """This file's task costs more than a whole day's daily credits: it can never start."""
    return (
        f"Held: this file's image costs {_credits(price)}, more than this folder's daily "
        f"limit of {_credits(limit)}, so it cannot start on any day. Nothing was sent or "
        "paid for it.\n"
        "What to do: ask for a cheaper model or resolution in the prompt file, or ask "
        "whoever runs promptdrop to raise daily_credits in the rules file (or the price "
        f"{key} under [prices], if it is wrong). It starts by itself once it fits."
    )


def unpriced_text(model: str, resolution: str | None, key: str) -> str:
    """The rule counts credits but `[prices]` has no price for this task: held, never sent
    unpriced (it could overspend). `key` is the line to add under `[prices]`."""
    at = f" at {resolution}" if resolution else ""
    return (
        f"Held: this folder counts credits (daily_credits), but the rules file has no price "
        f"for {model}{at}, so promptdrop does not send it (it could spend more than the "
        "limit). Nothing was sent or paid for it.\n"
        "What to do: ask whoever runs promptdrop to add its price to the [prices] table of "
        f"the rules file, as {key} (CREDITS: what one image costs), and reload the rules "
        "(SIGHUP or a restart). It starts by itself then."
    )


def hold_reason(hold: Hold) -> str:
    """Why a job is not sent now, in one line: the ledger's detail of its move, the log's
    detail, and what `status` shows beside it."""
    room, price = hold.room, hold.price or 0.0
    if hold.verdict is Verdict.UNPRICED:
        at = f" at {hold.resolution}" if hold.resolution else ""
        return f"no price for {hold.model}{at} in [prices]; held until one is added"
    if hold.verdict is Verdict.TOO_DEAR:
        return (
            f"costs {price:.10g} credits, more than the daily credits of "
            f"{room.credit_limit or 0:.10g}; held"
        )
    if hold.verdict is Verdict.CREDITS_SPENT or hold.daily_budget is None:
        return (
            f"the daily credits of {room.credit_limit or 0:.10g} are spent "
            f"({room.credits or 0:.10g} left, the task costs {price:.10g}); "
            "waits for the next day"
        )
    return f"the daily budget of {hold.daily_budget} is spent; waits for the next day"


def held_text(hold: Hold, when: datetime) -> str:
    """The note beside a prompt file whose job is held; `when` is the next midnight."""
    room = hold.room
    if hold.verdict is Verdict.UNPRICED:
        return unpriced_text(hold.model, hold.resolution, hold.key)
    if hold.verdict is Verdict.TOO_DEAR and room.credit_limit is not None:
        return too_dear_text(room.credit_limit, hold.price or 0.0, hold.key)
    if room.credit_limit is not None and (
        hold.verdict is Verdict.CREDITS_SPENT or hold.daily_budget is None
    ):
        return credits_waiting_text(room.credit_limit, room.credits or 0.0, hold.price or 0.0, when)
    return waiting_text(hold.daily_budget, when)


def paused_text(reason: str, wait: float) -> str:
    """Submissions are paused (reason "auth": a refused key, else an empty quota)."""
    return (
        f"Submissions are paused: {pause_cause(reason)}. Nothing is lost: this file waits and is "
        f"made as soon as the API accepts requests again (promptdrop tries every "
        f"{round(wait)} seconds).\nWhat to do: "
        + (
            "ask whoever runs promptdrop to check its API key."
            if reason == "auth"
            else "add credit to the ToAPIs account."
        )
    )


def pause_cause(reason: str) -> str:
    """Why submissions pause, for logs, notes and the status line."""
    return "the API refused the key" if reason == "auth" else "the account has no quota left"


def pause_fix(reason: str) -> str:
    """What an operator does about a pause, for the log."""
    return "set a valid TOAPIS_API_KEY" if reason == "auth" else "add credit to the ToAPIs account"


def link_expired_text(task_id: str | None, source: Path) -> str:
    """A done request whose image file is gone, with no kept copy and an expired download link:
    nothing more can be had for free."""
    return (
        f"This request was already made (task {task_id}), but its image file is gone, no copy "
        "of it is left, and its download link has expired (links last 24 hours), so promptdrop "
        "did not pay for it again.\n"
        f'What to do: run "promptdrop retry --force {source}" to make a new image; it is paid '
        "again."
    )


# The error of a job whose task the API stopped knowing (confirmed by several polls).
TASK_GONE = (
    "the API no longer knows this task (asked again several times, it still did not know it), "
    'so its image cannot be fetched; "promptdrop retry" on the prompt file makes a new image, '
    "which is paid again"
)
