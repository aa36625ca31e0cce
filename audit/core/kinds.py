"""The kinds of log entry, named once: every party writes and the regulator reads these.

A kind is a short lower-case name (`audit.core.entries.KIND`); its entry's fields are
described where the entry is written. Parties never write a kind not listed here, and
code names a kind only through these constants (a test finds any literal elsewhere).
"""

from __future__ import annotations

# The coordinator: a score question's life.
QUERY_ISSUED = "query_issued"
RESULT_RELEASED = "result_released"
QUERY_FAILED = "query_failed"
SCORE_REFUSED = "score_refused"
# The coordinator: a statistics release's life.
STATISTICS_QUERY_ISSUED = "statistics_query_issued"
STATISTICS_FAILED = "statistics_failed"
STATISTICS_REFUSED = "statistics_refused"
STATISTICS_RELEASED = "statistics_released"
# The helper aggregator: the releases it added noise to (and charged to its own ledger);
# its refusals are "statistics_refused" too.
STATISTICS_NOISED = "statistics_noised"
# An agency node: what it answered and refused.
QUERY_ANSWERED = "query_answered"
QUERY_REFUSED = "query_refused"
STATISTICS_ANSWERED = "statistics_answered"
# The consent registry.
CONSENT_GRANTED = "consent_granted"
CONSENT_REVOKED = "consent_revoked"
STATUS_LIST_PUBLISHED = "status_list_published"
REVOCATION_PUSH = "revocation_push"
# Every checking party: revocation notices pushed to it.
REVOCATION_RECEIVED = "revocation_received"
REVOCATION_REFUSED = "revocation_refused"
# Every party: refusals beyond the allowance, counted per caller and interval; within a
# summary's counts, calls refused for their rate are counted under RATE_LIMITED.
REFUSALS_SUMMARISED = "refusals_summarised"
RATE_LIMITED = "rate_limited"

ALL = frozenset(
    {
        QUERY_ISSUED,
        RESULT_RELEASED,
        QUERY_FAILED,
        SCORE_REFUSED,
        STATISTICS_QUERY_ISSUED,
        STATISTICS_FAILED,
        STATISTICS_REFUSED,
        STATISTICS_RELEASED,
        STATISTICS_NOISED,
        QUERY_ANSWERED,
        QUERY_REFUSED,
        STATISTICS_ANSWERED,
        CONSENT_GRANTED,
        CONSENT_REVOKED,
        STATUS_LIST_PUBLISHED,
        REVOCATION_PUSH,
        REVOCATION_RECEIVED,
        REVOCATION_REFUSED,
        REFUSALS_SUMMARISED,
        RATE_LIMITED,
    }
)
