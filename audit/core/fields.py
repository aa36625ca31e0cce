"""The field names of log entry bodies that code reads back, named once.

Parties write an entry's body as a JSON object (`audit.core.entries`); the regulator's
cross-matching (`audit.client.crossmatch*`), the citizen's access history
(`audit.client.history`) and every party's access-history filter (`audit.servicer`)
read the fields below back. A field renamed on one side only would make its reader
silently find nothing (a clean-looking log), so writers and readers both name these
fields through the constants here, and a test finds any literal elsewhere.

Fields that are written but read by no code stay literals where their entries are
written and are described there: "kind" (the kind of question or masked answer, in
"query_issued", "query_answered", "statistics_query_issued"), "bins", "epsilon_charged",
"budget_remaining", "release_sha256", "policy_hash", "unavailable",
"invalid", "refused", "helper", "status_index", "status_sequence", "issuer", "sequence",
"size_bits", "revoked", "issued_at", "acknowledged", "not_acknowledged", and the
"refusals_summarised" entry's own fields (its per-kind counts name a refusal's reason
with `REASON`).

A leaf: imports nothing of ours, and anyone may import it.
"""

from __future__ import annotations

# One question, asked and answered. "query_issued", "query_answered",
# "statistics_query_issued" and "statistics_answered" carry QUERY_ID and QUERY_HASH (the
# SHA-256 of the exact spec bytes; the regulator matches an answer to its question by
# it); the outcomes ("result_released", "query_failed", "statistics_failed",
# "statistics_released") and a refusal of an authenticated question ("query_refused",
# "statistics_refused" at a node) carry QUERY_ID. PARTICIPANTS (the agencies asked) are
# in the two issued kinds; YEAR in all four and in "statistics_released" (and in the
# coordinator's "statistics_refused" once the year is known); REQUEST_NONCE_HASH (one
# signed request serves one query) in "query_issued" and "query_answered".
QUERY_ID = "query_id"
QUERY_HASH = "query_hash"
PARTICIPANTS = "participants"
YEAR = "year"
REQUEST_NONCE_HASH = "request_nonce_hash"

# Whose consent, asked by whom, for what: "query_issued" and "query_answered" carry all
# three; "score_refused" those that were authenticated; "consent_granted" all three;
# "query_refused" at a node its PURPOSE once authenticated. TOKEN_ID is also in
# "consent_revoked", "revocation_push" and "revocation_received".
TOKEN_ID = "token_id"  # noqa: S105 (a field name, not a secret)
PURPOSE = "purpose"
RELYING_PARTY = "relying_party"

# A node's answer names the coordinator's log promise it answered ("query_answered",
# "statistics_answered"): the coordinator, the index of its entry, and that entry's leaf
# hash, which the regulator re-derives.
COORDINATOR = "coordinator"
PROMISE_INDEX = "promise_index"
PROMISE_LEAF_HASH = "promise_leaf_hash"

# How a question ended. REASON (an error's reason) is in every refusal ("query_refused",
# "statistics_refused", "score_refused", "revocation_refused") and in "query_failed" or
# "statistics_failed" when one error decided it; "result_released" carries RELEASED
# (what kind of value: "score" or "band") and VALUE.
REASON = "reason"
RELEASED = "released"
VALUE = "value"

# Statistics: RELEASE (the policy's release name) is in "statistics_query_issued",
# "statistics_answered", "statistics_released", the helper's "statistics_noised" and, when
# known, "statistics_refused"; DATASET, EPSILON_SPENT (charged to the yearly budget) and
# RELEASE_ID (the coordinator's id of the release, under which both ledgers charge it) in
# "statistics_released" and "statistics_noised"; NOISED_BY (the helper aggregator that
# added the noise, docs/adr/0019) in a node-side "statistics_released".
RELEASE = "release"
DATASET = "dataset"
EPSILON_SPENT = "epsilon_spent"
RELEASE_ID = "release_id"
NOISED_BY = "noised_by"

# Consent: "consent_granted" carries NOT_BEFORE and NOT_AFTER (the token's validity);
# "consent_revoked" and the coordinator's "revocation_received" carry REVOKED_AT;
# "status_list_published" carries TTL_SECONDS (how long a published list may be relied on).
NOT_BEFORE = "not_before"
NOT_AFTER = "not_after"
REVOKED_AT = "revoked_at"
TTL_SECONDS = "ttl_seconds"

ALL = frozenset(
    {
        QUERY_ID,
        QUERY_HASH,
        PARTICIPANTS,
        YEAR,
        REQUEST_NONCE_HASH,
        TOKEN_ID,
        PURPOSE,
        RELYING_PARTY,
        COORDINATOR,
        PROMISE_INDEX,
        PROMISE_LEAF_HASH,
        REASON,
        RELEASED,
        VALUE,
        RELEASE,
        DATASET,
        EPSILON_SPENT,
        RELEASE_ID,
        NOISED_BY,
        NOT_BEFORE,
        NOT_AFTER,
        REVOKED_AT,
        TTL_SECONDS,
    }
)
