"""What a consent may ask for: its window of validity and its number of uses.

Invariants:
- A window starts now or later (a start up to `CLOCK_SKEW_SECONDS` in the past is taken
  as now's clock error, never as backdating), ends after it starts and after now, and is
  no longer than the purpose's `max_token_days`, measured from now.
- A use limit is the purpose's by default and never above it; a purpose without a limit
  takes the citizen's.
"""

from __future__ import annotations

from fedscore.errors import InvalidArgument
from policies.model import Purpose

SECONDS_PER_DAY = 86_400
# A citizen portal's clock may lag ours a little; a window may start this much in the past.
CLOCK_SKEW_SECONDS = 300


def check_window(purpose: Purpose, not_before: int, not_after: int, now: int) -> int:
    """The window start (0 means now); raise unless the window is sane and allowed."""
    start = not_before or now
    if start < now - CLOCK_SKEW_SECONDS:
        raise InvalidArgument(
            f"not_before {start} is in the past; consent cannot be backdated",
            reason="INVALID_WINDOW",
        )
    if not_after <= start:
        raise InvalidArgument(
            f"not_after {not_after} must be later than not_before {start}",
            reason="INVALID_WINDOW",
        )
    if not_after <= now:
        raise InvalidArgument(f"not_after {not_after} has already passed", "INVALID_WINDOW")
    longest = purpose.max_token_days * SECONDS_PER_DAY
    # Measured from now when the start is (slightly) backdated: the skew allowance only
    # covers clocks, it does not lengthen what the citizen may consent to ahead.
    if not_after - max(start, now) > longest:
        raise InvalidArgument(
            f"purpose {purpose.id} allows consent for at most {purpose.max_token_days} days",
            reason="WINDOW_TOO_LONG",
        )
    return start


def check_uses(purpose: Purpose, max_uses: int) -> int:
    """The use limit to put in the token; a purpose's limit is the default and the ceiling."""
    if purpose.max_uses <= 0:
        return max_uses
    if max_uses == 0:
        return purpose.max_uses
    if max_uses > purpose.max_uses:
        raise InvalidArgument(
            f"purpose {purpose.id} allows at most {purpose.max_uses} uses per consent",
            reason="TOO_MANY_USES",
        )
    return max_uses
