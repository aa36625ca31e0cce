"""Batch scoring: a relying party holding many consents asks for all of them on one stream.

    python -m bench.batch_bench [--quick]

The product as `make bench` runs it (5 agencies, each party its own process, mutual TLS,
demo records). The consent registry grants PTT's fuel-discount purpose, then one client
process, separate from the servers, streams signed ScoreQuery requests (each its own
nonce, all signed BEFORE the timed window) over one `ScoreBatch` stream and collects the
responses. Two shapes:
- `batch_score_5_agencies` (the figure the targets read): every query its own consent
  token, as a utility computing monthly discounts holds one consent per customer and
  asks once; no party has seen any of these tokens before, so every signature is
  verified and every sealed subject opened (the warm-up uses tokens of its own);
- `batch_score_5_agencies_reused_tokens`: 1,000 tokens asked 6 times each (a partner
  re-checking its customers), where the parties' memory of verified tokens and opened
  subjects (`fedscore.memo`) saves that work on every use after the first.
- `batch_floor_5_agencies`: the floor (bench.batched_ceiling --floor, its own folder and
  registry) asked the same way with fresh tokens, in turns with `batch_score_5_agencies`
  (`TURNS` of each, alternating, each with its share of the queries); the product's
  record carries `ratio_to_floor`.
Every response is checked AFTER the window: the coordinator's signature, the binding to
its request's nonce, and that it released a band; a refused or wrong answer counts as an
error, never as a score. `batch_scores_per_s` = verified scores
/ seconds from the first request written to the last response read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import baselines, scenarios
from bench.loadgen import process_cpu_seconds
from fedscore.apps import client
from fedscore.apps.client import COORDINATOR_ID
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.rpc import secure_channel
from fedscore.v1.envelope_pb2 import Envelope

SCENARIO = "batch_score_5_agencies"
REUSED_SCENARIO = "batch_score_5_agencies_reused_tokens"
FLOOR_SCENARIO = "batch_floor_5_agencies"
# Turns of the product and of the floor, alternating (each with its share of the queries).
TURNS = 2
AGENCIES = 5
PURPOSE = "ptt-fuel-discount"
RELYING_PARTY = "ptt"
WARM_UP_QUERIES = 64
GRANTS_AT_ONCE = 16


@dataclass
class ClientFigures:
    """What the client process measured and checked."""

    queries: int = 0
    scores: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def _signed(party: Party, tokens: list[bytes], count: int) -> list[Envelope]:
    envelopes = [Envelope.FromString(token) for token in tokens]
    return [
        client.signed_score_query(party, envelopes[n % len(envelopes)], PURPOSE)
        for n in range(count)
    ]


def _client_main(
    workdir: str, warm_tokens: list[bytes], tokens: list[bytes], count: int, results: Any
) -> None:
    """The relying party's process: sign everything, warm up, stream, then check."""
    party = load_party(Path(workdir), RELYING_PARTY)
    warm = _signed(party, warm_tokens, WARM_UP_QUERIES)
    queries = _signed(party, tokens, count)
    endpoint = party.trust.participant(COORDINATOR_ID).endpoint
    figures = ClientFigures(queries=count)

    async def main() -> list[Any]:
        async with secure_channel(endpoint, party.tls, COORDINATOR_ID) as channel:
            await client.stream_batch(channel, warm, client.BATCH_TIMEOUT)
            cpu = time.process_time()
            started = time.perf_counter()
            responses = await client.stream_batch(channel, queries, client.BATCH_TIMEOUT)
            figures.seconds = time.perf_counter() - started
            figures.cpu_seconds = time.process_time() - cpu
            return responses

    responses = asyncio.run(main())
    answered = set()
    for response in responses:  # checked after the window, never inside it
        sequence = int(response.sequence)
        outcome = client.batch_outcome(party, response, queries[sequence])
        answered.add(sequence)
        if outcome.outcome is not None and outcome.outcome.release_kind == "band":
            figures.scores += 1
        else:
            figures.errors += 1
            if len(figures.error_samples) < 3:
                figures.error_samples.append(str(outcome.refusal))
    figures.errors += count - len(answered)
    results.put(figures)


def measure(
    federation: scenarios.Federation,
    pids: dict[str, int],
    tokens: int,
    count: int,
    scenario: str = SCENARIO,
) -> dict[str, Any]:
    """Grant `tokens` consents (citizens in turn), then score `count` queries over them on
    one stream; the warm-up queries use consents of their own."""
    pool = federation.data.citizens
    citizens = [pool[n % len(pool)] for n in range(tokens + WARM_UP_QUERIES)]
    granted = asyncio.run(
        scenarios.grant_many(federation.workdir, citizens, PURPOSE, RELYING_PARTY)
    )
    warm, measured = granted[:WARM_UP_QUERIES], granted[WARM_UP_QUERIES:]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    worker = context.Process(
        target=_client_main, args=(str(federation.workdir), warm, measured, count, results)
    )
    cpu_before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    worker.start()
    figures: ClientFigures = results.get(timeout=600)
    worker.join(timeout=60)
    cpu = {name: process_cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    rate = figures.scores / figures.seconds if figures.seconds else 0.0
    record: dict[str, Any] = {
        "scenario": scenario,
        "agencies": len(federation.agencies),
        "tls": True,
        "tokens": len(measured),
        "queries": figures.queries,
        "scores": figures.scores,
        "errors": figures.errors,
        "window_s": round(figures.seconds, 2),
        "batch_scores_per_s": round(rate, 1),
        "scores_per_s": round(rate, 1),
        "client_cores": round(figures.cpu_seconds / figures.seconds, 2) if figures.seconds else 0,
        # Whole run (signing and warm-up included), per score: an upper bound.
        "server_cpu_ms_per_score": {
            name: round(seconds * 1000 / max(figures.scores, 1), 3) for name, seconds in cpu.items()
        },
    }
    if figures.error_samples:
        record["error_samples"] = figures.error_samples
    return record


def _in_turns(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One record from the turns of one target: counts added, rates over the summed windows."""
    merged = dict(records[0])
    for key in ("tokens", "queries", "scores", "errors"):
        merged[key] = sum(r[key] for r in records)
    seconds = sum(r["window_s"] for r in records)
    rate = merged["scores"] / seconds if seconds else 0.0
    merged.update(window_s=round(seconds, 2), batch_scores_per_s=round(rate, 1))
    merged["scores_per_s"] = merged["batch_scores_per_s"]
    merged["client_cores"] = round(
        sum(r["client_cores"] * r["window_s"] for r in records) / seconds, 2
    )
    merged["server_cpu_ms_per_score"] = {
        name: round(sum(r["server_cpu_ms_per_score"][name] for r in records) / len(records), 3)
        for name in records[0]["server_cpu_ms_per_score"]
    }
    samples = [s for r in records for s in r.get("error_samples", [])][:3]
    if samples:
        merged["error_samples"] = samples
    merged["turns"] = len(records)
    return merged


def run(quick: bool) -> list[dict[str, Any]]:
    """The batch scenarios for `make bench` (`bench.run` reads its dict lines).

    The product with a fresh consent per query and the floor (bench.baselines: the batched
    ceiling plus, per question at each node, the token's signature and the sealed subject,
    asked on the same kind of stream with fresh tokens of its own registry) are measured
    in turns, TURNS of each, alternating; then the product with reused tokens.
    """
    count = 1500 if quick else 6000
    with tempfile.TemporaryDirectory(prefix="fedscore-batch-") as tmp:
        root = Path(tmp)
        federation, _ = scenarios.prepare(root, "batch", AGENCIES)
        citizen = federation.data.demo_citizen
        with (
            scenarios.running(federation) as processes,
            baselines.running(root, AGENCIES, None, citizen, floor=True) as floor,
        ):
            pids = {"coordinator": processes.processes[COORDINATOR_ID].pid}
            pids.update({a: processes.processes[a].pid for a in federation.agencies})
            on_floor = scenarios.Federation(
                floor.workdir, floor.agencies, federation.data, floor.portal
            )
            turns: dict[str, list[dict[str, Any]]] = {SCENARIO: [], FLOOR_SCENARIO: []}
            share = count // TURNS
            for _ in range(TURNS):
                turns[SCENARIO].append(measure(federation, pids, share, share))
                turns[FLOOR_SCENARIO].append(
                    measure(on_floor, floor.pids, share, share, FLOOR_SCENARIO)
                )
            distinct, floor_record = _in_turns(turns[SCENARIO]), _in_turns(turns[FLOOR_SCENARIO])
            distinct["ratio_to_floor"] = round(
                distinct["scores_per_s"] / max(floor_record["scores_per_s"], 1e-9), 3
            )
            floor_record["baseline"] = "floor (bench.batched_ceiling --floor)"
            reused = measure(federation, pids, count // 6, count, REUSED_SCENARIO)
            return [distinct, floor_record, reused]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.batch_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    for line in run(args.quick):
        print(json.dumps(line, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
