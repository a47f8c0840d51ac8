"""The ledger's part that remembers `promptdrop pause`: which rules may not submit, since when.

One row per pause: a rule's name, or `ALL_RULES` for every rule. Kept in the ledger so a pause
outlives a restart, and, in a shared ledger, holds every host. The daemon reads it on its loop;
what a pause means for a job is decided in `jobs.gate`.
"""

from __future__ import annotations

from promptdrop.ledger.core import LedgerCore

ALL_RULES = "*"  # the row that pauses every rule


class PausesMixin(LedgerCore):
    """Pauses asked for by `promptdrop pause`, by rule (`ALL_RULES`: every rule)."""

    def pauses(self) -> dict[str, float]:
        """Every pause in force: rule name (or ALL_RULES) → when it began (epoch seconds)."""
        rows = self._rows("SELECT rule, since FROM pauses ORDER BY rule")
        return {str(r["rule"]): float(r["since"]) for r in rows}

    def set_pause(self, rule: str, since: float) -> bool:
        """Pause `rule` (or ALL_RULES) from `since`; False when it already was (it keeps the
        time it began)."""
        return (
            self._run(
                "INSERT INTO pauses (rule, since) VALUES (?, ?) ON CONFLICT (rule) DO NOTHING",
                [rule, float(since)],
            )
            == 1
        )

    def clear_pause(self, rule: str) -> bool:
        """End the pause of `rule` (or the ALL_RULES one); False when there was none."""
        return self._run("DELETE FROM pauses WHERE rule = ?", [rule]) == 1

    def clear_pauses(self) -> int:
        """End every pause; return how many there were."""
        return self._run("DELETE FROM pauses")

    def known_rules(self) -> set[str]:
        """The rule names the ledger has seen a prompt file or a job of."""
        rows = self._rows(
            "SELECT rule FROM sources WHERE rule IS NOT NULL"
            " UNION SELECT rule FROM jobs WHERE rule IS NOT NULL"
        )
        return {str(r["rule"]) for r in rows}
