"""The protocol steps every question passes at an agency node, score or statistics.

A node is asked two kinds of question, and both are the same protocol: a spec the
coordinator logged before asking (its exact bytes' SHA-256 is the query hash every
participant masks under, docs/adr/0011), sent under the coordinator's signature with a
log promise naming that hash. `node.checks` admits a score question (an item of a signed
`ContributionBatch`), `node.statistics` a histogram question (a signed `StatisticsQuery`);
each calls the steps below with the values it holds, in this order, and each step raises
the same reason and code for both:

- `addressed_to`: the signed question names this agency (WRONG_AGENCY);
- `signed_spec`: the spec bytes parse and name a query id (MALFORMED_MESSAGE);
- `check_kind`: the spec asks the kind of question this path answers (QUESTION_KIND_MISMATCH);
- `policy_named`: the policy hash is one this node holds (UNKNOWN_POLICY);
- `check_freshness`: not expired, not issued beyond the clock skew in the future
  (QUERY_EXPIRED);
- `check_promise`: the coordinator's promise names these very spec bytes, in the log of
  the coordinator the spec names and every signature vouching for it is that
  coordinator's (BAD_LOG_PROMISE);
- `check_participants`: the full participant set the policy requires, never a subset, and
  this agency in it (PARTICIPANT_SET_MISMATCH);
- `check_year_range`: a year records can hold, from MIN_YEAR to a kind's latest (BAD_YEAR);
- `check_unanswered`: the query id was not answered here before (REPLAYED_QUERY), read
  before any record is counted; the claim that decides it is written in the answer's
  transaction, in the one `seen_query` table, so score and histogram questions share one
  space of query ids.

Where the two kinds differ, they differ on purpose, and the caller says so explicitly:
- Signature: a score question is an item of a batch signed once; its promise travels
  unsigned inside it, covered by the batch's signature (ADR 0009). A histogram question
  is signed per node and its promise is a separately signed envelope
  (`node.statistics.verified_promise`), whose signer `check_promise` also requires to be
  the coordinator.
- Consent: a score question carries the relying party's signed request and the citizen's
  consent token (`node.consent_checks`); a histogram counts everyone and carries neither.
  Instead it names a release the policy defines, with its contribution bound, and is paid
  from the node's own privacy budget before any record is counted (BUDGET_EXHAUSTED).
- Participants: a score asks the purpose's set, in any order (`in_order=False`); a
  histogram asks every agency of the policy, in policy order (`in_order=True`): the
  release's bins are laid out and summed over exactly that list.
- Year: a score asks the year the relying party asked (YEAR_MISMATCH), within the
  purpose's years (YEAR_NOT_ALLOWED), so its range check only bounds it to a valid
  datetime (MAX_YEAR); a histogram may ask any year that has begun (latest = this year).
- Replay: a score item's query id is claimed with its request nonce and a token use, all
  or none, in its batch's transaction (`node.claims`), which is its replay check; a
  histogram, whose count may be long, is checked here first and claimed
  (`ClaimStatements.claim_query_id`) in the transaction that charges the budget and logs it.

The steps every party checking a coordinator's question shares (`signed_spec`,
`check_kind`, `policy_named`, `check_freshness`, `check_promise`, `check_year_range`, with
`SignedSpec`) are defined in `fedscore.protocol.spec_checks`, where the helper aggregator
finds them too (docs/adr/0019); they are named here, for the node's callers, as they were.

Invariants: every step reads in-memory state only, except `check_unanswered` (one read);
none opens a sealed subject or reads a record. Only facts the coordinator's signature
authenticated go into `RefusalNotes`, so a forger cannot put a query id, purpose or
release of its choosing into the node's log.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from audit.core.fields import PURPOSE, QUERY_ID, RELEASE
from fedscore.errors import AlreadyExists, PermissionDenied
from fedscore.protocol.spec_checks import CLOCK_SKEW_SECONDS as CLOCK_SKEW_SECONDS
from fedscore.protocol.spec_checks import MAX_YEAR as MAX_YEAR
from fedscore.protocol.spec_checks import MIN_YEAR as MIN_YEAR
from fedscore.protocol.spec_checks import SignedSpec as SignedSpec
from fedscore.protocol.spec_checks import check_freshness as check_freshness
from fedscore.protocol.spec_checks import check_kind as check_kind
from fedscore.protocol.spec_checks import check_participant_list
from fedscore.protocol.spec_checks import check_promise as check_promise
from fedscore.protocol.spec_checks import check_year_range as check_year_range
from fedscore.protocol.spec_checks import policy_named as policy_named
from fedscore.protocol.spec_checks import signed_spec as signed_spec
from fedscore.protocol.status_list import RevocationState
from keys.keyring import CoordinatorKeys, RequesterKeys
from keys.registry import TrustView
from node.store import NodeStore
from policies.model import Policy


@dataclass(frozen=True)
class NodeTrust:
    """What the node trusts now: keyrings, policies, revocations, its own id.

    Made whole from one registry view (`of`) and replaced whole when the registry or the
    policy changes (`node.server`), so a question is checked under one view throughout.
    """

    agency_id: str
    trust: TrustView
    coordinator_keyring: CoordinatorKeys
    # Every policy accepted and still admissible, by content hash: a consent token names
    # the one it was issued under, which may be older than the newest.
    policies: Mapping[str, Policy]
    revocations: RevocationState
    # Relying parties and the citizen portal: whoever may sign a score request.
    request_keyring: RequesterKeys

    @classmethod
    def of(
        cls,
        agency_id: str,
        view: TrustView,
        policies: Mapping[str, Policy],
        revocations: RevocationState,
    ) -> NodeTrust:
        """What the node trusts under `view`: its keyrings, valid at the view's time."""
        return cls(
            agency_id=agency_id,
            trust=view,
            coordinator_keyring=view.coordinator_keys(),
            policies=dict(policies),
            revocations=revocations,
            request_keyring=view.requester_keys(),
        )


@dataclass
class RefusalNotes:
    """Authenticated facts about a question so far, for its refusal's log entry.

    A score question names a purpose, a histogram question a release; each fills only its own.
    """

    query_id: str = ""
    purpose: str = ""
    release: str = ""

    def fields(self) -> dict[str, str]:
        known = {QUERY_ID: self.query_id, PURPOSE: self.purpose, RELEASE: self.release}
        return {name: value for name, value in known.items() if value}


def addressed_to(agency_id: str, addressed: Collection[str]) -> None:
    """The signed question is addressed to this agency."""
    if agency_id not in addressed:
        raise PermissionDenied(
            f"the question is addressed to {sorted(addressed)}, not {agency_id!r}",
            reason="WRONG_AGENCY",
        )


def check_participants(
    listed: Sequence[str], required: Sequence[str], agency_id: str, *, in_order: bool
) -> None:
    """Exactly the participant set required (in its order if `in_order`), this agency in it.

    A subset would let the coordinator difference two sums; a duplicate is never the set.
    """
    check_participant_list(listed, required, in_order=in_order)
    if agency_id not in listed:
        raise PermissionDenied(
            f"agency {agency_id!r} is not a participant", reason="PARTICIPANT_SET_MISMATCH"
        )


def check_unanswered(store: NodeStore, query_id: str) -> None:
    """The query id was not answered here before (a read; the claim decides, later)."""
    if store.has_seen_query(query_id):
        raise AlreadyExists(f"query {query_id!r} was already answered", reason="REPLAYED_QUERY")
