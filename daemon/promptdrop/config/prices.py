"""The rules file's `[prices]` table: credits per task, per model and resolution.

A model that offers resolutions is priced by a table of them (`{ "1K" = 24, "4K" = 48 }`),
one without any (gemini-2.5-flash-image-official) by a single number. An alias means its
model; a model written twice (by its id and an alias) is an error. promptdrop ships no prices.

The table is checked by a pydantic model built from `promptdrop.capabilities` (strict, extra
keys forbidden), so the JSON Schema knows every model and resolution; pydantic's own words
never reach the user, each refusal is turned into a message here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from promptdrop.capabilities import BY_NAME, MODELS, ModelRow, models_taking
from promptdrop.filecheck.wording import describe

# Canonical model id -> the price of one task: a number (a model without resolutions) or a
# table of resolution -> number.
Prices = dict[str, float | dict[str, float]]

PRICES_DESCRIPTION = (
    "Credits one task costs, per model and resolution, for the rules' daily_credits: "
    '"MODEL" = { "1K" = 24, "4K" = 48 } for a model that offers resolutions (a resolution '
    'left out of a prompt file means the model\'s default), or "MODEL" = 10 (one number) for a '
    "model without resolutions. A model may be named by its id or an alias, not both. "
    "promptdrop ships no prices: copy them from your ToAPIs account."
)

_CONFIG = ConfigDict(strict=True, extra="forbid", populate_by_name=False)


# One task's price: a finite number of credits, 0 or more (a whole number is fine).
Credits = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _price_field(alias: str, description: str) -> Any:
    return Field(default=None, alias=alias, description=description)


def _resolution_model(row: ModelRow) -> type[BaseModel]:
    fields: dict[str, Any] = {
        _ident(res): (Credits | None, _price_field(res, f"Credits per {res} task."))
        for res in row.resolutions
    }
    config = ConfigDict(**_CONFIG, title=f"prices of {row.id}")
    model: type[BaseModel] = create_model(f"prices_{_ident(row.id)}", __config__=config, **fields)
    return model


def _ident(name: str) -> str:
    return "m_" + "".join(c if c.isalnum() else "_" for c in name)


def _build_table() -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for row in MODELS:
        for name in row.names:
            if row.resolutions:
                kind: Any = _resolution_model(row) | None
                text = (
                    f"Credits per task of {row.shown()}, by resolution "
                    f"({', '.join(row.resolutions)}; default {row.default_resolution})."
                )
            else:
                kind = Credits | None
                text = f"Credits per task of {row.shown()}: one number (it has no resolutions)."
            if name != row.id:
                text += f" {name} is an alias of {row.id}."
            fields[_ident(name)] = (kind, _price_field(name, text))
    model: type[BaseModel] = create_model(
        "prices", __config__=ConfigDict(**_CONFIG, title="prices"), **fields
    )
    return model


PriceTable = _build_table()


def price_problems(raw: Any) -> tuple[Prices, list[tuple[tuple[str, ...], str]]]:
    """Check a `[prices]` table; return it with canonical model ids, and every problem as
    (the keys it is under, message). Prices are only returned when there is no problem."""
    if not isinstance(raw, dict):
        return {}, [((), _PRICES_TABLE + f"; it is {describe(raw)}")]
    problems: list[tuple[tuple[str, ...], str]] = []
    try:
        PriceTable.model_validate(raw)
    except ValidationError as exc:
        seen: set[tuple[str, ...]] = set()
        for err in exc.errors():
            loc = tuple(str(part) for part in err["loc"])[:2]
            if not loc or loc in seen or loc[:1] in seen:
                continue
            seen.add(loc)
            problems.append((loc, _message(loc, raw)))
    by_model: dict[str, list[str]] = {}
    for name in raw:
        if name in BY_NAME:
            by_model.setdefault(BY_NAME[name].id, []).append(name)
    for model_id, names in by_model.items():
        if len(names) > 1:
            spelled = " and ".join(f'"{n}"' for n in names)
            problems.append(
                (
                    (names[-1],),
                    f"[prices] {spelled} are the same model ({model_id}); price it once",
                )
            )
    if problems:
        return {}, problems
    prices: Prices = {}
    for name, value in raw.items():
        model_id = BY_NAME[name].id
        prices[model_id] = (
            {res: float(v) for res, v in value.items()} if isinstance(value, dict) else float(value)
        )
    return prices, []


def normalised(raw: Mapping[str, Any]) -> Prices:
    """A `[prices]` table with canonical model ids; ValueError with the first problem."""
    prices, problems = price_problems(dict(raw))
    if problems:
        raise ValueError(problems[0][1])
    return prices


_PRICES_TABLE = (
    "prices must be a table ([prices]) of model names, each with its credits per task, like "
    '"gemini-3-pro-image-preview" = { "1K" = 24, "4K" = 48 }'
)


def _message(loc: tuple[str, ...], raw: Mapping[str, Any]) -> str:
    """Our words for the first refusal under `loc` (a model name, perhaps a resolution)."""
    name = loc[0]
    row = BY_NAME.get(name)
    if row is None:
        close = difflib.get_close_matches(name, list(BY_NAME), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"[prices] unknown model '{name}'; {hint}the models are: " + ", ".join(
            r.shown() for r in MODELS
        )
    value = raw.get(name)
    if len(loc) == 1 or not isinstance(value, dict):
        if not row.resolutions:
            return (
                f"[prices] {row.shown()} has no resolutions: price it with one number, 0 or "
                f'more, like "{name}" = 10; it is {describe(value)}'
            )
        return (
            f"[prices] {row.shown()} needs a table of its resolutions "
            f"({', '.join(row.resolutions)}) with credits per task, like "
            f'"{name}" = {{ "{row.default_resolution}" = 10 }}; it is {describe(value)}'
        )
    res = loc[1]
    if res not in row.resolutions:
        if res == "0" and isinstance(value.get(res), dict):
            return (
                f'[prices] {row.shown()}: write "0.5K" in quotes (without them TOML reads '
                "0 and 5K)"
                + ("" if "0.5K" in row.resolutions else "; and this model does not offer 0.5K")
            )
        others = models_taking(lambda r: res in r.resolutions)
        offered = f" ({', '.join(others)} offer it)" if others else ""
        return f"[prices] {row.shown()} has no resolution '{res}'{offered}; it offers " + ", ".join(
            row.resolutions
        )
    return (
        f"[prices] {row.shown()} at {res} must be a number of credits, 0 or more; it is "
        + describe(value.get(res))
    )


def _inlined(node: Any, defs: Mapping[str, Any]) -> Any:
    """`node` with every `$ref` into `defs` replaced by what it names (for one subschema)."""
    if isinstance(node, list):
        return [_inlined(x, defs) for x in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return _inlined(defs[ref.removeprefix("#/$defs/")], defs)
    return {k: _inlined(v, defs) for k, v in node.items() if k != "$defs"}


def price_table_schema() -> dict[str, Any]:
    """The JSON Schema of a `[prices]` table, self-contained (no `$ref`)."""
    schema = PriceTable.model_json_schema()
    inlined: dict[str, Any] = _inlined(schema, schema.get("$defs", {}))
    inlined["description"] = PRICES_DESCRIPTION
    return inlined
