"""The layout of spec, config and filecheck: imports only go downward, the facades keep every
name importers use, and the layering helpers of folder defaults are pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import promptdrop.config
import promptdrop.spec
from promptdrop.spec.folder_defaults import Layer, merged, nearest_with_references

PACKAGE = Path(promptdrop.spec.__file__).resolve().parent.parent
REPO = PACKAGE.parent.parent


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("filecheck", ("promptdrop.spec", "promptdrop.config")),
        ("config", ("promptdrop.spec",)),
    ],
)
def test_lower_packages_never_import_the_packages_above_them(
    package: str, forbidden: tuple[str, ...]
) -> None:
    """spec/__init__ imports config, so config importing any spec module would be a cycle."""
    offenders = [
        f"{path.name} imports {module}"
        for path in sorted((PACKAGE / package).glob("*.py"))
        for module in _imported_modules(path)
        if module.startswith(forbidden)
    ]
    assert offenders == []


def _names_imported_from(module: str) -> set[str]:
    names: set[str] = set()
    for root in (REPO / "daemon", REPO / "tests"):
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module == module:
                    names.update(a.name for a in node.names)
    return names


def test_the_spec_facade_exports_every_name_imported_from_it() -> None:
    names = _names_imported_from("promptdrop.spec")
    assert {"read_prompt_file", "read_rules", "SpecError"} <= names  # the scan found importers
    assert sorted(n for n in names if n not in promptdrop.spec.__all__) == []


def test_the_config_facade_exports_the_rules_names() -> None:
    rules_names = {"ApiSettings", "RuleConfig", "RulesFile", "read_rules", "rules_for_folders"}
    assert rules_names <= set(promptdrop.config.__all__)
    assert all(getattr(promptdrop.config, n) is getattr(promptdrop.spec, n) for n in rules_names)


def _layer(name: str, **values: object) -> Layer:
    return Layer(dict(values), Path("/w") / name, Path("/w") / name / ".promptdrop.toml", "x")


def test_a_nearer_layer_wins_key_by_key() -> None:
    layers = [_layer("far", size="1:1", count=2), _layer("near", size="16:9")]
    assert merged(layers) == {"size": "16:9", "count": 2}


def test_merging_no_layers_gives_no_values() -> None:
    assert merged([]) == {}


@pytest.mark.parametrize(
    ("lists", "expected"),
    [
        ([None, None], None),
        ([["a.png"], None], 0),
        ([["a.png"], ["b.png"]], 1),
        ([["a.png"], []], 1),  # an empty nearer list still replaces a farther one
        ([None, ["b.png"], None], 1),
    ],
)
def test_the_nearest_layer_with_a_references_list_supplies_them(
    lists: list[list[str] | None], expected: int | None
) -> None:
    layers = [
        _layer(f"l{i}") if refs is None else _layer(f"l{i}", references=refs)
        for i, refs in enumerate(lists)
    ]
    found = nearest_with_references(layers)
    assert found is (None if expected is None else layers[expected])
