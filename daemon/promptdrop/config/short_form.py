"""The rules of `promptdrop watch FOLDER…`: one rule per folder, no rules file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from promptdrop.config.models import ApiSettings, RuleConfig, RulesFile


def rules_for_folders(folders: Sequence[Path]) -> RulesFile:
    """The `watch FOLDER…` short form: one rule per folder, all settings at their defaults.

    Names come from the folder's base name, made unique with "-2", "-3"…; paths are made
    absolute (~ expanded).
    """
    rules: list[RuleConfig] = []
    used: set[str] = set()
    for folder in folders:
        absolute = Path(os.path.normpath(Path(folder).expanduser().absolute()))
        stem = absolute.name or "root"
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        rules.append(RuleConfig(name=name, path=absolute))
    return RulesFile(api=ApiSettings(), rules=rules)
