"""Pushing a revocation to every checking party the moment it happens.

Invariants:
- Notices go to every agency node and every coordinator listed in the trust registry,
  at the endpoint the registry lists, over mutual TLS with the peer's party id as the
  expected certificate name, so a notice reaches only the party it is meant for.
- One channel per party, opened at start and reused for every push; the targets follow
  the trust registry (`RevocationPusher.follow`): a new party gets a channel, a moved one
  a channel to its new endpoint, a removed one none (a channel left behind is closed
  after the push timeout, so a push under way finishes).
- All parties are told concurrently, each call bounded by a short timeout. A party that
  is down or slow never fails the revocation: the outcome records who acknowledged and
  who did not, in the registry's audit log, and the signed status list (with its short
  time-to-live) reaches the rest.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc.aio

from audit.core import kinds
from audit.core.fields import TOKEN_ID
from audit.store.log import EventLog
from fedscore.errors import FedscoreError
from fedscore.runtime.rpc import TlsMaterial, call_unary, endpoint_addresses, secure_channel
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import (
    NotifyRevocationRequest,
    NotifyRevocationResponse,
    PushRevocationRequest,
    PushRevocationResponse,
)
from fedscore.v1.trust_pb2 import Role
from keys.registry import TrustView

_log = logging.getLogger(__name__)

DEFAULT_PUSH_TIMEOUT_SECONDS = 2.0
NODE_METHOD = "/fedscore.v1.NodeService/NotifyRevocation"
COORDINATOR_METHOD = "/fedscore.v1.CoordinatorService/PushRevocation"


@dataclass(frozen=True)
class PushTarget:
    """A party that keeps revocation state, and where to reach it."""

    party_id: str
    endpoint: str  # one address: each replica of a party is told on its own
    role: int  # a fedscore.v1.Role value

    @property
    def key(self) -> str:
        return f"{self.party_id}@{self.endpoint}"


@dataclass(frozen=True)
class PushOutcome:
    token_id: str
    acknowledged: tuple[str, ...]
    not_acknowledged: tuple[str, ...]


def push_targets(trust: TrustView) -> list[PushTarget]:
    """Every agency node and coordinator, each address of each (every replica keeps its
    own revocation state), sorted by role then id."""
    return [
        PushTarget(party_id=p.id, endpoint=address, role=p.role)
        for role in (Role.ROLE_AGENCY, Role.ROLE_COORDINATOR)
        for p in trust.by_role(role)
        for address in endpoint_addresses(p.endpoint)
    ]


class RevocationPusher:
    """Holds one open channel per checking party and tells them all about a revocation."""

    def __init__(
        self,
        targets: list[PushTarget],
        tls: TlsMaterial,
        log: EventLog,
        *,
        timeout: float = DEFAULT_PUSH_TIMEOUT_SECONDS,
    ) -> None:
        self._targets = list(targets)
        self._tls = tls
        self._log = log
        self._timeout = timeout
        # Channels of targets that left or moved, each with the task that will close it.
        self._retiring: dict[asyncio.Task[None], grpc.aio.Channel] = {}
        # grpc connects lazily: a party that is down now is reached once it comes back.
        self._channels: dict[str, grpc.aio.Channel] = {
            t.key: secure_channel(t.endpoint, tls, t.party_id) for t in self._targets
        }

    @property
    def targets(self) -> tuple[PushTarget, ...]:
        return tuple(self._targets)

    def follow(self, targets: list[PushTarget]) -> None:
        """Push to `targets` from now on, keeping the channel of every unchanged target."""
        kept = {t.key: t for t in self._targets}
        channels: dict[str, grpc.aio.Channel] = {}
        for target in targets:
            same = kept.get(target.key) == target
            channel = self._channels.get(target.key) if same else None
            channels[target.key] = channel or secure_channel(
                target.endpoint, self._tls, target.party_id
            )
        left = [c for pid, c in self._channels.items() if channels.get(pid) is not c]
        self._targets, self._channels = list(targets), channels
        for channel in left:
            task = asyncio.get_running_loop().create_task(self._close_later(channel))
            self._retiring[task] = channel
            task.add_done_callback(lambda done: self._retiring.pop(done, None))

    async def _close_later(self, channel: grpc.aio.Channel) -> None:
        await asyncio.sleep(self._timeout)
        await channel.close()

    async def _tell(self, target: PushTarget, notice: Envelope) -> bool:
        channel = self._channels.get(target.key)
        if channel is None:  # it left the registry since the push began
            return False
        try:
            if target.role == Role.ROLE_COORDINATOR:
                await call_unary(
                    channel,
                    COORDINATOR_METHOD,
                    PushRevocationRequest(notice=notice),
                    PushRevocationResponse,
                    self._timeout,
                )
            else:
                await call_unary(
                    channel,
                    NODE_METHOD,
                    NotifyRevocationRequest(notice=notice),
                    NotifyRevocationResponse,
                    self._timeout,
                )
        except FedscoreError as error:
            _log.warning("revocation push to %s failed: %s", target.party_id, error)
            return False
        except Exception:  # never let one party's failure fail the revocation
            _log.exception("revocation push to %s failed unexpectedly", target.party_id)
            return False
        return True

    async def push(self, token_id: str, notice: Envelope) -> PushOutcome:
        """Tell every party at once; log and return who acknowledged. Never raises for a peer."""
        results = await asyncio.gather(*(self._tell(t, notice) for t in self._targets))
        acknowledged = tuple(t.party_id for t, ok in zip(self._targets, results, strict=True) if ok)
        missed = tuple(t.party_id for t, ok in zip(self._targets, results, strict=True) if not ok)
        self._log.append_now(
            kinds.REVOCATION_PUSH,
            {
                TOKEN_ID: token_id,
                "acknowledged": list(acknowledged),
                "not_acknowledged": list(missed),
            },
        )
        return PushOutcome(token_id=token_id, acknowledged=acknowledged, not_acknowledged=missed)

    async def close(self) -> None:
        retiring = list(self._retiring.items())
        self._retiring.clear()
        for task, _ in retiring:
            task.cancel()
        channels = [*self._channels.values(), *(channel for _, channel in retiring)]
        self._channels.clear()
        await asyncio.gather(*(channel.close() for channel in channels))
