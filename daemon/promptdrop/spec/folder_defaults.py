"""Folder defaults (`.promptdrop.toml`) and how they layer under a prompt file.

Precedence, key by key: a rule's `[rules.defaults]` < each `.promptdrop.toml` from the watched
folder down to the prompt file's folder (nearest wins) < the prompt file. References are the
exception: the nearest list wins whole, so a prompt can drop a shared reference, and each list is
relative to the folder of the file that lists it (rule defaults: the watched folder).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptdrop.config.defaults import FolderDefaults
from promptdrop.filecheck.fields import DEFAULTS_NAME, MAX_PROMPT_FILE_BYTES
from promptdrop.filecheck.locate import locate
from promptdrop.filecheck.problems import Problem, SpecError, by_position, reported_as
from promptdrop.filecheck.reading import decode, load, read_bytes
from promptdrop.filecheck.refform import reference_forms
from promptdrop.filecheck.validate import validate_table
from promptdrop.spec.containment import check_inside_root, inside
from promptdrop.spec.references import resolve_reference


@dataclass(frozen=True)
class Layer:
    """One source of values (rule defaults, a .promptdrop.toml, the prompt file)."""

    values: dict[str, Any]
    base: Path  # folder its references are relative to (resolved)
    path: Path  # file reported in problems
    text: str  # empty for rule defaults, which have no file of their own here


def merged(layers: Sequence[Layer]) -> dict[str, Any]:
    """The values of all layers, farthest first: a nearer layer's key replaces a farther one's.

    `[options]` merge the same way one level down: a nearer option replaces a farther one, and
    the options nobody nearer sets are kept.
    """
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.values.items():
            if key == "options" and isinstance(value, dict):
                values["options"] = {**values.get("options", {}), **value}
            else:
                values[key] = value
    return values


def inherited(layers: Sequence[Layer]) -> dict[str, str]:
    """Where each value the last layer (the prompt file) does not set comes from, for messages.

    Keys as `merged` gives them, options as "options.NAME"; the place is the defaults file's
    path, or "the rule's defaults".
    """
    *above, own = layers
    where: dict[str, str] = {}
    for layer in above:
        place = str(layer.path) if layer.text else "the rule's defaults"
        for key, value in layer.values.items():
            if key == "options" and isinstance(value, dict):
                where.update({f"options.{name}": place for name in value})
            else:
                where[key] = place
    for key, value in own.values.items():
        where.pop(key, None)
        if key == "options" and isinstance(value, dict):
            for name in value:
                where.pop(f"options.{name}", None)
    return where


def nearest_with_references(layers: Sequence[Layer]) -> Layer | None:
    """The layer whose references list applies: the nearest that has one."""
    return next((la for la in reversed(layers) if "references" in la.values), None)


def defaults_layer(path: Path, real: Path) -> tuple[Layer | None, SpecError | None]:
    """Read one `.promptdrop.toml` (`path` as shown, `real` resolved) into a layer, or its error.

    References are checked for their form only here.
    """
    try:
        raw, text = load(real, what="defaults file")
    except SpecError as exc:
        return None, reported_as(path, exc)
    obj, problems = validate_table(FolderDefaults, raw, path, text, "defaults")
    problems += reference_forms(raw.get("references"), path, text)
    if obj is None or problems:
        return None, SpecError(sorted(problems, key=by_position))
    return Layer(obj.model_dump(exclude_none=True), real.parent, path, text), None


def folder_layers(
    folder_real: Path,
    root_abs: Path,
    root_real: Path,
    rule_defaults: FolderDefaults | None,
) -> tuple[list[Layer], list[SpecError]]:
    """The defaults layers above a prompt file in `folder_real`, farthest first, and the errors
    of every defaults file that cannot be used (each reported against the path the user sees)."""
    layers: list[Layer] = []
    errors: list[SpecError] = []
    if rule_defaults is not None:
        layers.append(Layer(rule_defaults.model_dump(exclude_none=True), root_real, root_abs, ""))
    rel_parts = folder_real.relative_to(root_real).parts if inside(folder_real, root_real) else ()
    for depth in range(len(rel_parts) + 1):
        shown = root_abs.joinpath(*rel_parts[:depth]) / DEFAULTS_NAME
        candidate = root_real.joinpath(*rel_parts[:depth]) / DEFAULTS_NAME
        if not os.path.lexists(candidate):
            continue
        try:
            d_real = check_inside_root(candidate, root_real, "defaults file")
        except SpecError as exc:
            errors.append(SpecError([Problem(shown, p.message) for p in exc.problems]))
            continue
        layer, err = defaults_layer(shown, d_real)
        if err is not None:
            errors.append(err)
        elif layer is not None:
            layers.append(layer)
    return layers, errors


def read_defaults(path: Path) -> FolderDefaults:
    """Read and check one `.promptdrop.toml`; raise SpecError with every problem found.

    References are checked for their form only (no absolute paths, no data: URIs, only http(s)
    web addresses); whether the files exist inside the watched folder is checked when a prompt
    file uses them, or by `check_defaults_file`.
    """
    path = Path(path)
    layer, err = defaults_layer(path, path.absolute().resolve())
    if err is not None:
        raise err
    assert layer is not None
    return FolderDefaults.model_validate(layer.values)


def check_defaults_file(path: Path, root: Path) -> FolderDefaults:
    """Like `read_defaults`, and also resolve its local references against `root`."""
    defaults = read_defaults(path)
    base = Path(path).absolute().resolve().parent
    text = decode(
        path, read_bytes(Path(path).absolute().resolve(), MAX_PROMPT_FILE_BYTES, "defaults file")
    )
    line, col = locate(text, "references")
    problems = [
        Problem(Path(path), r, line, col)
        for s in defaults.references or ()
        for r in [resolve_reference(s, base, Path(root).absolute().resolve())]
        if isinstance(r, str)
    ]
    if problems:
        raise SpecError(problems)
    return defaults
