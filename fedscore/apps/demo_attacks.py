"""The demo's attacks: an outsider's forged and replayed requests, and a coordinator's
operator who turns hostile with the coordinator's real keys, database and log."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

from fedscore.apps.client import send_score_query, signed_score_query
from fedscore.apps.demo_data import DemoData, expected_total
from fedscore.apps.demo_steps import PTT, narrate
from fedscore.apps.insider import HostileCoordinator
from fedscore.errors import FedscoreError
from fedscore.runtime.party import load_party
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import sign_bytes
from keys.masks import MODULUS
from keys.national_id import with_check_digit
from keys.signing import SigningKey
from policies.model import Policy


async def adversary(workdir: Path, self_view_token: Path) -> tuple[str, str]:
    """A forged and a replayed request, sent straight to the coordinator."""
    portal = load_party(workdir, "citizen-portal")
    token = Envelope.FromString(self_view_token.read_bytes())
    genuine = signed_score_query(portal, token, "self-view")
    forger = SigningKey.generate()
    forged = sign_bytes(genuine.payload_type, genuine.payload, forger)
    forged.key_id = genuine.key_id  # claims to be the citizen portal
    try:
        await send_score_query(portal, forged)
        forged_reason = "ACCEPTED"
    except FedscoreError as error:
        forged_reason = error.reason
    narrate(
        f"  forged request (signed by an outsider's key, claiming the portal's): {forged_reason}"
    )
    await send_score_query(portal, genuine)
    try:
        await send_score_query(portal, genuine)
        replay_reason = "ACCEPTED"
    except FedscoreError as error:
        replay_reason = error.reason
    narrate(f"  the same signed request sent a second time: {replay_reason}")
    return forged_reason, replay_reason


def nobody(citizens: list[str]) -> str:
    """A valid national ID that holds no record at any agency of the demo."""
    held = set(citizens)
    for serial in range(1, 10_000):
        candidate = with_check_digit(f"3999900{serial:05d}")
        if candidate not in held:
            return candidate
    raise FedscoreError("no record-less national ID left for the demo", "DEMO_FAILED")


async def hostile_coordinator(
    workdir: Path, data: DemoData, policy: Policy, citizen_token: Path, nobody_token: Path
) -> dict[str, Any]:
    """The coordinator's operator asks each agency a different question under one query id.

    It holds the coordinator's real key, database and log. PTT's requests about the demo
    citizen and about a person with no records reach it; instead of serving them it logs two
    "matching" entries under one query id and asks the first agency about the citizen and
    the others about the record-less person. With masks over the query id alone, the sum
    would have been the first agency's exact part of the citizen's score.
    """
    ptt = load_party(workdir, "ptt")
    citizen = signed_score_query(ptt, Envelope.FromString(citizen_token.read_bytes()), PTT)
    nobody = signed_score_query(ptt, Envelope.FromString(nobody_token.read_bytes()), PTT)
    insider = HostileCoordinator.open(workdir)
    try:
        query_id = "hostile-" + str(time.time_ns())
        to_citizen = insider.log_score(insider.score_spec(citizen, query_id))
        to_nobody = insider.log_score(insider.score_spec(nobody, query_id))
        target, *others = list(policy.purposes[PTT].participants)
        asked = {target: to_citizen} | dict.fromkeys(others, to_nobody)
        answers = await asyncio.gather(
            *(insider.ask_in_batch(agency, [asked[agency]]) for agency in asked)
        )
    finally:
        insider.close()
    outcomes = [per_node[0] for per_node in answers]
    refused = [answer for answer in outcomes if isinstance(answer, FedscoreError)]
    truth = {
        agency: expected_total({agency: path}, policy, data.demo_citizen, data.year)
        for agency, path in data.files.items()
    }
    narrate(f"  {target} asked about the citizen, {', '.join(others)} about a record-less person")
    if refused:
        narrate(f"  the nodes refused: {', '.join(sorted({r.reason for r in refused}))}")
        total = None
    else:
        total = sum(answer for answer in outcomes if isinstance(answer, int)) % MODULUS
        narrate(f"  every node answered; the masked answers add up to {total}")
    values = list(truth.values())
    partial_sums = {
        sum(chosen)
        for size in range(1, len(values) + 1)
        for chosen in itertools.combinations(values, size)
    }
    learned = total is not None and total in partial_sums
    narrate(
        f"  {target}'s true part of the citizen's score (from its export file): "
        f"{truth[target]}; every agency's: {truth}"
    )
    narrate(
        "  the sum is none of them, nor any partial sum: the masks were bound to the question "
        "each node was asked, so different questions leave noise"
        if not learned
        else "  THE SUM REVEALED A CONTRIBUTION"
    )
    return {"tried": "different spec per node", "learned_a_contribution": learned}
