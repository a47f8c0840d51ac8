"""What the chosen model makes of the merged values: per-model problems, as pure functions.

Each check takes the values after folder defaults are merged and names the models that would
take what this one refuses, so the message says what to do. `inherited` maps a key (options as
"options.NAME") to where its value came from when it was not written in the prompt file itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from promptdrop.capabilities import MODELS, NEEDS_OPTION, ModelRow, row_of
from promptdrop.filecheck.fields import DEFAULTS_NAME, STYLE_SEPARATOR

# A problem of the combination: the key it is about ("options.NAME" for an option) and its text.
ModelProblem = tuple[str, str]


def _others(test: Callable[[ModelRow], bool], but: ModelRow) -> str:
    names = [row.shown() for row in MODELS if row is not but and test(row)]
    return ", ".join(names) if names else "none"


def _takes(option: str) -> Callable[[ModelRow], bool]:
    return lambda row: option in row.options


def toml_value(value: Any) -> str:
    """A value as it is written in TOML: true, 2, "image/jpeg"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def kept_options(
    row: ModelRow, options: Mapping[str, Any], inherited: Mapping[str, str]
) -> dict[str, Any]:
    """The options sent to `row`'s model: an inherited option it does not take is left out."""
    return {k: v for k, v in options.items() if k in row.options or f"options.{k}" not in inherited}


def model_problems(
    values: Mapping[str, Any], n_refs: int, inherited: Mapping[str, str]
) -> list[ModelProblem]:
    """Everything the chosen model refuses in `values`, one (key, message) per problem.

    The prompt's length is judged by `prompt_limit_problem`, which needs the style too.
    """
    row = row_of(values.get("model"))
    found: list[ModelProblem] = []
    size = values.get("size")
    if size is not None and size not in row.sizes:
        found.append(
            (
                "size",
                f'size "{size}" is not offered by {row.shown()}; choose one of '
                f"{', '.join(row.sizes)}, or a model that offers {size}: "
                + _others(lambda r: size in r.sizes, row),
            )
        )
    resolution = values.get("resolution")
    if resolution is not None and resolution not in row.resolutions:
        takers = _others(lambda r: resolution in r.resolutions, row)
        if not row.resolutions:
            found.append(
                (
                    "resolution",
                    f"{row.shown()} has no resolution setting (its images are about 1K); "
                    f"remove resolution, or use a model that offers {resolution}: {takers}",
                )
            )
        else:
            found.append(
                (
                    "resolution",
                    f'resolution "{resolution}" is not offered by {row.shown()}, which offers '
                    f"{', '.join(row.resolutions)}; use a model that offers {resolution}: "
                    + takers,
                )
            )
    orientation = values.get("orientation")
    if orientation is not None and not row.orientation and "orientation" not in inherited:
        found.append(
            (
                "orientation",
                f"orientation is not taken by {row.shown()}; remove it, or use a model "
                "that takes it: " + _others(lambda r: r.orientation, row),
            )
        )
    if row.max_references < n_refs <= max(r.max_references for r in MODELS):
        found.append(
            (
                "references",
                f"references lists {n_refs} images; {row.shown()} takes at most "
                f"{row.max_references}. Remove some, or use a model that takes {n_refs}: "
                + _others(lambda r: r.max_references >= n_refs, row),
            )
        )
    options: Mapping[str, Any] = values.get("options") or {}
    for name in options:
        if name not in row.options and f"options.{name}" not in inherited:
            takers = _others(_takes(name), row)
            found.append(
                (
                    f"options.{name}",
                    f"options.{name} is not taken by {row.shown()}; remove it, or use a model "
                    f"that takes it: {takers}",
                )
            )
    kept = kept_options(row, options, inherited)
    for name, needs, value in NEEDS_OPTION:
        if kept.get(name, False) is not False and kept.get(needs) != value:
            found.append(
                (
                    f"options.{name}",
                    f"options.{name} needs options.{needs} = {toml_value(value)}; add it, "
                    f"or remove {name}",
                )
            )
    return [(key, message + _origin(key, inherited)) for key, message in found]


def _origin(key: str, inherited: Mapping[str, str]) -> str:
    where = inherited.get(key)
    return f" (the value comes from {where})" if where else ""


def prompt_limit_problem(
    model: str | None, prompt: str, style: str, inherited: Mapping[str, str]
) -> str | None:
    """Why the prompt (with the folder style) is empty or too long for the model, or None."""
    row = row_of(model)
    if not prompt.strip():
        return 'prompt is empty; write what the image should show, like prompt = "a red fox"'
    limit = row.prompt_limit
    total = len(prompt) + (len(STYLE_SEPARATOR) + len(style) if style else 0)
    if limit is None or total <= limit:
        return None
    # The closest model without a limit: one that takes what this one takes.
    unlimited = next(
        (
            r
            for r in MODELS
            if r.prompt_limit is None
            and r.orientation == row.orientation
            and r.options == row.options
        ),
        next((r for r in MODELS if r.prompt_limit is None), None),
    )
    instead = f", or use a model with no limit, like {unlimited.shown()}" if unlimited else ""
    if style:
        return (
            f"prompt with the folder style is {total} characters long (prompt {len(prompt)}, "
            f"style {len(style)}); {row.shown()} takes at most {limit}. Shorten the prompt, or "
            f"the style in {DEFAULTS_NAME}{instead}" + _origin("style", inherited)
        )
    return (
        f"prompt is {total} characters long; {row.shown()} takes at most {limit}. "
        f"Shorten it{instead}"
    )
