"""Prompt files and folder defaults: reading them safely, checking them, hashing them.

The road of a prompt file starts here: `read_prompt_file` turns a settled `NAME.prompt.toml`
(plus the `.promptdrop.toml` defaults above it) into a `Request`, the effective request whose
`request_hash` keys every job in the ledger, or raises `SpecError` with every problem found, each
in words a designer understands. Nothing in this package talks to the API.

One module per concern:

- `prompt_file`: `PromptFile`, the keys of a prompt file;
- `folder_defaults`: reading `.promptdrop.toml` files and layering them under a prompt file;
- `containment`: what counts as inside the watched folder;
- `references`: resolving reference images (inside the folder, at most 10 MB, JPEG/PNG/WebP);
- `request`: `Request`, the effective request, its canonical form and its hash;
- `reader`: `read_prompt_file`, all of the above end to end;
- `schema`: `json_schema`, the JSON Schemas behind `promptdrop schema`.

The ground they share with the rules file (problems, safe reading, locating keys, wording) is in
`promptdrop.filecheck`; the rules file itself is `promptdrop.config`. This module re-exports the
names importers use, so `from promptdrop.spec import ...` keeps working for all of them.
"""

from promptdrop.config import (
    ApiSettings,
    FolderDefaults,
    RuleConfig,
    RulesFile,
    read_rules,
    rules_for_folders,
)
from promptdrop.filecheck.fields import (
    CANONICAL_MODEL,
    DEFAULT_SIZE,
    DEFAULTS_NAME,
    MAX_COUNT,
    MAX_PROMPT_CHARS,
    MAX_PROMPT_FILE_BYTES,
    MAX_REFERENCE_BYTES,
    MAX_REFERENCES,
    MAX_RULES_FILE_BYTES,
    MODELS,
    ORIENTATIONS,
    PROMPT_SUFFIX,
    SIZES,
    STYLE_SEPARATOR,
    AccountGroup,
    Model,
    Orientation,
    PollMode,
    Size,
)
from promptdrop.filecheck.problems import Problem, SpecError
from promptdrop.spec.folder_defaults import check_defaults_file, read_defaults
from promptdrop.spec.prompt_file import PromptFile
from promptdrop.spec.reader import read_prompt_file
from promptdrop.spec.request import Reference, Request
from promptdrop.spec.schema import SchemaKind, json_schema

__all__ = [
    "CANONICAL_MODEL",
    "DEFAULTS_NAME",
    "DEFAULT_SIZE",
    "MAX_COUNT",
    "MAX_PROMPT_CHARS",
    "MAX_PROMPT_FILE_BYTES",
    "MAX_REFERENCES",
    "MAX_REFERENCE_BYTES",
    "MAX_RULES_FILE_BYTES",
    "MODELS",
    "ORIENTATIONS",
    "PROMPT_SUFFIX",
    "SIZES",
    "STYLE_SEPARATOR",
    "AccountGroup",
    "ApiSettings",
    "FolderDefaults",
    "Model",
    "Orientation",
    "PollMode",
    "Problem",
    "PromptFile",
    "Reference",
    "Request",
    "RuleConfig",
    "RulesFile",
    "SchemaKind",
    "Size",
    "SpecError",
    "check_defaults_file",
    "json_schema",
    "read_defaults",
    "read_prompt_file",
    "read_rules",
    "rules_for_folders",
]
