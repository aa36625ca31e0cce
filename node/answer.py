"""From an admitted question to the node's masked answer (ARCHITECTURE.md steps 4-5).

Both kinds of question are answered masked the same way, bound to the hash of the exact
spec bytes asked and to the kind: a score item as one value (`masked_contribution`, kind
`score-batch-item`), a histogram as one value per bin (`masked_bins`, kind
`histogram-bin`, each bin its own mask). A histogram's masked bins are then split between
the two aggregators (`shared_bins`, docs/adr/0019): the coordinator's shares in the clear,
the helper's sealed to the helper and signed. Reading a person's records is a score's alone.

Invariants:
- The node always answers an admitted query, with 0 when it holds nothing for the
  person: silence, or a different shape of answer, would reveal absence.
- What leaves the node is `(contribution + mask) mod 2^64`, never the contribution:
  `mask_for` sums the pairwise masks with every other participant of the full set, over
  the hash of the exact spec bytes asked and the kind of question, so only the sum over
  all participants asked the very same question is meaningful (docs/adr/0011).
- The sealed subject opened is the node's own blob in the registry-signed token.
- Pairwise seeds are derived once, when the node starts (`derive_mask_seeds`); answering
  a query derives no key and reads no file.
- Only indicators in the purpose's domains count, so a purpose gets no more than it names.
- The national ID lives only inside `subject_pseudonym`; only the pseudonym leaves it
  (and is remembered per sealed blob), and neither is ever logged.
- Records are read with the statements of `node.store` (`quantities_query`,
  `quantities_of_many_query`), built once per policy (`RecordLookup`); many people asked
  under one policy and year are read in one statement.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select

from fedscore.memo import BoundedMemo
from fedscore.runtime.prepared import Cursor
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import ContributionAnswer
from fedscore.v1.statistics_pb2 import HelperShare
from fedscore.v1.trust_pb2 import Role
from keys.box import BoxKeyPair
from keys.envelope import sign_message
from keys.masks import (
    Question,
    QuestionKind,
    bin_masks,
    mask_for,
    masked_answer,
    pairwise_seeds,
)
from keys.pseudonym import pseudonym
from keys.registry import TrustView
from keys.seal import open_subject
from keys.shares import ShareSource, seal_shares, split
from keys.signing import SigningKey
from node.checks import AdmittedQuery
from node.question_checks import SignedSpec
from node.store import as_pseudonym_bytes, quantities_of_many_query, quantities_query
from policies.model import Policy, Purpose
from policies.scoring import contribution


def derive_mask_seeds(agency_id: str, box: BoxKeyPair, trust: TrustView) -> dict[str, bytes]:
    """The seed shared with every other agency in the trust registry (once, at start)."""
    peers = {
        agency.id: bytes(agency.box_public_key)
        for agency in trust.by_role(Role.ROLE_AGENCY)
        if agency.id != agency_id
    }
    return pairwise_seeds(agency_id, box, peers)


def subject_pseudonym(
    admitted: AdmittedQuery,
    agency_id: str,
    box: BoxKeyPair,
    pseudonym_key: bytes,
    opened: BoundedMemo[str] | None = None,
) -> str:
    """Open this node's sealed blob for this token and name the person as the node does.

    `opened` remembers the pseudonym of each (token, blob) already opened here, so a token
    used again is not decrypted again; it holds pseudonyms only, never a national ID.
    """
    blob = admitted.sealed_subject
    key = (admitted.token_id, blob)
    if opened is not None:
        known = opened.get(key)
        if known is not None:
            return known
    national_id = open_subject(blob, box, admitted.token_id, agency_id)
    person = pseudonym(pseudonym_key, national_id)
    if opened is not None:
        opened.put(key, person)
    return person


def purpose_quantities(
    quantities: Mapping[str, int], policy: Policy, purpose: Purpose
) -> dict[str, int]:
    """Only the occurrences of indicators whose domain the purpose names."""
    return {
        code: count
        for code, count in quantities.items()
        if code in policy.indicators and policy.indicators[code].domain in purpose.domains
    }


def contribution_for(admitted: AdmittedQuery, agency_id: str, quantities: Mapping[str, int]) -> int:
    """This agency's points for the person in the year asked, under the query's policy."""
    counted = purpose_quantities(quantities, admitted.policy, admitted.purpose)
    if not counted:  # nothing held: what `contribution` gives for no occurrences
        return admitted.policy.clamp(0)
    return contribution(admitted.policy, agency_id, counted)


def masked_contribution(
    admitted: AdmittedQuery, agency_id: str, points: int, seeds: Mapping[str, bytes]
) -> ContributionAnswer:
    """The ContributionAnswer carrying `points` masked over the full participant set.

    The mask is bound to the exact spec bytes this node was asked (their SHA-256, the query
    hash) and to the kind of question, a score asked in a batch, so it cancels only against
    participants asked the very same question the same way (docs/adr/0011).
    """
    spec = admitted.signed.spec
    question = Question(QuestionKind.SCORE_BATCH_ITEM, admitted.signed.query_hash)
    mask = mask_for(agency_id, seeds, spec.participants, question)
    return ContributionAnswer(
        query_id=spec.query_id,
        agency_id=agency_id,
        masked_value=masked_answer(points, mask),
        query_hash=admitted.signed.query_hash,
    )


def masked_bins(
    counts: list[int], agency_id: str, seeds: Mapping[str, bytes], signed: SignedSpec[Any]
) -> list[int]:
    """Each bin's count of a histogram question under its own pairwise mask, bound to the
    spec's hash and the bin, over the spec's participant set."""
    question = Question(QuestionKind.HISTOGRAM_BIN, signed.query_hash)
    masks = bin_masks(agency_id, seeds, signed.spec.participants, question, len(counts))
    return [masked_answer(count, mask) for count, mask in zip(counts, masks, strict=True)]


def shared_bins(
    counts: list[int],
    agency_id: str,
    seeds: Mapping[str, bytes],
    signed: SignedSpec[Any],
    helper_public: bytes,
    source: ShareSource,
    signing_key: SigningKey,
) -> tuple[list[int], Envelope]:
    """The coordinator's shares of the masked bins, and the helper's: sealed to the helper
    (bound to this question and agency) inside a `HelperShare` the node signs.

    Each masked bin v is split as c + h = v mod 2^64 (`keys.shares.split`); neither share
    alone depends on v, and the masked values themselves exist only in this call.
    """
    shares = split(masked_bins(counts, agency_id, seeds, signed), source, agency_id)
    helper_share = HelperShare(
        query_id=signed.spec.query_id,
        agency_id=agency_id,
        query_hash=signed.query_hash,
        helper=signed.spec.helper,
        bins=len(counts),
        sealed_shares=seal_shares(helper_public, signed.query_hash, agency_id, shares.helper),
    )
    return shares.coordinator, sign_message(helper_share, signing_key)


@dataclass
class RecordLookup:
    """What answering needs per policy and year, derived once and then reused.

    Policies and the agency are fixed when the node starts, so the uncertified codes, the
    prepared statement and each year's window never change while it runs.
    """

    agency_id: str
    _statements: dict[str, Select[str, int]] = field(default_factory=dict)
    _many_statements: dict[str, Select[bytes, str, int]] = field(default_factory=dict)
    _windows: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)

    def uncertified(self, policy: Policy) -> frozenset[str]:
        return frozenset(
            indicator.code
            for indicator in policy.indicators_for(self.agency_id)
            if not indicator.requires_certification
        )

    def statement(self, policy: Policy) -> Select[str, int]:
        prepared = self._statements.get(policy.content_hash)
        if prepared is None:
            prepared = quantities_query(self.uncertified(policy))
            self._statements[policy.content_hash] = prepared
        return prepared

    def statement_for_many(self, policy: Policy) -> Select[bytes, str, int]:
        prepared = self._many_statements.get(policy.content_hash)
        if prepared is None:
            prepared = quantities_of_many_query(self.uncertified(policy))
            self._many_statements[policy.content_hash] = prepared
        return prepared

    def window(self, policy: Policy, year: int) -> tuple[int, int]:
        """[start, end) of `year` in the policy's time zone, as Unix seconds."""
        key = (policy.content_hash, year)
        window = self._windows.get(key)
        if window is None:
            start, end = policy.year_bounds(year)
            window = self._windows[key] = (int(start.timestamp()), int(end.timestamp()))
        return window

    def quantities(
        self, cursor: Cursor, policy: Policy, pseudonym: str | bytes, year: int
    ) -> dict[str, int]:
        """Occurrences per indicator for the person in `year`, as `NodeStore.quantities`."""
        start, end = self.window(policy, year)
        rows = cursor.execute(
            self.statement(policy),
            {"pseudonym": as_pseudonym_bytes(pseudonym), "start": start, "end": end},
        )
        return {str(code): int(total) for code, total in rows}

    def quantities_of_many(
        self, cursor: Cursor, policy: Policy, pseudonyms: Collection[bytes], year: int
    ) -> dict[bytes, dict[str, int]]:
        """`quantities` for several people (32-byte pseudonyms) in one statement."""
        people = sorted(set(pseudonyms))
        if len(people) == 1:  # the one-person statement needs no IN list
            return {people[0]: self.quantities(cursor, policy, people[0], year)}
        start, end = self.window(policy, year)
        rows = cursor.execute(
            self.statement_for_many(policy),
            {"pseudonyms": people, "start": start, "end": end},
            expanding=("pseudonyms",),
        )
        held: dict[bytes, dict[str, int]] = {}
        for person, code, total in rows:
            held.setdefault(bytes(person), {})[str(code)] = int(total)
        return held
