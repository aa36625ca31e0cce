"""Ceiling baseline: the product's topology and transport with nothing but one signature
and one verification per hop.

Same as the product: one coordinator process and N agency node processes, each its own
`python -m bench.ceiling` process; aio gRPC with mutual TLS through
`fedscore.runtime.rpc.start_server` / `secure_channel` (same options, same raw-bytes handlers and
error mapping); certificates, keys and endpoints from a real `init_federation` folder;
the client sends the same signed `ScoreRequest` (carrying the product's real consent
token, so requests weigh the same) and checks the answer the same way (bench.loadgen
kind "score").

Per query, and nothing else:
  coordinator: verify the relying party's ScoreQuery envelope; for every node sign a
    ContributionBatch of one (carrying the query bytes) and send it on ContributeBatch,
    as the product asks a lone query, all nodes concurrently; verify every
    ContributionAnswerBatch; sign a ScoreResult bound to the request nonce.
  node: verify the ContributionBatch envelope; sign a ContributionAnswerBatch of one.
Each verification opens its object as the product does, as its kind of signed object
under its signer's typed keys (`fedscore.protocol.questions`, `fedscore.protocol.requests`),
with the few field checks that come with it.
No token, revocation, policy, replay, log, database, sealing or mask work: that is the
product's price, which this ceiling leaves out on purpose.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import subprocess
import sys
from pathlib import Path

import grpc.aio
from google.protobuf.message import Message

from fedscore.apps.processes import stop_on_signal
from fedscore.protocol.questions import SignedContributionAnswerBatch, SignedContributionBatch
from fedscore.protocol.requests import authenticate_request
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.rpc import Handler, call_unary, parse_request, secure_channel, start_server
from fedscore.v1 import query_pb2
from fedscore.v1.trust_pb2 import Role
from keys.envelope import sign_message

COORDINATOR_SERVICE = "fedscore.v1.CoordinatorService"
NODE_SERVICE = "fedscore.v1.NodeService"
CONTRIBUTE_BATCH = f"/{NODE_SERVICE}/ContributeBatch"


def node_handlers(party: Party) -> dict[str, dict[str, Handler]]:
    coordinator_keyring = party.trust.coordinator_keys()

    async def contribute(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        request = parse_request(raw, query_pb2.ContributeBatchRequest)
        batch = SignedContributionBatch.verify(request.batch, coordinator_keyring)
        answer = query_pb2.ContributionAnswer(
            query_id=hashlib.sha256(batch.batch.queries[0].spec).hexdigest()[:32],
            agency_id=party.id,
            masked_value=0,
        )
        answers = query_pb2.ContributionAnswerBatch(
            batch_id=batch.batch.batch_id,
            agency_id=party.id,
            batch_hash=batch.batch_hash,
            outcomes=[query_pb2.ContributionOutcome(answer=answer)],
        )
        signed = sign_message(answers, party.signing_key)
        return query_pb2.ContributeBatchResponse(answers=signed)

    return {NODE_SERVICE: {"ContributeBatch": contribute}}


def coordinator_handlers(party: Party) -> dict[str, dict[str, Handler]]:
    query_keyring = party.trust.requester_keys()
    agency_keyring = party.trust.agency_keys()
    agencies = [a for a in party.trust.by_role(Role.ROLE_AGENCY) if a.endpoint]
    channels = {a.id: secure_channel(a.endpoint, party.tls, server_name=a.id) for a in agencies}

    async def ask(agency_id: str, query_bytes: bytes) -> int:
        item = query_pb2.BatchedContributionQuery(spec=query_bytes)
        batch = query_pb2.ContributionBatch(
            batch_id=secrets.token_hex(16), agency_ids=[agency_id], queries=[item]
        )
        request = query_pb2.ContributeBatchRequest(batch=sign_message(batch, party.signing_key))
        response = await call_unary(
            channels[agency_id], CONTRIBUTE_BATCH, request, query_pb2.ContributeBatchResponse, 5.0
        )
        answers = SignedContributionAnswerBatch.verify(response.answers, agency_keyring)
        return int(answers.answers.outcomes[0].answer.masked_value)

    async def score(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        request = parse_request(raw, query_pb2.ScoreRequest)
        query = authenticate_request(request.query, query_keyring).query
        values = await asyncio.gather(*(ask(a, request.query.payload) for a in channels))
        result = query_pb2.ScoreResult(
            query_id=secrets.token_hex(16),
            purpose_id=query.purpose_id,
            relying_party=query.relying_party,
            request_nonce_hash=hashlib.sha256(query.nonce).digest(),
            score=sum(values),
        )
        return query_pb2.ScoreResponse(result=sign_message(result, party.signing_key))

    return {COORDINATOR_SERVICE: {"Score": score}}


async def serve(workdir: Path, party_id: str) -> None:
    party = load_party(workdir, party_id)
    handlers = coordinator_handlers(party) if party.role == Role.ROLE_COORDINATOR else None
    services = handlers or node_handlers(party)
    server = await start_server(party.tls, party.participant.endpoint, services)
    await stop_on_signal().wait()
    await server.stop(0.5)


def start_process(workdir: Path, party_id: str) -> subprocess.Popen[bytes]:
    log = (workdir / f"ceiling-{party_id}.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.ceiling", "--workdir", str(workdir), "--party", party_id],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.ceiling", description=__doc__)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--party", required=True, help="coordinator or an agency id")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.workdir, args.party))
    return 0


if __name__ == "__main__":
    sys.exit(main())
