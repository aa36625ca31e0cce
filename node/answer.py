"""From an admitted query to the node's signed, masked answer (ARCHITECTURE.md steps 4-5).

Invariants:
- The node always answers an admitted query, with 0 when it holds nothing for the
  person: silence, or a different shape of answer, would reveal absence.
- What leaves the node is `(contribution + mask) mod 2^64`, never the contribution:
  `mask_for` sums the pairwise masks with every other participant of the full set, so
  only the sum over all participants is meaningful.
- Pairwise seeds are derived once, when the node starts (`derive_mask_seeds`); answering
  a query derives no key and reads no file.
- Only indicators in the purpose's domains count, so a purpose gets no more than it names.
- The national ID lives only inside `subject_pseudonym`; only the pseudonym leaves it,
  and neither is ever logged.
"""

from __future__ import annotations

from collections.abc import Mapping

from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import ContributionAnswer
from fedscore.v1.trust_pb2 import Role
from keys.box import BoxKeyPair
from keys.envelope import sign_message
from keys.masks import mask_for, masked_answer, pairwise_seeds
from keys.pseudonym import pseudonym
from keys.registry import TrustView
from keys.seal import open_subject
from keys.signing import SigningKey
from node.checks import AdmittedQuery
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
    admitted: AdmittedQuery, agency_id: str, box: BoxKeyPair, pseudonym_key: bytes
) -> str:
    """Open this node's sealed blob for this token and name the person as the node does."""
    national_id = open_subject(
        admitted.signed.query.sealed_subject, box, admitted.token_id, agency_id
    )
    return pseudonym(pseudonym_key, national_id)


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
    return contribution(admitted.policy, agency_id, counted)


def signed_answer(
    admitted: AdmittedQuery,
    agency_id: str,
    points: int,
    seeds: Mapping[str, bytes],
    signing_key: SigningKey,
) -> Envelope:
    """The ContributionAnswer carrying `points` masked over the full participant set, signed."""
    spec = admitted.signed.spec
    mask = mask_for(agency_id, seeds, spec.participants, spec.query_id)
    answer = ContributionAnswer(
        query_id=spec.query_id,
        agency_id=agency_id,
        masked_value=masked_answer(points, mask),
        query_hash=admitted.signed.query_hash,
    )
    return sign_message(answer, signing_key)
