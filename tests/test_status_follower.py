"""A party following the registry's status list says once that it lost it, and once that
it has it back, however many retries lie between (issue 17: the log repeated "refresh
failed" every second and never said it recovered)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from fedscore.protocol.status_list import RevocationState, build_status_list
from fedscore.runtime.status_follower import StatusListFollower
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import sign_message
from keys.keyring import RegistryKeys
from keys.signing import SigningKey

REGISTRY = SigningKey.generate()


def test_an_outage_is_logged_when_it_starts_and_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = RevocationState(RegistryKeys.of({"consent-registry": REGISTRY.verify_key}))
    calls = 0

    async def fetch() -> Envelope:
        nonlocal calls
        calls += 1
        if 2 <= calls <= 6:  # the registry is down for five pulls
            raise ConnectionError("registry unreachable")
        status = build_status_list("consent-registry", calls, [], 64, 60, int(time.time()))
        return sign_message(status, REGISTRY)

    async def follow() -> StatusListFollower:
        follower = StatusListFollower(state, fetch, interval=0.01)
        follower.start()
        while calls < 8:
            await asyncio.sleep(0.01)
        await follower.stop()
        return follower

    with caplog.at_level(logging.WARNING, logger="fedscore.runtime.status_follower"):
        follower = asyncio.run(follow())
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("status list refresh failed: registry unreachable")
    assert messages[1].startswith("status list refresh recovered after ")
    assert messages[1].endswith(" and 5 failed attempts")
    assert follower.failing_since is None and follower.failures == 0
    assert state.sequence >= 7
