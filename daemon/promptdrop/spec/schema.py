"""The JSON Schemas (draft 2020-12) of prompt, defaults and rules files: `promptdrop schema`.

The committed copies under rules/*.schema.json must equal these (tests/test_schema.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from promptdrop.config.defaults import FolderDefaults
from promptdrop.config.models import RulesFile
from promptdrop.filecheck.fields import DEFAULTS_NAME
from promptdrop.spec.prompt_file import PromptFile

SchemaKind = Literal["prompt", "defaults", "rules"]

_SCHEMA_MODELS: dict[str, tuple[type[BaseModel], str, str]] = {
    "prompt": (
        PromptFile,
        "promptdrop prompt file (NAME.prompt.toml)",
        "One image request: a prompt and its options. Unknown keys are errors.",
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
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
