"""Reading one prompt file end to end: the file, the defaults above it, its references, and the
effective Request, or a SpecError with every problem of every file involved."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from promptdrop.config.defaults import FolderDefaults
from promptdrop.filecheck.per_model import model_problems
from promptdrop.filecheck.problems import Problem, SpecError, by_position, reported_as
from promptdrop.filecheck.reading import load
from promptdrop.filecheck.refform import reference_forms
from promptdrop.filecheck.validate import validate_table
from promptdrop.spec.containment import check_inside_root
from promptdrop.spec.folder_defaults import (
    Layer,
    folder_layers,
    inherited,
    merged,
    nearest_with_references,
)
from promptdrop.spec.prompt_file import PromptFile
from promptdrop.spec.references import resolve_listed
from promptdrop.spec.request import Reference, Request, effective_request, where_written


def read_prompt_file(
    path: Path, root: Path, rule_defaults: FolderDefaults | None = None
) -> Request:
    """Read a prompt file and return its effective Request; raise SpecError (only) otherwise.

    Precedence, key by key: `rule_defaults` < each `.promptdrop.toml` from `root` down to the
    file's folder (nearest wins) < the prompt file. References are the exception to key-by-key
    merging of lists: the nearest list wins whole (the prompt's list replaces the defaults' list,
    a nearer defaults list replaces a farther one), so a prompt can drop a shared reference; each
    list is relative to the folder of the file that lists it (rule defaults: the root). `style`
    is appended to the prompt after a blank line; the sum must stay within the model's limit.
    Whitespace around the prompt and the style is dropped first.
    Local references are read and hashed; every problem in every file involved is reported.
    """
    path = Path(path)
    root_abs = Path(root).absolute()
    root_real = root_abs.resolve()
    real = check_inside_root(path, root_real, "prompt file")
    try:
        raw, text = load(real, what="prompt file")
    except SpecError as exc:
        raise reported_as(path, exc) from None
    # The folder the file appears in (not a link's target): its references and defaults are
    # the ones the user sees next to it.
    folder_real = path.absolute().parent.resolve()
    layers, errors = folder_layers(folder_real, root_abs, root_real, rule_defaults)

    obj, problems = validate_table(PromptFile, raw, path, text, "prompt")
    problems += reference_forms(raw.get("references"), path, text)
    own = _own_layer(obj, raw, folder_real, path, text)
    references, more = _resolve_nearest([*layers, own], root_real)
    problems += more
    if obj is not None and not errors:
        request, more = effective_request(
            merged([*layers, own]), path, text, references, inherited([*layers, own])
        )
        problems += more
        if request is not None and not problems:
            return request
    elif obj is None:
        # Some values are malformed: still say what the model refuses among the others, so
        # one save fixes everything.
        problems += _model_problems_of_the_rest(raw, layers, folder_real, path, text, problems)
    if problems:
        errors.append(SpecError(sorted(problems, key=by_position)))
    all_problems = [p for e in errors for p in e.problems]
    raise SpecError(all_problems, not_ready=all(e.not_ready for e in errors))


def _valid_alone(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a refused prompt file whose values are fine by themselves (options too)."""
    kept: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "options" and isinstance(value, dict):
            good = {k: v for k, v in value.items() if _fine({"options": {k: v}})}
            if good:
                kept["options"] = good
        elif key != "prompt" and _fine({key: value}):
            kept[key] = value
    return kept


def _fine(values: Mapping[str, Any]) -> bool:
    try:
        PromptFile.model_validate({"prompt": "x", **values})
    except ValidationError:
        return False
    return True


def _model_problems_of_the_rest(
    raw: Mapping[str, Any],
    layers: Sequence[Layer],
    folder_real: Path,
    path: Path,
    text: str,
    found: Sequence[Problem],
) -> list[Problem]:
    """What the model refuses among the well-formed values of a file that has malformed ones,
    leaving out the keys already reported."""
    own = Layer(_valid_alone(raw), folder_real, path, text)
    if "model" in raw and "model" not in own.values:
        return []  # no model to judge by: the default model's limits would mislead
    values = merged([*layers, own])
    refs = raw.get("references")
    n_refs = len(refs) if isinstance(refs, list) else 0
    reported = {p.line for p in found if p.line is not None}
    more = [
        Problem(path, message, *where_written(text, key, inherited([*layers, own])))
        for key, message in model_problems(values, n_refs, inherited([*layers, own]))
    ]
    return [p for p in more if p.line is None or p.line not in reported]


def _own_layer(
    obj: PromptFile | None, raw: Mapping[str, Any], folder_real: Path, path: Path, text: str
) -> Layer:
    """The prompt file's own values, the nearest layer."""
    own = Layer(
        obj.model_dump(exclude_none=True) if obj is not None else {}, folder_real, path, text
    )
    raw_refs = raw.get("references")
    if obj is None and isinstance(raw_refs, list) and all(isinstance(r, str) for r in raw_refs):
        # Still look at the files it names, so one run reports every problem of the file.
        own.values["references"] = raw_refs
    return own


def _resolve_nearest(
    layers: Sequence[Layer], root_real: Path
) -> tuple[list[Reference], list[Problem]]:
    """Resolve the nearest references list (a list replaces farther lists whole)."""
    layer = nearest_with_references(layers)
    if layer is None:
        return [], []
    return resolve_listed(layer.values["references"], layer.base, root_real, layer.path, layer.text)
