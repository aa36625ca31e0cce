"""The one load generator every score-like scenario uses (product, ceiling, lake).

How it keeps itself out of the measurement:
- It runs in separate client processes (multiprocessing, spawn), never in the process
  that orchestrates the servers, and by default in two of them, each with half of the
  concurrent requests on its own mutual-TLS channel.
- Every request is built and signed BEFORE timing starts (a fresh nonce each); the timed
  loop only sends pre-serialized bytes (raw-bytes gRPC calls, no (de)serialization) and
  keeps the raw answers. Answers are checked (signature, binding to the request,
  expected value) AFTER the window closes, so a wrong answer still counts as an error.
- All client processes start together (one event) after their own warm-up.
- It measures its own CPU: `client_cores` = client CPU seconds / wall seconds during the
  window. With 2 cores shared by clients and servers, a client using far less than one
  core is not what limits throughput; `bench.run --clients 1/2/3` compares.

Sequential latency is one client process with one request in flight. Throughput is
`concurrency` requests in flight over all client processes for `seconds` (or until the
pre-signed requests run out); `loaded_p50_ms`/`loaded_p99_ms` are the latencies seen
during that window. `measure_interleaved` measures several targets in turns (a product
and its baseline), so a machine whose speed drifts affects them alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import queue
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import wrappers_pb2

from fedscore.apps.client import signed_score_query
from fedscore.protocol.signed import SignedScoreResult
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.rpc import secure_channel
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import ScoreQuery, ScoreRequest, ScoreResponse

SCORE_METHOD = "/fedscore.v1.CoordinatorService/Score"
CALL_TIMEOUT = 10.0
WARM_UP_REQUESTS = 20


@dataclass(frozen=True)
class Target:
    """What to load and how a client builds and checks requests (picklable).

    kind "score": signed ScoreRequest for `token` and `purpose`; the answer must be a
    ScoreResult signed by a coordinator key, bound to the request's nonce, releasing
    `expected` (if given). Used by the product and by the ceiling. With `tokens`, request
    n carries tokens[n] instead (the warm-up takes the first WARM_UP_REQUESTS), so no
    token is sent twice while there are enough of them.
    kind "lake": StringValue(national id) -> Int64Value(total) equal to `expected`.
    """

    kind: str
    workdir: str
    client_party: str
    endpoint: str
    server_name: str
    method: str = SCORE_METHOD
    token: bytes = b""
    tokens: tuple[bytes, ...] = ()
    purpose: str = "self-view"
    subject: str = ""
    expected: int | None = None


@dataclass
class ClientRun:
    """What one client process measured."""

    completed: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    cpu_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)


def _build_requests(target: Target, party: Party, count: int, first: int = 0) -> list[bytes]:
    """`count` requests; with `target.tokens`, the n-th carries tokens[first + n] (cycling)."""
    if target.kind == "lake":
        request = wrappers_pb2.StringValue(value=target.subject).SerializeToString()
        return [request] * count
    tokens = [Envelope.FromString(t) for t in target.tokens or (target.token,)]
    return [
        ScoreRequest(
            query=signed_score_query(party, tokens[(first + n) % len(tokens)], target.purpose)
        ).SerializeToString()
        for n in range(count)
    ]


def _check_answer(target: Target, party: Party, request: bytes, answer: bytes) -> None:
    """Raise if `answer` is not the right, authentic answer to `request`."""
    if target.kind == "lake":
        total = wrappers_pb2.Int64Value.FromString(answer).value
        if target.expected is not None and total != target.expected:
            raise ValueError(f"lake answered {total}, expected {target.expected}")
        return
    response = ScoreResponse.FromString(answer)
    result = SignedScoreResult.verify(response.result, party.trust.coordinator_keys()).result
    sent = ScoreQuery.FromString(ScoreRequest.FromString(request).query.payload)
    if result.request_nonce_hash != hashlib.sha256(sent.nonce).digest():
        raise ValueError("answer not bound to the request")
    kind = result.WhichOneof("release")
    value = getattr(result, kind) if kind else None
    if target.expected is not None and value != target.expected:
        raise ValueError(f"released {value!r}, expected {target.expected}")


async def _drive(
    target: Target,
    channel: grpc.aio.Channel,
    requests: list[bytes],
    concurrency: int,
    deadline_s: float,
    run: ClientRun,
    answers: list[tuple[bytes, bytes]],
    timed: bool,
) -> None:
    call = channel.unary_unary(target.method)  # raw bytes both ways
    queue = iter(requests)

    async def worker() -> None:
        for request in queue:
            if time.perf_counter() > deadline_s:
                return
            sent = time.perf_counter()
            try:
                answer = await call(request, timeout=CALL_TIMEOUT)
            except grpc.RpcError as exc:
                run.errors += 1
                if len(run.error_samples) < 3:
                    run.error_samples.append(f"{exc.code()}: {exc.details()}")
                continue
            if timed:
                run.latencies_ms.append((time.perf_counter() - sent) * 1000)
            answers.append((request, answer))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _client_main(
    target: Target,
    requests_count: int,
    concurrency: int,
    seconds: float,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """Body of one client process: prepare, warm up, wait for all, run, then check."""
    party = load_party(Path(target.workdir), target.client_party)
    warm = _build_requests(target, party, WARM_UP_REQUESTS)
    requests = _build_requests(target, party, requests_count, first=WARM_UP_REQUESTS)
    run = ClientRun()

    async def main() -> list[tuple[bytes, bytes]]:
        async with secure_channel(target.endpoint, party.tls, target.server_name) as channel:
            warm_answers: list[tuple[bytes, bytes]] = []
            await _drive(target, channel, warm, 1, float("inf"), ClientRun(), warm_answers, False)
            ready.put(os.getpid())
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
            answers: list[tuple[bytes, bytes]] = []
            cpu = time.process_time()
            run.started = time.time()
            deadline = time.perf_counter() + seconds
            await _drive(target, channel, requests, concurrency, deadline, run, answers, True)
            run.finished = time.time()
            run.cpu_seconds = time.process_time() - cpu
            return answers

    answers = asyncio.run(main())
    for request, answer in answers:  # checked after the window, never inside it
        try:
            _check_answer(target, party, request, answer)
            run.completed += 1
        except Exception as exc:
            run.errors += 1
            if len(run.error_samples) < 3:
                run.error_samples.append(str(exc))
    results.put(run)


@dataclass(frozen=True)
class LoadFigures:
    p50_ms: float
    p99_ms: float
    throughput_qps: float
    concurrency: int
    client_processes: int
    sequential_queries: int
    concurrent_queries: int
    errors: int
    client_cores: float
    window_s: float
    loaded_p50_ms: float
    loaded_p99_ms: float
    error_samples: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "throughput_qps": self.throughput_qps,
            "concurrency": self.concurrency,
            "client_processes": self.client_processes,
            "sequential_queries": self.sequential_queries,
            "concurrent_queries": self.concurrent_queries,
            "errors": self.errors,
            "client_cores": self.client_cores,
            "window_s": self.window_s,
            "loaded_p50_ms": self.loaded_p50_ms,
            "loaded_p99_ms": self.loaded_p99_ms,
        }
        if self.error_samples:
            figures["error_samples"] = list(self.error_samples)
        return figures


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _run_clients(
    target: Target, processes: int, concurrency: int, per_process: int, seconds: float
) -> list[ClientRun]:
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Queue(), context.Event(), context.Queue()
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    workers = [
        context.Process(
            target=_client_main, args=(target, per_process, share, seconds, ready, go, results)
        )
        for share in shares
    ]
    for worker in workers:
        worker.start()

    def collect(source: Any, count: int) -> list[Any]:
        items: list[Any] = []
        while len(items) < count:
            try:
                items.append(source.get(timeout=1.0))
            except queue.Empty:
                failed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if failed:
                    go.set()
                    raise RuntimeError(f"a load client process failed (exit {failed})") from None
        return items

    collect(ready, len(workers))  # every client prepared and warmed up
    go.set()
    window_hook = _WINDOW_HOOK[0]
    if window_hook is not None:
        window_hook("start")
    runs: list[ClientRun] = collect(results, len(workers))
    if window_hook is not None:
        window_hook("end")
    for worker in workers:
        worker.join(timeout=30)
    return runs


# Called with "start"/"end" around the timed throughput window (server CPU sampling).
_WINDOW_HOOK: list[Callable[[str], None] | None] = [None]


def measure(
    target: Target,
    *,
    sequential: int,
    concurrency: int = 32,
    seconds: float = 4.0,
    clients: int = 2,
    max_qps: float = 1500.0,
    on_window: Callable[[str], None] | None = None,
) -> LoadFigures:
    """Sequential p50/p99 over `sequential` queries, then throughput at `concurrency`."""
    return measure_interleaved(
        {"only": target},
        sequential=sequential,
        rounds=1,
        concurrency=concurrency,
        seconds=seconds,
        clients=clients,
        max_qps={"only": max_qps},
        on_window={"only": on_window} if on_window is not None else {},
    )["only"]


def measure_interleaved(
    targets: Mapping[str, Target],
    *,
    sequential: int,
    rounds: int,
    concurrency: int = 32,
    seconds: float = 4.0,
    clients: int = 2,
    max_qps: Mapping[str, float],
    on_window: Mapping[str, Callable[[str], None]] | None = None,
) -> dict[str, LoadFigures]:
    """`measure` for several targets at once, taking turns so they share the machine's state.

    The sequential queries are split into `rounds` turns and the throughput window into
    `rounds` windows of `seconds / rounds`; each turn asks every target in order. On a
    shared machine whose speed drifts over minutes, targets measured in alternation see
    the same drift, so their ratios stay put. `on_window[name]` is called with "start" and
    "end" around each of that target's throughput windows.
    """
    hooks = dict(on_window or {})
    singles: dict[str, list[ClientRun]] = {name: [] for name in targets}
    loads: dict[str, list[list[ClientRun]]] = {name: [] for name in targets}
    per_turn = max(1, sequential // rounds)
    window = seconds / rounds
    for _ in range(rounds):
        for name, target in targets.items():
            singles[name] += _run_clients(target, 1, 1, per_turn, float("inf"))
    for _ in range(rounds):
        for name, target in targets.items():
            per_process = int(max_qps[name] * window / clients) + concurrency
            _WINDOW_HOOK[0] = hooks.get(name)
            try:
                loads[name].append(_run_clients(target, clients, concurrency, per_process, window))
            finally:
                _WINDOW_HOOK[0] = None
    return {name: _figures(singles[name], loads[name], concurrency, clients) for name in targets}


def measure_sequential(targets: Mapping[str, Target], count: int) -> dict[str, dict[str, Any]]:
    """p50/p99 ms and errors of `count` sequential queries per target, one target after
    another."""
    figures: dict[str, dict[str, Any]] = {}
    for name, target in targets.items():
        (run,) = _run_clients(target, 1, 1, count, float("inf"))
        figures[name] = {
            "p50_ms": round(statistics.median(run.latencies_ms), 3) if run.latencies_ms else -1,
            "p99_ms": round(percentile(run.latencies_ms, 0.99), 3),
            "errors": run.errors,
        }
    return figures


def _figures(
    singles: list[ClientRun], windows: list[list[ClientRun]], concurrency: int, clients: int
) -> LoadFigures:
    """One target's figures from its sequential turns and its throughput windows."""
    latencies = [latency for run in singles for latency in run.latencies_ms]
    spans = [
        max(max(r.finished for r in runs) - min(r.started for r in runs), 1e-9) for runs in windows
    ]
    window = sum(spans)
    runs = [run for group in windows for run in group]
    completed = sum(r.completed for r in runs)
    samples = tuple(s for r in (*singles, *runs) for s in r.error_samples)[:3]
    loaded = [latency for r in runs for latency in r.latencies_ms]
    return LoadFigures(
        p50_ms=round(statistics.median(latencies), 3) if latencies else -1,
        p99_ms=round(percentile(latencies, 0.99), 3),
        throughput_qps=round(completed / window, 1),
        concurrency=concurrency,
        client_processes=clients,
        sequential_queries=sum(r.completed for r in singles),
        concurrent_queries=completed,
        errors=sum(r.errors for r in (*singles, *runs)),
        client_cores=round(sum(r.cpu_seconds for r in runs) / window, 2),
        window_s=round(window, 2),
        loaded_p50_ms=round(percentile(loaded, 0.5), 3),
        loaded_p99_ms=round(percentile(loaded, 0.99), 3),
        error_samples=samples,
    )


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_mb(pid: int) -> float:
    """VmRSS of a live process in MB (10^6 bytes), from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) * 1024 / 1e6, 1)
    raise ValueError(f"no VmRSS for process {pid}")


class CpuSampler:
    """Server CPU used during the throughput windows, per party, in ms per completed query.

    Called with "start" and "end" around each window; the windows' CPU adds up.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def __call__(self, moment: str) -> None:
        sample = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        if moment == "start":
            self.start = sample
            return
        for name, seconds in sample.items():
            self.used[name] = self.used.get(name, 0.0) + seconds - self.start[name]

    def ms_per_query(self, completed: int) -> dict[str, float]:
        if not completed or not self.used:
            return {}
        return {name: round(self.used[name] * 1000 / completed, 3) for name in self.pids}
