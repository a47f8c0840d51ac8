"""The ledger: promptdrop's memory of every job, prompt file, written file and upload."""

from promptdrop.ledger.states import ALLOWED, FINAL, IllegalTransition, JobState
from promptdrop.ledger.store import (
    LEDGER_NAME,
    Job,
    Ledger,
    Output,
    Recovery,
    Source,
    StaleTransition,
    default_state_dir,
)

__all__ = [
    "ALLOWED", "FINAL", "LEDGER_NAME", "IllegalTransition", "Job", "JobState", "Ledger",
    "Output", "Recovery", "Source", "StaleTransition", "default_state_dir",
]
