"""The rules file: which folders promptdrop watches, how, and how it reaches the API.

- `models`: `RulesFile`, its `[[rules]]` (`RuleConfig`) and `[api]` (`ApiSettings`) tables;
- `defaults`: `FolderDefaults`, the keys of a rule's `[rules.defaults]` (and of a
  `.promptdrop.toml`, which `promptdrop.spec` reads);
- `read`: `read_rules`, reading and checking a rules file, every problem reported;
- `short_form`: `rules_for_folders`, the rules of `promptdrop watch FOLDER…`.

Problems are `promptdrop.filecheck.problems.SpecError`, the same error as for prompt files.
"""

from promptdrop.config.defaults import FolderDefaults
from promptdrop.config.models import ApiSettings, RuleConfig, RulesFile
from promptdrop.config.read import read_rules
from promptdrop.config.short_form import rules_for_folders
from promptdrop.filecheck.fields import MAX_RULES_FILE_BYTES, AccountGroup, PollMode
from promptdrop.filecheck.problems import Problem, SpecError

__all__ = [
    "MAX_RULES_FILE_BYTES",
    "AccountGroup",
    "ApiSettings",
    "FolderDefaults",
    "PollMode",
    "Problem",
    "RuleConfig",
    "RulesFile",
    "SpecError",
    "read_rules",
    "rules_for_folders",
]
