"""The batched ceiling and the floor (bench.batched_ceiling), started beside the product.

Each runs in a federation folder of its own (`init_federation`, real keys and
certificates, the same topology), its coordinator and nodes each a process of their
own. The floor's folder also runs the product's consent registry, which grants the
floor's tokens: the floor verifies them under that registry's key and opens the sealed
subjects sealed to its own nodes, so they must be that folder's. The batched ceiling
checks no token: it is asked with the product's token bytes, as the per-query ceiling is.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import batched_ceiling
from bench.loadgen import Target
from coordinator.release import release_for
from fedscore.apps.client import COORDINATOR_ID, REGISTRY_ID
from fedscore.apps.federation import init_federation
from fedscore.apps.processes import FederationProcesses, wait_serving
from fedscore.errors import Unavailable
from fedscore.runtime.party import Party, load_party
from fedscore.v1.envelope_pb2 import Envelope

PORTAL = "citizen-portal"
PURPOSE = "self-view"
# Ten nodes, a registry and a product federation beside them start slowly on two cores.
START_TIMEOUT = 120.0


@dataclass
class Baseline:
    """A running baseline: its folder, its load target and its server processes' pids."""

    workdir: Path
    agencies: list[str]
    portal: Party
    target: Target
    pids: dict[str, int]
    floor: bool

    async def grant(self, citizens: list[str], purpose: str, relying_party: str) -> list[bytes]:
        """Tokens for `citizens`: the floor's from its own registry, else none needed."""
        from bench.scenarios import grant_many

        return await grant_many(self.workdir, citizens, purpose, relying_party)

    def fresh(self, citizen: str, count: int) -> Target:
        """The target with `count` tokens no party has seen (the floor's own; the batched
        ceiling checks none, so it keeps the product's one token)."""
        if not self.floor:
            return self.target
        tokens = asyncio.run(self.grant([citizen] * count, PURPOSE, PORTAL))
        return dataclasses.replace(self.target, tokens=tuple(tokens))


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running(
    root: Path, agencies: int, token: Envelope | None, citizen: str, *, floor: bool
) -> Iterator[Baseline]:
    """The batched ceiling (or, `floor`, the floor) with `agencies` nodes, while it runs;
    its target asks about `citizen` with `token` (the product's; the floor's target with a
    token its own registry granted them instead)."""
    workdir = root / f"{'floor' if floor else 'batched-ceiling'}-{agencies}"
    layout = init_federation(workdir, agencies, fast_kdf=True)
    portal = load_party(workdir, PORTAL)
    registry = FederationProcesses(workdir)
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        if floor:
            registry.start_party(REGISTRY_ID)
        nodes += [batched_ceiling.start_process(workdir, a, floor) for a in layout.agencies]
        asyncio.run(_wait_all(portal, [*layout.agencies, *registry.processes]))
        nodes.append(batched_ceiling.start_process(workdir, COORDINATOR_ID, floor))
        asyncio.run(_wait_all(portal, [COORDINATOR_ID]))
        pids = {"coordinator": nodes[-1].pid}
        pids.update({a: p.pid for a, p in zip(layout.agencies, nodes, strict=False)})
        policy = portal.policy
        released = release_for(policy, policy.purpose(PURPOSE), 0).value
        target = Target(
            kind="score",
            workdir=str(workdir),
            client_party=PORTAL,
            endpoint=portal.trust.participant(COORDINATOR_ID).endpoint,
            server_name=COORDINATOR_ID,
            token=token.SerializeToString() if token is not None else b"",
            purpose=PURPOSE,
            expected=int(released),
        )
        baseline = Baseline(workdir, layout.agencies, portal, target, pids, floor)
        if floor:
            (own,) = asyncio.run(baseline.grant([citizen], PURPOSE, PORTAL))
            baseline.target = dataclasses.replace(target, token=own)
        yield baseline
    finally:
        _stop(nodes)
        registry.stop_all()


async def _wait_all(prober: Party, party_ids: list[str]) -> None:
    """Every party serving within START_TIMEOUT; else the error names what the logs say."""
    try:
        await asyncio.gather(*(wait_serving(prober, p, START_TIMEOUT) for p in party_ids))
    except Unavailable as error:
        folder = prober.paths.root.parent.parent
        logs = sorted(folder.glob("baseline-*.log")) + sorted(folder.glob("orgs/*/serve.log"))
        told = [line for log in logs for line in log.read_text().splitlines()[-2:]]
        raise Unavailable(f"{error.message}; logs end: {' | '.join(told)}", error.reason) from error
