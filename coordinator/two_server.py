"""A node-side release's noisy counts, from two aggregators (docs/adr/0019).

`noisy_counts` asks every agency node for its shares (`coordinator.histograms`), sums the
coordinator's own per bin (a uniformly random value: every share is), and sends the
helper aggregator one `NoiseOrder` the coordinator signs: the exact spec bytes it logged,
its signed log promise, the release id and the epsilon it reserved, and every node's
sealed, node-signed share for the helper, in participant order. The helper answers its
share sums plus OpenDP noise (`coordinator.helper_link`); the two sums, added mod 2^64 and
read as signed 64-bit integers, are the noisy counts, clamped at zero (post-processing).

Invariants:
- No exact count and no masked count exists in this process, at any time: the
  coordinator adds its share sum to a value that already carries the helper's noise.
- A failure of the helper is logged as "statistics_failed" (query id, reason, the helper)
  before it is raised, as a node's failure is; so the regulator knows this query, which
  every node answered, gave the coordinator nothing to charge (unless the helper's own log
  says it noised it).
- A sum outside +-2^48 cannot be a count plus noise: the shares did not add up (a node's
  two shares disagree); MASKS_DID_NOT_CANCEL, with the helper's charge kept.
"""

from __future__ import annotations

from audit.core import kinds
from audit.core.fields import QUERY_ID, REASON
from coordinator.helper_link import HelperFailure, NoiseStep
from coordinator.histograms import StatisticsAsker, federated_shares
from fedscore.errors import FedscoreError
from fedscore.v1.helper_pb2 import NoiseOrder
from keys.envelope import sign_message
from keys.shares import as_signed
from policies.model import Policy
from policies.releases import bins
from policies.statistics import ReleaseDefinition

# Far above any count plus noise, far below what shares that do not add up give (2^-15).
PLAUSIBLE = 2**48


async def noisy_counts(
    asker: StatisticsAsker,
    helper: NoiseStep,
    policy: Policy,
    definition: ReleaseDefinition,
    year: int,
    now: int,
    release_id: str,
    cost_nano: int,
) -> tuple[list[int], str]:
    """The release's noisy counts (clamped at zero) and its query id."""
    width = len(bins(policy, definition))
    shared = await federated_shares(asker, policy, definition, year, now, helper.helper_id)
    order = NoiseOrder(
        spec=shared.logged.spec_bytes,
        log_promise=shared.promise,
        release_id=release_id,
        epsilon_nano=cost_nano,
        shares=shared.helper_shares,
        helper=helper.helper_id,
    )
    try:
        helper_sums = await helper.noisy_share_sums(
            order, sign_message(order, asker.signing_key), width
        )
        noisy = [
            as_signed(own + theirs)
            for own, theirs in zip(shared.coordinator_sums, helper_sums, strict=True)
        ]
        if any(abs(value) >= PLAUSIBLE for value in noisy):
            raise HelperFailure(
                FedscoreError("the shares do not add up", reason="MASKS_DID_NOT_CANCEL"),
                charged=True,
            )
    except HelperFailure as failure:
        asker.log.append_now(
            kinds.STATISTICS_FAILED,
            {QUERY_ID: shared.query_id, REASON: failure.reason, "helper": helper.helper_id},
        )
        raise
    return [max(0, value) for value in noisy], shared.query_id
