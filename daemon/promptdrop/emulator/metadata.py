"""`metadata` of a generation request, checked against what the model's page documents.

A key the page does not document is refused (param "metadata.<key>"), so a test can prove
that a client sends only documented fields.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from promptdrop.emulator.models import Model
from promptdrop.emulator.refusals import InvalidRequest

ORIENTATIONS = ("landscape", "portrait")
PERSON_GENERATION = ("ALLOW_ALL", "ALLOW_ADULT", "ALLOW_NONE")
MIME_TYPES = ("image/png", "image/jpeg", "image/webp")
HARM_CATEGORIES = (
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_HARASSMENT",
)
THRESHOLDS = ("OFF", "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH")
THINKING_LEVELS = ("LOW", "MEDIUM", "HIGH", "MINIMAL")
MAX_THINKING_BUDGET = 24576

Check = Callable[[Model, Any, str, dict[str, Any]], None]


def check_metadata(model: Model, metadata: dict[str, Any]) -> None:
    """Raise InvalidRequest for the first key of `metadata` that `model` does not document
    or whose value its page does not allow."""
    checks = _checks(model)
    for key, value in metadata.items():
        path = f"metadata.{key}"
        check = checks.get(key)
        if check is None:
            raise InvalidRequest(f"{path} is not a parameter of the model '{model.id}'.", path)
        check(model, value, path, metadata)


def documented_keys(model: Model) -> tuple[str, ...]:
    """The metadata keys `model` accepts."""
    return tuple(_checks(model))


def _checks(model: Model) -> dict[str, Check]:
    checks: dict[str, Check] = {"client_business_id": _business_id}
    if model.resolutions:
        checks["resolution"] = _resolution
    if model.orientation:
        checks["orientation"] = _enum(ORIENTATIONS)
    if model.official:
        checks.update(
            temperature=_number(0.0, 2.0),
            topP=_number(0.0, 1.0),
            maxOutputTokens=_integer(1, None),
            personGeneration=_enum(PERSON_GENERATION),
            imageOutputOptions=_output_options,
            safetySettings=_safety_settings,
        )
    if model.thinking:
        checks["thinkingConfig"] = _object(
            {
                "thinkingBudget": _integer(0, MAX_THINKING_BUDGET),
                "thinkingLevel": _enum(THINKING_LEVELS),
            }
        )
    if model.google_search:
        checks["google_search"] = _boolean
        checks["google_image_search"] = _image_search
    return checks


def _business_id(model: Model, value: Any, path: str, metadata: dict[str, Any]) -> None:
    if not isinstance(value, str):
        raise InvalidRequest(f"{path} must be a string.", path)


def _resolution(model: Model, value: Any, path: str, metadata: dict[str, Any]) -> None:
    if value not in model.resolutions:
        raise InvalidRequest(f"{path} must be {_one_of(model.resolutions)}.", path)


def _one_of(values: tuple[str, ...]) -> str:
    quoted = [f'"{v}"' for v in values]
    if len(quoted) == 1:
        return quoted[0]
    if len(quoted) == 2:
        return f"{quoted[0]} or {quoted[1]}"
    return f"one of {', '.join(quoted)}"


def _enum(values: tuple[str, ...]) -> Check:
    def check(model: Model, value: Any, path: str, metadata: dict[str, Any]) -> None:
        if not isinstance(value, str) or value not in values:
            raise InvalidRequest(f"{path} must be {_one_of(values)}.", path)

    return check


def _number(low: float, high: float) -> Check:
    def check(model: Model, value: Any, path: str, metadata: dict[str, Any]) -> None:
        # bool is an int in Python; NaN and infinities fail the range test.
        if type(value) not in (int, float) or not (math.isfinite(value) and low <= value <= high):
            raise InvalidRequest(f"{path} must be a number from {low:g} to {high:g}.", path)

    return check


def _integer(low: int, high: int | None) -> Check:
    def check(model: Model, value: Any, path: str, metadata: dict[str, Any]) -> None:
        if type(value) is not int or value < low or (high is not None and value > high):
            limits = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise InvalidRequest(f"{path} must be an integer {limits}.", path)

    return check


def _boolean(model: Model, value: Any, path: str, metadata: dict[str, Any]) -> None:
    if type(value) is not bool:
        raise InvalidRequest(f"{path} must be true or false.", path)


def _image_search(model: Model, value: Any, path: str, metadata: dict[str, Any]) -> None:
    _boolean(model, value, path, metadata)
    if value and metadata.get("google_search") is not True:
        raise InvalidRequest(f"{path} needs metadata.google_search set to true.", path)


def _object(fields: dict[str, Check]) -> Check:
    def check(model: Model, value: Any, path: str, metadata: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise InvalidRequest(f"{path} must be an object.", path)
        for key, item in value.items():
            sub = f"{path}.{key}"
            field_check = fields.get(key)
            if field_check is None:
                raise InvalidRequest(f"{sub} is not a parameter of the model '{model.id}'.", sub)
            field_check(model, item, sub, metadata)

    return check


_check_output_fields = _object(
    {"mimeType": _enum(MIME_TYPES), "compressionQuality": _integer(0, 100)}
)


def _output_options(model: Model, value: Any, path: str, metadata: dict[str, Any]) -> None:
    _check_output_fields(model, value, path, metadata)
    if "compressionQuality" in value and value.get("mimeType") != "image/jpeg":
        sub = f"{path}.compressionQuality"
        raise InvalidRequest(f'{sub} is only allowed with mimeType "image/jpeg".', sub)


_check_safety_entry = _object({"category": _enum(HARM_CATEGORIES), "threshold": _enum(THRESHOLDS)})


def _safety_settings(model: Model, value: Any, path: str, metadata: dict[str, Any]) -> None:
    if not isinstance(value, list):
        raise InvalidRequest(f"{path} must be a list of {{category, threshold}} objects.", path)
    for i, entry in enumerate(value):
        item = f"{path}[{i}]"
        _check_safety_entry(model, entry, item, metadata)
        for key in ("category", "threshold"):
            if key not in entry:
                raise InvalidRequest(f"{item}.{key} is required.", f"{item}.{key}")
