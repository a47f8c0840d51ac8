"""The JSON Schemas (draft 2020-12) of prompt, defaults and rules files: `promptdrop schema`.

The committed copies under rules/*.schema.json must equal these (tests/test_schema.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from promptdrop.capabilities import DEFAULT_MODEL, MODELS, NEEDS_OPTION, ModelRow
from promptdrop.config.defaults import FolderDefaults
from promptdrop.config.models import RulesFile
from promptdrop.filecheck.fields import DEFAULTS_NAME
from promptdrop.spec.prompt_file import PromptFile

SchemaKind = Literal["prompt", "defaults", "rules"]

_SCHEMA_MODELS: dict[str, tuple[type[BaseModel], str, str]] = {
    "prompt": (
        PromptFile,
        "promptdrop prompt file (NAME.prompt.toml)",
        "One image request: a prompt and its options. Unknown keys are errors. What each "
        "model takes is checked per model, judging the file alone (a file that names no "
        "model is judged for the default model; folder defaults may choose another, which "
        "`promptdrop check` sees).",
    ),
    "defaults": (
        FolderDefaults,
        f"promptdrop folder defaults ({DEFAULTS_NAME})",
        "Defaults for the prompt files in this folder and its subfolders; the nearest "
        "file wins key by key, and the prompt file always wins.",
    ),
    "rules": (RulesFile, "promptdrop rules file", "Which folders promptdrop watches and how."),
}


def _tidy(node: Any) -> Any:
    """Make pydantic's schema fit TOML: no nulls (TOML has none), no null defaults."""
    if isinstance(node, list):
        return [_tidy(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _tidy(v) for k, v in node.items()}
    any_of = out.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [x for x in any_of if x != {"type": "null"}]
        if len(rest) == 1:
            del out["anyOf"]
            out = {**rest[0], **out}
    if "default" in out and out["default"] is None:
        del out["default"]
    return out


def json_schema(kind: SchemaKind) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a prompt file, a defaults file or a rules file.

    The committed copies under rules/*.schema.json must equal this; regenerate them with
    `promptdrop schema KIND > rules/KIND.schema.json`.
    """
    if kind not in _SCHEMA_MODELS:
        raise ValueError(f"unknown schema kind {kind!r}; use prompt, defaults or rules")
    model, title, description = _SCHEMA_MODELS[kind]
    schema = _tidy(model.model_json_schema())
    schema["title"] = title
    schema["description"] = description
    if kind == "prompt":
        schema["allOf"] = [_per_model(row) for row in MODELS] + [_needs()]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _per_model(row: ModelRow) -> dict[str, Any]:
    """If the file asks for `row`'s model (or names none, for the default): what it may ask."""
    names = {"properties": {"model": {"enum": list(row.names)}}, "required": ["model"]}
    chosen = (
        {"anyOf": [{"not": {"required": ["model"]}}, names]} if row.id == DEFAULT_MODEL else names
    )
    then: dict[str, Any] = {
        "size": {"enum": list(row.sizes)},
        "resolution": {"enum": list(row.resolutions)} if row.resolutions else False,
        "references": {"maxItems": row.max_references},
        "options": {"propertyNames": {"enum": list(row.options)}} if row.options else False,
    }
    if not row.orientation:
        then["orientation"] = False
    if row.prompt_limit is not None:
        then["prompt"] = {"maxLength": row.prompt_limit}
    return {"if": chosen, "then": {"properties": then}}


def _needs() -> dict[str, Any]:
    """Options that need another option at a value (compression_quality needs JPEG...)."""
    rules = []
    for name, needs, value in NEEDS_OPTION:
        given: dict[str, Any] = {"required": [name]}
        if value is True:  # a switch needs the other only when it is on
            given["properties"] = {name: {"const": True}}
        rules.append(
            {"if": given, "then": {"required": [needs], "properties": {needs: {"const": value}}}}
        )
    return {"properties": {"options": {"allOf": rules}}}
