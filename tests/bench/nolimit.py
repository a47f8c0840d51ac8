"""`promptdrop` with its client-side rate limiter switched off, for the overhead benchmark only.

    python -m tests.bench.nolimit watch --rules FILE ...

A rules file can only choose an account group, and the fastest group ("svip") still holds
submissions to about 30 per second. To see what the daemon itself costs per image, this entry
point maps every account group to `RateLimits.unlimited()` and then runs the ordinary CLI.
"""

from __future__ import annotations

import sys

from promptdrop import cli, ratelimit


def main() -> int:
    for group in list(ratelimit.RATE_GROUPS):
        ratelimit.RATE_GROUPS[group] = ratelimit.RateLimits.unlimited()
    sys.argv[0] = "promptdrop"
    result = cli.main()
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
