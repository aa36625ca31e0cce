"""Batched ceiling and floor: the product's design with nothing but its unskippable work.

    python -m bench.batched_ceiling --workdir DIR --party ID [--floor]

The per-query ceiling (bench.ceiling) signs and verifies once per question per hop; the
product batches concurrent questions into one signed round trip per node, so that
ceiling no longer bounds it. These two baselines share the product's design:

Same as the product: one coordinator process and N agency node processes from a real
`init_federation` folder, aio gRPC with mutual TLS through `fedscore.runtime.rpc`
(`start_server`, default per-caller limits, `secure_channel`, raw-bytes handlers), the
same `Score` and `ScoreBatch` methods and messages, and the product's micro-batching
itself, not a copy: the coordinator hands every question to `coordinator.dispatch.
BatchDispatcher` (one batch per participant set per round trip, at most
`MAX_BATCH_QUERIES`, one batch in flight per set or two when a full one waits, flushed
at the end of the current event-loop step), over `coordinator.fanout.NodeChannels`, and
every node's answer batch is checked by the dispatcher's own `batch_replies`. A
`ScoreBatch` stream is read as `coordinator.batch` reads one (same chunk size
`CHUNK_QUERIES` and `CHUNKS_IN_FLIGHT`, a chunk being the first waiting query plus every
query already read, imported from there; this loop is a copy, as the product's is bound
to its store and checks).

Batched ceiling (the default), per batch and per hop, and nothing else:
  coordinator -> nodes: one signature of the `ContributionBatch` (the dispatcher's);
  node: one verification of it (`SignedContributionBatch.verify`, as `node.checks` step
    1) and one signature of its `ContributionAnswerBatch`;
  coordinator: one verification of each answer batch (the dispatcher's).
  At the edge the protocol has no batch signature: each question is a relying party's
  own signed `ScoreQuery` (verified once, `authenticate_request`) and each answer a
  `ScoreResult` the coordinator signs, exactly as in the product.
  A node's answer to each item names its query id and the SHA-256 of its spec bytes
  (what the dispatcher checks) and carries 0; the coordinator builds each question's
  `QuerySpec` as the product does (the relying party's signed request inside it, so
  batches weigh the same) and releases what the purpose releases for the sum.
  No token, revocation, policy, replay, log, database, mask or seal work.

Floor (`--floor`): the batched ceiling plus, per question at each node, the cryptography
no party may skip for a token it has not seen: the registry's signature on the consent
token (`fedscore.protocol.tokens.verify_token`, which remembers the tokens it verified,
as the product's nodes do) and opening the node's own sealed subject (`keys.seal.
open_subject`, remembered per token and blob as `node.answer.subject_pseudonym` does).
With the product's token bytes: the tokens are granted by the folder's own consent
registry, the product's server, so they verify under this folder's keys.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc.aio
from google.protobuf.message import Message

from coordinator.batch import BATCH_MESSAGE_BYTES as STREAM_MESSAGE_BYTES
from coordinator.batch import CHUNK_QUERIES, CHUNKS_IN_FLIGHT
from coordinator.dispatch import BatchDispatcher
from coordinator.fanout import LoggedQuery, NodeAnswers, NodeChannels, score_total
from coordinator.release import release_for, set_release
from fedscore.apps.processes import stop_on_signal
from fedscore.errors import FedscoreError
from fedscore.memo import BoundedMemo
from fedscore.protocol.questions import SignedContributionBatch
from fedscore.protocol.requests import authenticate_request, requested_year
from fedscore.protocol.tokens import verify_token
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.rpc import BidiStream, Handler, parse_request, start_server
from fedscore.runtime.statuses import item_refusal
from fedscore.v1 import query_pb2
from fedscore.v1.consent_pb2 import ConsentToken
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import Role
from keys.envelope import sign_message
from keys.seal import open_subject
from node.batch import BATCH_MESSAGE_BYTES as NODE_MESSAGE_BYTES
from node.consent_checks import own_sealed_subject
from node.service import OPENED_SUBJECTS_KEPT

COORDINATOR_SERVICE = "fedscore.v1.CoordinatorService"
NODE_SERVICE = "fedscore.v1.NodeService"
# As the product's coordinator (coordinator.scoring.QUERY_LIFETIME_SECONDS).
QUERY_LIFETIME_SECONDS = 30


class BaselineNode:
    """A node's side: one verification and one signature per batch (and, as the floor, the
    token's signature and the sealed subject per question not seen before)."""

    def __init__(self, party: Party, floor: bool) -> None:
        self.party = party
        self.floor = floor
        self.coordinator_keyring = party.trust.coordinator_keys()
        self.opened: BoundedMemo[bool] = BoundedMemo(OPENED_SUBJECTS_KEPT)

    def unskippable(self, spec: query_pb2.QuerySpec, now: int) -> None:
        """The floor's work for one question: the registry's signature on its token, and
        this node's own sealed subject in it opened (each once per token, as the product)."""
        token = query_pb2.ScoreQuery.FromString(spec.request.payload).token
        verified = verify_token(token, self.party.trust, now)
        blob = own_sealed_subject(verified, self.party.id)
        key = (verified.token.token_id, blob)
        if self.opened.get(key) is None:
            open_subject(blob, self.party.box, verified.token.token_id, self.party.id)
            self.opened.put(key, True)

    def outcome(self, item: query_pb2.BatchedContributionQuery, now: int) -> Message:
        spec = query_pb2.QuerySpec.FromString(item.spec)
        try:
            if self.floor:
                self.unskippable(spec, now)
        except FedscoreError as error:
            return query_pb2.ContributionOutcome(refusal=item_refusal(error))
        answer = query_pb2.ContributionAnswer(
            query_id=spec.query_id,
            agency_id=self.party.id,
            masked_value=0,
            query_hash=hashlib.sha256(item.spec).digest(),
        )
        return query_pb2.ContributionOutcome(answer=answer)

    def contribute_batch(self, raw: bytes) -> query_pb2.ContributeBatchResponse:
        request = parse_request(raw, query_pb2.ContributeBatchRequest, NODE_MESSAGE_BYTES)
        signed = SignedContributionBatch.verify(request.batch, self.coordinator_keyring)
        now = int(time.time())
        answers = query_pb2.ContributionAnswerBatch(
            batch_id=signed.batch.batch_id,
            agency_id=self.party.id,
            batch_hash=signed.batch_hash,
            outcomes=[self.outcome(item, now) for item in signed.batch.queries],
        )
        signed_answers = sign_message(answers, self.party.signing_key)
        return query_pb2.ContributeBatchResponse(answers=signed_answers)

    def handlers(self) -> dict[str, dict[str, Handler | BidiStream]]:
        async def contribute(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
            return self.contribute_batch(raw)

        return {NODE_SERVICE: {"ContributeBatch": contribute}}


class BaselineCoordinator:
    """The coordinator's side: each question verified, specified, handed to the product's
    `BatchDispatcher`, summed, and its result signed."""

    def __init__(self, party: Party) -> None:
        self.party = party
        self.query_keyring = party.trust.requester_keys()
        self.dispatcher = BatchDispatcher(
            NodeChannels.open(party.trust, party.tls),
            party.signing_key,
            party.trust.agency_keys(),
        )
        self.asked = 0

    def ask(
        self, envelope: Envelope
    ) -> tuple[query_pb2.ScoreResult, asyncio.Future[NodeAnswers[int]]]:
        """Verify one signed question and hand it to the dispatcher: the result to fill
        and sign, and the nodes' answers to come."""
        request = authenticate_request(envelope, self.query_keyring)
        query = request.query
        policy = self.party.policy
        purpose = policy.purpose(query.purpose_id)
        now = int(time.time())
        token = ConsentToken.FromString(query.token.payload)
        spec = query_pb2.QuerySpec(
            query_id=secrets.token_hex(16),
            purpose_id=query.purpose_id,
            policy_hash=token.policy_hash,
            year=requested_year(query, policy),
            participants=list(purpose.participants),
            issued_at=now,
            expires_at=now + QUERY_LIFETIME_SECONDS,
            coordinator=self.party.id,
            request=envelope,
            kind=query_pb2.QUESTION_KIND_SCORE,
        )
        spec_bytes = spec.SerializeToString()
        query_hash = hashlib.sha256(spec_bytes).digest()
        self.asked += 1
        promise = query_pb2.LogPromise(
            origin=self.party.id,
            index=self.asked,
            leaf_hash=query_hash,
            query_hash=query_hash,
            logged_at=now,
        )
        answers = self.dispatcher.ask(LoggedQuery(spec, spec_bytes, query_hash, promise))
        result = query_pb2.ScoreResult(
            query_id=spec.query_id,
            purpose_id=query.purpose_id,
            relying_party=request.relying_party,
            token_id=token.token_id,
            year=spec.year,
            policy_hash=spec.policy_hash,
            request_nonce_hash=hashlib.sha256(query.nonce).digest(),
            log_index=self.asked,
        )
        return result, answers

    async def answer(self, envelope: Envelope) -> Envelope:
        """One question, answered: the signed ScoreResult, or the one error."""
        result, pending = self.ask(envelope)
        total = score_total(await pending)
        policy = self.party.policy
        set_release(result, release_for(policy, policy.purpose(result.purpose_id), total))
        result.issued_at = int(time.time())
        return sign_message(result, self.party.signing_key)

    async def score(self, raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        request = parse_request(raw, query_pb2.ScoreRequest)
        return query_pb2.ScoreResponse(result=await self.answer(request.query))

    async def _outcome(self, sequence: int, envelope: Envelope) -> query_pb2.ScoreBatchOutcome:
        try:
            result = await self.answer(envelope)
        except FedscoreError as error:
            return query_pb2.ScoreBatchOutcome(sequence=sequence, refusal=item_refusal(error))
        return query_pb2.ScoreBatchOutcome(sequence=sequence, result=result)

    async def score_batch(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Message]:
        """A ScoreBatch stream, chunked as `coordinator.batch.ScoreBatchRun` chunks one."""
        incoming: asyncio.Queue[tuple[int, Envelope] | None] = asyncio.Queue(CHUNK_QUERIES * 4)
        responses: asyncio.Queue[query_pb2.ScoreBatchResponse | None] = asyncio.Queue(
            CHUNKS_IN_FLIGHT + 2
        )
        slots = asyncio.Semaphore(CHUNKS_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()

        async def read() -> None:
            sequence = 0
            try:
                async for raw in requests:
                    batch = parse_request(raw, query_pb2.ScoreBatchRequest, STREAM_MESSAGE_BYTES)
                    for query in batch.queries:
                        await incoming.put((sequence, query))
                        sequence += 1
            finally:  # what was read is still answered; then the stream ends with the error
                await incoming.put(None)

        async def finish(chunk: list[tuple[int, Envelope]]) -> None:
            try:
                outcomes = await asyncio.gather(*(self._outcome(s, q) for s, q in chunk))
                await responses.put(query_pb2.ScoreBatchResponse(outcomes=outcomes))
            finally:
                slots.release()

        async def chunks() -> None:
            ended = False
            while not ended:
                first = await incoming.get()
                if first is None:
                    break
                await slots.acquire()
                chunk = [first]
                while len(chunk) < CHUNK_QUERIES and not incoming.empty():
                    item = incoming.get_nowait()
                    if item is None:
                        ended = True
                        break
                    chunk.append(item)
                task = asyncio.get_running_loop().create_task(finish(chunk))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
            await responses.put(None)

        loop = asyncio.get_running_loop()
        workers = [loop.create_task(read()), loop.create_task(chunks())]
        try:
            while (response := await responses.get()) is not None:
                yield response
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*workers, return_exceptions=True)

    def handlers(self) -> dict[str, dict[str, Handler | BidiStream]]:
        methods: dict[str, Handler | BidiStream] = {
            "Score": self.score,
            "ScoreBatch": BidiStream(self.score_batch),
        }
        return {COORDINATOR_SERVICE: methods}


async def serve(workdir: Path, party_id: str, floor: bool) -> None:
    party = load_party(workdir, party_id)
    role = BaselineCoordinator if party.role == Role.ROLE_COORDINATOR else None
    services = role(party).handlers() if role else BaselineNode(party, floor).handlers()
    server = await start_server(party.tls, party.participant.endpoint, services)
    await stop_on_signal().wait()
    await server.stop(0.5)


def start_process(workdir: Path, party_id: str, floor: bool) -> subprocess.Popen[bytes]:
    log = (workdir / f"baseline-{party_id}.log").open("ab")
    command = [sys.executable, "-m", "bench.batched_ceiling", "--workdir", str(workdir)]
    process = subprocess.Popen(
        [*command, "--party", party_id, *(["--floor"] if floor else [])],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.batched_ceiling", description=__doc__)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--party", required=True, help="coordinator or an agency id")
    parser.add_argument("--floor", action="store_true", help="the floor, not the ceiling")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.workdir, args.party, args.floor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
