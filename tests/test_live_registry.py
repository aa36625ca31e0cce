"""The registry and the policy applied live, with real servers over mutual TLS.

A local federation (`init_federation`: three root custodians, 2 of them sign; the
federation authority; every organisation in its own folder on its own loopback address)
runs in-process: the consent registry, three agency nodes and the coordinator, each
following the registry chain from its peers every `REFRESH` seconds. The federation
authority drafts a new version (remove, rotate, admit, move), two custodians sign it,
and it is offered to one server over `TrustService.OfferTrust`; the others learn it only
by polling each other.

Pinned: a removed relying party is refused at the coordinator and at every node without a
restart (and how long that took at a server that only polls is printed); a rotated
agency key verifies at once and its old key only inside its overlap; a new agency becomes
a coordinator channel; a moved endpoint is followed; a rollback or a version below the
threshold is refused with its reason and changes nothing stored; a removed party refuses
to act but keeps serving the chain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from consent import server as consent_server
from coordinator import server as coordinator_server
from fedscore.apps import client
from fedscore.apps.authority import Authority
from fedscore.apps.custodian import sign_draft
from fedscore.apps.federation import CUSTODIANS, free_port, init_federation
from fedscore.apps.insider import HostileCoordinator
from fedscore.apps.org import init_org, install_bundle, rotate_key
from fedscore.errors import FedscoreError
from fedscore.protocol.questions import SignedContributionAnswerBatch
from fedscore.runtime.org_paths import FederationPaths, OrgPaths
from fedscore.runtime.party import Party, load_party
from fedscore.runtime.party_config import load_config
from fedscore.runtime.rpc import call_unary, secure_channel
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.query_pb2 import ContributionAnswerBatch
from fedscore.v1.trust_pb2 import (
    GetTrustRequest,
    GetTrustResponse,
    OfferTrustRequest,
    OfferTrustResponse,
    SignedRegistry,
    TrustRegistry,
    TrustUpdate,
)
from keys.envelope import sign_message
from keys.keyfile import load_secrets
from keys.national_id import with_check_digit
from keys.registry_chain import draft, registry_digest
from keys.signing import SigningKey
from node import server as node_server

pytestmark = pytest.mark.integration

AGENCIES = ("trc", "dsd", "chuangpao")
PURPOSE = "ptt-fuel-discount"
CITIZEN = with_check_digit("110170012345")
REFRESH = 0.5  # every server's trust_refresh_seconds here
OFFER = "/fedscore.v1.TrustService/OfferTrust"
GET = "/fedscore.v1.TrustService/GetTrust"
TIMEOUT = 10.0


@dataclass
class Live:
    """A running local federation and its authority."""

    root: Path
    consent: consent_server.Running
    nodes: dict[str, node_server.Running]
    coordinator: coordinator_server.Running
    ptt: Party
    portal: Party
    endpoints: dict[str, str]

    @property
    def paths(self) -> FederationPaths:
        return FederationPaths(self.root)

    def authority(self) -> Authority:
        return Authority(self.paths.authority)

    def publish(self, change: Callable[[Authority], object]) -> TrustUpdate:
        """A new version: the authority drafts `change`, two custodians sign, it publishes."""
        authority = self.authority()
        change(authority)
        for name in CUSTODIANS[:2]:
            sign_draft(self.paths.custodian(name), authority.paths.draft)
        authority.publish()
        return TrustUpdate(registries=authority.published())

    async def offer(self, endpoint: str, server: str, update: TrustUpdate) -> OfferTrustResponse:
        """Offer `update` to one server, as the federation authority's client."""
        tls = self.authority().client_tls()
        async with secure_channel(endpoint, tls, server_name=server) as channel:
            return await call_unary(
                channel, OFFER, OfferTrustRequest(update=update), OfferTrustResponse, TIMEOUT
            )

    async def offer_to_registry(self, update: TrustUpdate) -> OfferTrustResponse:
        return await self.offer(self.endpoints["consent-registry"], "consent-registry", update)

    def versions(self) -> dict[str, int]:
        servers = {"consent-registry": self.consent.live, "coordinator": self.coordinator.live}
        servers.update({a: n.live for a, n in self.nodes.items()})
        return {pid: live.version for pid, live in servers.items()}


async def _until(condition: Callable[[], bool], limit: float = 10.0) -> float:
    """Seconds until `condition` holds (checked every 5 ms); fails after `limit`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > limit:
            raise AssertionError(f"not within {limit} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def _make(root: Path) -> dict[str, str]:
    layout = init_federation(root, agency_count=len(AGENCIES), fast_kdf=True)
    for org in FederationPaths(root).orgs.iterdir():
        config = load_config(OrgPaths(org).config)
        changed = replace(config, trust_refresh_seconds=REFRESH)
        config.path.write_text(changed.to_toml(), "utf-8")
    return dict(layout.endpoints)


@asynccontextmanager
async def running(root: Path) -> AsyncIterator[Live]:
    endpoints = _make(root)
    consent = await consent_server.start(load_party(root, "consent-registry"))
    nodes: dict[str, node_server.Running] = {}
    coordinator: coordinator_server.Running | None = None
    try:
        for agency in AGENCIES:
            nodes[agency] = await node_server.start(load_party(root, agency))
        coordinator = await coordinator_server.start(load_party(root, "coordinator"))
        yield Live(
            root=root,
            consent=consent,
            nodes=nodes,
            coordinator=coordinator,
            ptt=load_party(root, "ptt"),
            portal=load_party(root, "citizen-portal"),
            endpoints=endpoints,
        )
    finally:
        if coordinator is not None:
            await coordinator.stop()
        for node in nodes.values():
            await node.stop()
        await consent.stop()


def _stored(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


async def _lags(
    since: float, conditions: dict[str, Callable[[], bool]], limit: float = 10.0
) -> dict[str, float]:
    """For each name, seconds from `since` (monotonic) until its condition first held."""
    found: dict[str, float] = {}
    while len(found) < len(conditions):
        for name, condition in conditions.items():
            if name not in found and condition():
                found[name] = time.monotonic() - since
        if time.monotonic() - since > limit:
            raise AssertionError(f"only {sorted(found)} within {limit} s")
        await asyncio.sleep(0.002)
    return found


async def _ask_nodes(insider: HostileCoordinator, fed: Live, token: Envelope) -> dict[str, object]:
    """Every node's answer to ptt's own request, asked with the coordinator's real key."""
    answers: dict[str, object] = {}
    for agency in AGENCIES:
        request = client.signed_score_query(fed.ptt, token, PURPOSE)
        asked = insider.log_score(insider.score_spec(request))
        answers[agency] = await insider.ask_one(agency, asked)
    return answers


def _lacks_ptt(node: node_server.Running) -> Callable[[], bool]:
    return lambda: "ptt" not in node.node.trust.request_keyring.participants()


def _reason(outcome: object) -> str:
    assert isinstance(outcome, FedscoreError), outcome
    return outcome.reason


def test_a_removed_relying_party_is_refused_everywhere_without_a_restart(tmp_path: Path) -> None:
    async def scenario() -> dict[str, float]:
        async with running(tmp_path / "federation") as fed:
            insider = HostileCoordinator.open(fed.root)
            try:
                grant = await client.grant(fed.portal, CITIZEN, PURPOSE, "ptt", 30)
                outcome = await client.score(fed.ptt, grant.token, PURPOSE)
                assert outcome.release_kind == "band"
                before = await _ask_nodes(insider, fed, grant.token)
                assert all(isinstance(answer, int) for answer in before.values()), before

                update = fed.publish(lambda authority: authority.remove("ptt"))
                sent = time.monotonic()
                answer = await fed.offer_to_registry(update)
                assert answer.registry_version == 2
                conditions: dict[str, Callable[[], bool]] = {
                    "coordinator": lambda: (
                        "ptt" not in fed.coordinator.coordinator.query_keyring.participants()
                    ),
                }
                for agency, node in fed.nodes.items():
                    conditions[agency] = _lacks_ptt(node)
                lags = await _lags(sent, conditions)

                with pytest.raises(FedscoreError) as refused:
                    await client.score(fed.ptt, grant.token, PURPOSE)
                assert refused.value.reason == "UNKNOWN_SIGNER"
                after = await _ask_nodes(insider, fed, grant.token)
                # A node names the request that does not verify (its key is unknown now).
                assert {agency: _reason(a) for agency, a in after.items()} == {
                    agency: "BAD_REQUEST_SIGNATURE" for agency in AGENCIES
                }
                assert all("UNKNOWN_SIGNER" in str(a) for a in after.values())
                with pytest.raises(FedscoreError) as no_grant:
                    await client.grant(fed.portal, CITIZEN, PURPOSE, "ptt", 30)
                assert no_grant.value.reason == "RELYING_PARTY_NOT_REGISTERED"
                # Every server stored the version it applied; none was restarted.
                assert fed.versions() == {pid: 2 for pid in fed.versions()}
                return lags
            finally:
                insider.close()

    lags = asyncio.run(scenario())
    print(
        "removal offered to the consent registry took effect at servers that only poll "
        f"(trust_refresh_seconds={REFRESH}): "
        + ", ".join(f"{pid} {lag * 1000:.0f} ms" for pid, lag in sorted(lags.items()))
    )
    # One refresh interval, plus a round trip and a scheduling step.
    assert max(lags.values()) <= REFRESH + 0.5, lags


def _answer_batch(key: SigningKey) -> Envelope:
    """An answer batch trc signs with `key` (what the coordinator opens under AgencyKeys)."""
    batch = ContributionAnswerBatch(agency_id="trc", batch_id="b1", batch_hash=b"\x01" * 32)
    return sign_message(batch, key)


OVERLAP = 3


def test_a_rotated_agency_key_verifies_at_once_and_the_old_one_only_in_its_overlap(
    tmp_path: Path,
) -> None:
    async def scenario() -> float:
        async with running(tmp_path / "federation") as fed:
            trc = fed.paths.org("trc")
            old = fed.nodes["trc"].node.signing_key
            grant = await client.grant(fed.portal, CITIZEN, PURPOSE, "ptt", 30)

            rotate_key(trc.root, fast_kdf=True)
            new = load_secrets(trc.next_key, trc.passphrase.read_text().strip()).signing_key
            update = fed.publish(
                lambda authority: authority.rotate(trc.rotation_request, overlap_seconds=OVERLAP)
            )
            registry = TrustRegistry.FromString(update.registries[-1].registry)
            [old_entry] = [
                p
                for p in registry.participants
                if p.id == "trc" and p.signing_public_key == old.verify_key.encode()
            ]
            await fed.offer_to_registry(update)
            await _until(lambda: set(fed.versions().values()) == {2})

            # trc keeps signing with its old key until every peer polling at its interval
            # has the version too (two refresh intervals), then switches and moves its files.
            seen = time.monotonic()
            assert fed.nodes["trc"].node.signing_key.key_id == old.key_id
            await _until(lambda: fed.nodes["trc"].node.signing_key.key_id == new.key_id, 10)
            assert time.monotonic() - seen >= 2 * REFRESH - 0.6
            assert not trc.next_key.exists() and len(list(trc.retired.iterdir())) == 1
            keys = fed.coordinator.coordinator.agency_keyring
            SignedContributionAnswerBatch.verify(_answer_batch(new), keys)
            SignedContributionAnswerBatch.verify(_answer_batch(old), keys)
            # A whole score: the coordinator verifies trc's answers signed with the new key.
            assert (await client.score(fed.ptt, grant.token, PURPOSE)).release_kind == "band"

            # The overlap ends on time, without a new version.
            end = int(old_entry.not_after) + 1
            await _until(lambda: old.key_id not in fed.coordinator.coordinator.agency_keyring, 10)
            lag = time.time() - end
            keys = fed.coordinator.coordinator.agency_keyring
            with pytest.raises(FedscoreError) as refused:
                SignedContributionAnswerBatch.verify(_answer_batch(old), keys)
            assert refused.value.reason == "UNKNOWN_SIGNER"
            SignedContributionAnswerBatch.verify(_answer_batch(new), keys)
            assert (await client.score(fed.ptt, grant.token, PURPOSE)).release_kind == "band"
            assert fed.versions() == {pid: 2 for pid in fed.versions()}
            return lag

    lag = asyncio.run(scenario())
    print(f"the old key left the coordinator's keyring {lag * 1000:.0f} ms after its overlap ended")
    assert -0.05 <= lag <= 1.0


def test_a_new_agency_admitted_live_becomes_a_coordinator_channel(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path / "federation") as fed:
            endpoint = f"127.0.0.1:{free_port('127.0.0.1')}"
            folder = fed.paths.org("moph").root
            org = init_org(
                folder,
                "moph",
                "agency",
                endpoint=endpoint,
                fetch_registry_from=(fed.endpoints["consent-registry"],),
                fast_kdf=True,
            )
            update = fed.publish(lambda authority: authority.admit(org.request))
            install_bundle(folder, fed.authority().bundle("moph"))
            assert fed.coordinator.coordinator.channels.get("moph") is None

            await fed.offer_to_registry(update)
            await _until(lambda: set(fed.versions().values()) == {2})
            channels = fed.coordinator.coordinator.channels
            assert channels.endpoints["moph"] == endpoint
            # Every node now holds a pairwise seed with it; the registry pushes to it.
            assert all("moph" in node.node.mask_seeds for node in fed.nodes.values())
            assert "moph" in {t.party_id for t in fed.consent.pusher.targets}

            moph = await node_server.start(load_party(fed.root, "moph"))
            try:
                channel = channels.get("moph")
                assert channel is not None
                # The coordinator's own channel reaches moph, under moph's certificate.
                got = await call_unary(
                    channel, GET, GetTrustRequest(since_version=1), GetTrustResponse, TIMEOUT
                )
                assert [
                    TrustRegistry.FromString(s.registry).version for s in got.update.registries
                ] == [2]
            finally:
                await moph.stop()

    asyncio.run(scenario())


def test_an_endpoint_change_is_followed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path / "federation") as fed:
            grant = await client.grant(fed.portal, CITIZEN, PURPOSE, "ptt", 30)
            host = fed.endpoints["dsd"].rsplit(":", 1)[0]
            moved = f"{host}:{free_port(host)}"
            update = fed.publish(lambda authority: authority.set_endpoint("dsd", moved))
            await fed.offer_to_registry(update)
            await _until(lambda: set(fed.versions().values()) == {2})
            assert fed.coordinator.coordinator.channels.endpoints["dsd"] == moved
            assert {t.party_id: t.endpoint for t in fed.consent.pusher.targets}["dsd"] == moved

            # dsd's operator restarts it where the registry now lists it, from its own folder.
            await fed.nodes["dsd"].stop()
            fed.nodes["dsd"] = await node_server.start(load_party(fed.root, "dsd"))
            assert fed.nodes["dsd"].node.trust.trust.participant("dsd").endpoint == moved
            outcome = await client.score(fed.ptt, grant.token, PURPOSE)
            assert outcome.release_kind == "band"

    asyncio.run(scenario())


def _signed_by(custodians: int, registry: TrustRegistry, fed: Live) -> SignedRegistry:
    """`registry` signed by the first `custodians` custodians, as they sign a draft."""
    path = fed.root / "hand-made.draft"
    path.write_bytes(draft(registry).SerializeToString())
    for name in CUSTODIANS[:custodians]:
        sign_draft(fed.paths.custodian(name), path)
    signed = SignedRegistry()
    signed.ParseFromString(path.read_bytes())
    return signed


@pytest.mark.parametrize("offered", ["below threshold", "rollback"])
def test_a_refused_offer_says_why_and_changes_nothing_stored(tmp_path: Path, offered: str) -> None:
    async def scenario() -> None:
        async with running(tmp_path / "federation") as fed:
            fed.publish(lambda authority: authority.remove("regulator"))
            update = fed.publish(lambda authority: authority.remove("ptt"))
            await fed.offer_to_registry(update)
            await _until(lambda: set(fed.versions().values()) == {3})
            [v1, v2, v3] = update.registries
            if offered == "below threshold":
                successor = TrustRegistry.FromString(v3.registry)
                successor.version, successor.previous_digest = 4, registry_digest(v3.registry)
                bad = _signed_by(1, successor, fed)
                reason = "BELOW_THRESHOLD"
            else:
                fork = TrustRegistry.FromString(v2.registry)
                fork.issued_at += 1  # another version 2, signed by two custodians too
                bad = _signed_by(2, fork, fed)
                reason = "ROLLBACK"
            folder = fed.paths.org("coordinator").root
            before = _stored(folder / "trust")
            with pytest.raises(FedscoreError) as refused:
                await fed.offer(
                    fed.endpoints["coordinator"],
                    "coordinator",
                    TrustUpdate(registries=[v1, v2, v3, bad]),
                )
            assert refused.value.reason == reason
            assert refused.value.code.name == "UNAUTHENTICATED"
            assert _stored(folder / "trust") == before
            assert fed.coordinator.live.version == 3

    asyncio.run(scenario())


def test_a_removed_party_refuses_to_act_and_keeps_following(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(tmp_path / "federation") as fed:
            insider = HostileCoordinator.open(fed.root)
            try:
                grant = await client.grant(fed.portal, CITIZEN, PURPOSE, "ptt", 30)
                update = fed.publish(lambda authority: authority.remove("chuangpao"))
                await fed.offer(fed.endpoints["coordinator"], "coordinator", update)
                chuangpao = fed.nodes["chuangpao"]
                await _until(lambda: chuangpao.live.removed)
                request = client.signed_score_query(fed.ptt, grant.token, PURPOSE)
                refusal = await insider.ask_one(
                    "chuangpao", insider.log_score(insider.score_spec(request))
                )
                assert _reason(refusal) == "PARTY_REMOVED"
                # The coordinator no longer dials it; it still serves the chain and follows it.
                await _until(lambda: fed.coordinator.coordinator.channels.get("chuangpao") is None)
                update = fed.publish(lambda authority: authority.remove("regulator"))
                await fed.offer_to_registry(update)
                await _until(lambda: chuangpao.live.version == 3)
                async with secure_channel(
                    fed.endpoints["chuangpao"], fed.ptt.tls, server_name="chuangpao"
                ) as channel:
                    got = await call_unary(
                        channel, GET, GetTrustRequest(since_version=2), GetTrustResponse, TIMEOUT
                    )
                assert len(got.update.registries) == 1
                assert not chuangpao.trust_follower._task.done()  # type: ignore[union-attr]
            finally:
                insider.close()

    asyncio.run(scenario())
