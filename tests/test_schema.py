"""JSON Schemas of prompt, defaults and rules files: the committed copies match the code, and
the shipped examples validate against them.

When the models in spec.py change, regenerate the committed copies with:

    for kind in prompt defaults rules; do
        promptdrop schema $kind > rules/$kind.schema.json
    done
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest

from promptdrop.spec import json_schema

RULES = Path(__file__).resolve().parent.parent / "rules"
Kind = Literal["prompt", "defaults", "rules"]
KINDS: list[Kind] = ["prompt", "defaults", "rules"]


def validator(kind: Kind) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json_schema(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_committed_schema_equals_the_generated_one(kind: Kind) -> None:
    committed = json.loads((RULES / f"{kind}.schema.json").read_text(encoding="utf-8"))
    assert committed == json_schema(kind), (
        f"rules/{kind}.schema.json is stale: run `promptdrop schema {kind} > "
        f"rules/{kind}.schema.json`"
    )


def _properties(node: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every property a schema defines; the per-model conditions ("allOf" of "if"/"then") narrow
    properties defined (and described) elsewhere, so they are left out."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for name, prop in (node.get("properties") or {}).items():
            found.append((name, prop))
        for key, value in node.items():
            if key not in ("allOf", "if", "then"):
                found += _properties(value)
    elif isinstance(node, list):
        for value in node:
            found += _properties(value)
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_draft_2020_12_with_a_title_and_described_properties(kind: Kind) -> None:
    schema = json_schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"].startswith("promptdrop")
    jsonschema.Draft202012Validator.check_schema(schema)
    props = _properties(schema)
    assert props
    undocumented = [name for name, prop in props if not prop.get("description")]
    assert undocumented == []
    assert "null" not in json.dumps(schema), "TOML has no null: optional keys are just absent"


def test_unknown_schema_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown schema kind"):
        json_schema("colours")  # type: ignore[arg-type]  # the refusal of a bad kind is the point


def _load(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def test_shipped_examples_validate_against_their_schemas() -> None:
    prompts = sorted((RULES / "examples").glob("*.prompt.toml"))
    assert len(prompts) >= 4
    for path in prompts:
        validator("prompt").validate(_load(path))
    validator("defaults").validate(_load(RULES / "examples" / ".promptdrop.toml"))
    for name in ("basic.rules.toml", "shared-drive.rules.toml"):
        validator("rules").validate(_load(RULES / name))


INVALID = [
    pytest.param("prompt", {"size": "1:1"}, id="prompt_missing"),
    pytest.param("prompt", {"prompt": "x", "promt": "y"}, id="unknown_key"),
    pytest.param("prompt", {"prompt": "x", "size": "7:3"}, id="unknown_size"),
    pytest.param("prompt", {"prompt": "x", "count": 11}, id="count_11"),
    pytest.param("prompt", {"prompt": "x", "count": "2"}, id="count_quoted"),
    pytest.param("prompt", {"prompt": "x", "model": "dall-e"}, id="unknown_model"),
    pytest.param("prompt", {"prompt": "x", "references": ["a.png"] * 15}, id="15_refs"),
    pytest.param("prompt", {"prompt": "a" * 1001}, id="1001_chars"),
    pytest.param("prompt", {"prompt": "x", "style": "y"}, id="style_in_prompt"),
    pytest.param("defaults", {"prompt": "x"}, id="prompt_in_defaults"),
    pytest.param("defaults", {"orientation": "sideways"}, id="bad_orientation"),
    pytest.param("rules", {"api": {}}, id="no_rules"),
    pytest.param("rules", {"rules": []}, id="empty_rules"),
    pytest.param("rules", {"rules": [{"name": "a"}]}, id="rule_without_path"),
    pytest.param(
        "rules",
        {"rules": [{"name": "a", "path": "d", "max_in_flight": 513}]},
        id="max_in_flight_513",
    ),
    pytest.param(
        "rules",
        {"rules": [{"name": "a", "path": "d", "defaults": {"sise": "1:1"}}]},
        id="unknown_key_in_rule_defaults",
    ),
    pytest.param(
        "rules",
        {"api": {"account_group": "gold"}, "rules": [{"name": "a", "path": "d"}]},
        id="bad_account_group",
    ),
]


@pytest.mark.parametrize(("kind", "doc"), INVALID)
def test_invalid_documents_fail_the_schema(kind: Kind, doc: dict[str, Any]) -> None:
    assert not validator(kind).is_valid(doc)


def test_a_full_prompt_document_passes_the_schema() -> None:
    doc = {
        "prompt": "x",
        "size": "16:9",
        "model": "nano-banana",
        "count": 10,
        "orientation": "portrait",
        "references": ["a.png", "https://e.com/b.jpg"],
    }
    validator("prompt").validate(doc)
