"""A party's trust while it serves (fedscore/runtime/live_trust.py, trust_follower.py,
trust_service.py), with real registry chains signed by a 2-of-3 root, a real signed
policy and real files in one organisation's folder; no server is started.

What is pinned: a new version or policy is verified, written to disk and only then
applied, and listeners are told; a refused offer (rollback, below threshold, gap, a
policy that does not verify or gates a public service) raises its reason and changes
nothing stored; a window boundary rebuilds the view on time; a removed party refuses to
act; a rotated key is switched to; a frozen registry refuses; the follower logs an
outage once at each end; the service maps refusals and limits rates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from coordinator.fanout import NodeChannels
from fedscore.errors import (
    FailedPrecondition,
    FedscoreError,
    PolicyError,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from fedscore.runtime.live_trust import LiveTrust, next_boundary
from fedscore.runtime.org_paths import OrgPaths
from fedscore.runtime.party import Party, load_chain, load_party_config
from fedscore.runtime.party_config import PartyConfig
from fedscore.runtime.ratelimit import RateLimits
from fedscore.runtime.trust_follower import PeerChannel, TrustFollower
from fedscore.runtime.trust_service import SERVICE_NAME, acting_only, trust_handlers
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import (
    GetTrustRequest,
    GetTrustResponse,
    OfferTrustRequest,
    OfferTrustResponse,
    Participant,
    Role,
    RootKey,
    RootPolicy,
    Sector,
    SignedRegistry,
    TrustRegistry,
    TrustUpdate,
)
from keys.keyfile import PartySecrets, save_secrets
from keys.registry import TrustView
from keys.registry_chain import add_signature, draft, registry_digest
from keys.signing import SigningKey
from keys.tls import create_ca, issue_certificate
from policies.defaults import default_policy_document
from policies.loader import parse_policy
from policies.model import Policy
from policies.signing import sign_policy

NOW = 1_800_000_000
DAY = 86_400
PASSPHRASE = "correct horse battery staple"
ROOTS = [SigningKey.from_seed(bytes([40 + i]) * 32) for i in range(3)]
POLICY_KEY = SigningKey.from_seed(b"\x50" * 32)
ME = "trc"


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _entry(pid: str, role: Role, key: SigningKey, **fields: Any) -> Participant:
    values: dict[str, Any] = {
        "id": pid,
        "role": role,
        "display_name": pid,
        "signing_public_key": key.verify_key.encode(),
        "box_public_key": b"\x09" * 32,
        "not_before": NOW - DAY,
        "not_after": NOW + 300 * DAY,
        **fields,
    }
    return Participant(**values)


def _sign(registry: TrustRegistry, *roots: SigningKey) -> SignedRegistry:
    signed = draft(registry)
    for root in roots or ROOTS[:2]:
        signed = add_signature(signed, root)
    return signed


@dataclass
class World:
    """One agency's folder (trc), and the federation's keys to make new versions with."""

    paths: OrgPaths
    me: PartySecrets
    chain: list[SignedRegistry] = field(default_factory=list)
    clock: Clock = field(default_factory=Clock)

    @property
    def latest(self) -> TrustRegistry:
        registry = TrustRegistry()
        registry.ParseFromString(self.chain[-1].registry)
        return registry

    def next_version(
        self, change: Callable[[TrustRegistry], None], *roots: SigningKey
    ) -> SignedRegistry:
        """The next version after the newest made so far, changed by `change`."""
        registry = TrustRegistry()
        registry.CopyFrom(self.latest)
        registry.version += 1
        registry.previous_digest = registry_digest(self.chain[-1].registry)
        registry.issued_at = int(self.clock.now)
        change(registry)
        signed = _sign(registry, *roots)
        self.chain.append(signed)
        return signed

    def party(self) -> Party:
        return load_party_config(self.paths.config, PASSPHRASE)

    def live(self, **options: Any) -> LiveTrust:
        return LiveTrust(self.party(), passphrase=PASSPHRASE, clock=self.clock, **options)

    def stored(self) -> dict[str, bytes]:
        """Every file of the trust folder, by name: what a refused offer must not change."""
        return {
            str(p.relative_to(self.paths.root)): p.read_bytes()
            for p in sorted(self.paths.root.rglob("*"))
            if p.is_file()
        }


def _policy(title: str = "", relying_parties: tuple[str, ...] = ()) -> Policy:
    document = default_policy_document(3)
    if title:
        document["title"] = title
    if relying_parties:
        known = {party["id"] for party in document["relying_parties"]}
        document["relying_parties"] += [
            {"id": party, "name": party, "name_th": party}
            for party in relying_parties
            if party not in known
        ]
        document["purposes"][0]["relying_parties"] = list(relying_parties)
    return parse_policy(document)


def _without(pid: str) -> Callable[[TrustRegistry], None]:
    def change(registry: TrustRegistry) -> None:
        kept = [p for p in registry.participants if p.id != pid]
        del registry.participants[:]
        registry.participants.extend(kept)

    return change


def _remove_rp(registry: TrustRegistry) -> None:
    _without("ptt")(registry)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """trc's folder at version 1 (a 2-of-3 root), the default policy of three agencies."""
    monkeypatch.setattr("time.time", lambda: float(NOW))
    paths = OrgPaths(tmp_path / "trc")
    ca_key, ca_cert = create_ca("test CA")
    tls_key, cert = issue_certificate(ca_key, ca_cert, ME)
    me = PartySecrets.generate(tls_key)
    save_secrets(paths.key, me, PASSPHRASE, fast_kdf=True)
    paths.ca_cert.parent.mkdir(parents=True, exist_ok=True)
    paths.ca_cert.write_bytes(ca_cert)
    paths.tls_cert.write_bytes(cert)
    config = PartyConfig(
        path=paths.config,
        id=ME,
        role=Role.ROLE_AGENCY,
        endpoint="127.0.0.1:7003",
        key_folder=paths.root,
        fetch_registry_from=("127.0.0.1:7001", "127.0.0.1:7003"),
    )
    paths.config.write_text(config.to_toml(), "utf-8")
    others = {pid: SigningKey.from_seed(bytes([60 + i]) * 32) for i, pid in enumerate("abcde")}
    registry = TrustRegistry(
        federation_id="fed-live",
        version=1,
        issued_at=NOW - DAY,
        not_after=NOW + 90 * DAY,
        root=RootPolicy(
            threshold=2,
            keys=[
                RootKey(custodian=f"custodian-{i}", public_key=k.verify_key.encode())
                for i, k in enumerate(ROOTS)
            ],
        ),
        participants=[
            _entry(
                "consent-registry",
                Role.ROLE_CONSENT_REGISTRY,
                others["a"],
                endpoint="127.0.0.1:7001",
            ),
            _entry("coordinator", Role.ROLE_COORDINATOR, others["b"], endpoint="127.0.0.1:7002"),
            _entry(
                ME,
                Role.ROLE_AGENCY,
                me.signing_key,
                endpoint="127.0.0.1:7003",
                box_public_key=me.box.public_bytes,
            ),
            _entry("dsd", Role.ROLE_AGENCY, others["c"], endpoint="127.0.0.1:7004"),
            _entry("chuangpao", Role.ROLE_AGENCY, others["d"], endpoint="127.0.0.1:7005"),
            _entry("ptt", Role.ROLE_RELYING_PARTY, others["e"], sector=Sector.SECTOR_COMMERCIAL),
            _entry(
                "citizen-portal",
                Role.ROLE_CITIZEN_PORTAL,
                SigningKey.from_seed(b"\x70" * 32),
                sector=Sector.SECTOR_CITIZEN_AGENT,
            ),
            _entry("policy-authority", Role.ROLE_POLICY_AUTHORITY, POLICY_KEY, box_public_key=b""),
        ],
    )
    genesis = _sign(registry)
    paths.registry_dir.mkdir(parents=True)
    paths.registry_version(1).write_bytes(genesis.SerializeToString())
    paths.policy_signed.write_bytes(sign_policy(_policy(), POLICY_KEY).SerializeToString())
    yield World(paths=paths, me=me, chain=[genesis])


class Heard:
    """A listener that remembers what it was told."""

    def __init__(self) -> None:
        self.told: list[tuple[TrustView, Policy]] = []

    def __call__(self, view: TrustView, policy: Policy) -> None:
        self.told.append((view, policy))


# --- offers ---------------------------------------------------------------------------


def test_a_new_version_is_stored_then_applied_and_listeners_are_told(world: World) -> None:
    live = world.live()
    heard = Heard()
    live.listen(heard)
    assert "ptt" in live.view().requester_keys().participants()
    v2 = world.next_version(_remove_rp)

    assert live.offer(TrustUpdate(registries=[v2])) is True

    assert live.version == 2
    assert world.paths.registry_version(2).read_bytes() == v2.SerializeToString()
    [(view, policy)] = heard.told
    assert view.version == 2 and policy is live.policy
    assert "ptt" not in view.requester_keys().participants()
    assert live.view() is view
    # The same version again, or the whole chain from version 1, is nothing new.
    assert live.offer(TrustUpdate(registries=[v2])) is False
    assert live.offer(TrustUpdate(registries=world.chain)) is False
    assert len(heard.told) == 1
    # A restart reads what was stored.
    assert load_chain(world.paths.root).version == 2


def test_the_whole_chain_is_accepted_from_any_trusted_version(world: World) -> None:
    live = world.live()
    world.next_version(_remove_rp)
    assert live.offer(TrustUpdate(registries=world.chain[:2])) is True
    world.next_version(lambda r: None)
    world.next_version(lambda r: None)
    assert live.offer(TrustUpdate(registries=world.chain)) is True
    assert live.version == 4
    assert sorted(p.name for p in world.paths.registry_dir.iterdir()) == [
        f"v{n:06d}.signed" for n in (1, 2, 3, 4)
    ]


@pytest.mark.parametrize(
    ("offer", "reason"),
    [
        ("rollback", "ROLLBACK"),
        ("below threshold", "BELOW_THRESHOLD"),
        ("gap", "CHAIN_GAP"),
        ("other root", "BELOW_THRESHOLD"),
        ("broken", "CHAIN_BROKEN"),
        ("other federation", "WRONG_FEDERATION"),
        ("expired", "REGISTRY_EXPIRED"),
    ],
)
def test_a_refused_offer_raises_its_reason_and_changes_nothing(
    world: World, offer: str, reason: str
) -> None:
    live = world.live()
    live.offer(TrustUpdate(registries=[world.next_version(_remove_rp)]))
    live.offer(TrustUpdate(registries=[world.next_version(lambda r: None)]))
    before = world.stored()
    heard = Heard()
    live.listen(heard)
    base = world.latest

    def successor(change: Callable[[TrustRegistry], None] = lambda r: None) -> TrustRegistry:
        registry = TrustRegistry()
        registry.CopyFrom(base)
        registry.version += 1
        registry.previous_digest = registry_digest(world.chain[-1].registry)
        change(registry)
        return registry

    fork = TrustRegistry.FromString(world.chain[1].registry)
    fork.issued_at += 1  # another version 2, signed by a threshold as well
    offered = {
        "rollback": _sign(fork),
        "below threshold": _sign(successor(), ROOTS[0]),
        "gap": _sign(replace_version(successor(), base.version + 2)),
        "other root": _sign(successor(), SigningKey.generate(), SigningKey.generate()),
        "broken": _sign(successor(lambda r: setattr(r, "previous_digest", b"\x00" * 32))),
        "other federation": _sign(successor(lambda r: setattr(r, "federation_id", "other"))),
        "expired": _sign(successor(lambda r: setattr(r, "not_after", NOW - 1))),
    }[offer]

    with pytest.raises(Unauthenticated) as refused:
        live.offer(TrustUpdate(registries=[offered]))
    assert refused.value.reason == reason
    assert live.version == 3
    assert world.stored() == before
    assert heard.told == []


def replace_version(registry: TrustRegistry, version: int) -> TrustRegistry:
    registry.version = version
    return registry


# --- policies -------------------------------------------------------------------------


def test_a_new_policy_is_stored_applied_and_the_old_one_kept_for_its_tokens(
    world: World,
) -> None:
    live = world.live()
    heard = Heard()
    live.listen(heard)
    old = live.policy
    newer = _policy(title="Score for positive behaviour, 2027 revision")
    envelope = sign_policy(newer, POLICY_KEY)

    assert live.offer(TrustUpdate(policy=envelope)) is True

    assert live.policy.content_hash == newer.content_hash
    assert live.version == 1
    assert set(live.policies) == {old.content_hash, newer.content_hash}
    assert world.paths.policy_signed.read_bytes() == envelope.SerializeToString()
    assert [policy.content_hash for _, policy in heard.told] == [newer.content_hash]
    assert world.party().policy.content_hash == newer.content_hash
    # The policy it replaced is not taken back from a peer that lags behind.
    lagging = TrustUpdate(policy=sign_policy(old, POLICY_KEY))
    assert live.offer(lagging) is False
    assert live.policy.content_hash == newer.content_hash
    # The same one again is nothing new.
    assert live.offer(TrustUpdate(policy=envelope)) is False


def test_a_policy_not_signed_by_the_policy_authority_is_refused(world: World) -> None:
    live = world.live()
    before = world.stored()
    forged = sign_policy(_policy(title="forged"), SigningKey.generate())
    with pytest.raises(Unauthenticated) as refused:
        live.offer(TrustUpdate(policy=forged))
    assert refused.value.reason == "UNKNOWN_SIGNER"
    assert world.stored() == before


def test_a_policy_for_an_unregistered_relying_party_is_refused(world: World) -> None:
    live = world.live()
    before = world.stored()
    policy = _policy(title="x", relying_parties=("ptt", "somebody"))
    with pytest.raises(PolicyError) as refused:
        live.offer(TrustUpdate(policy=sign_policy(policy, POLICY_KEY)))
    assert refused.value.reason == "RELYING_PARTY_NOT_REGISTERED"
    assert world.stored() == before


def test_a_version_making_the_held_policy_gate_a_public_service_is_refused(
    world: World,
) -> None:
    live = world.live()
    before = world.stored()

    def public(registry: TrustRegistry) -> None:
        for participant in registry.participants:
            if participant.id == "ptt":
                participant.sector = Sector.SECTOR_PUBLIC_SERVICE

    with pytest.raises(PolicyError) as refused:
        live.offer(TrustUpdate(registries=[world.next_version(public)]))
    assert refused.value.reason == "PURPOSE_GATES_PUBLIC_SERVICE"
    assert live.version == 1
    assert world.stored() == before


def test_a_removed_relying_party_leaves_the_policy_that_names_it_admissible(
    world: World,
) -> None:
    live = world.live()
    assert live.offer(TrustUpdate(registries=[world.next_version(_remove_rp)])) is True
    # A new policy naming it still is checked with the sector it was last listed with.
    newer = _policy(title="still names ptt")
    assert live.offer(TrustUpdate(policy=sign_policy(newer, POLICY_KEY))) is True


# --- time -----------------------------------------------------------------------------


def test_an_overlap_window_ends_on_time(world: World) -> None:
    old_dsd = SigningKey.from_seed(bytes([62]) * 32)
    new_dsd = SigningKey.generate()

    def rotate(registry: TrustRegistry) -> None:
        for participant in registry.participants:
            if participant.id == "dsd":
                participant.not_after = NOW + 10
        registry.participants.append(_entry("dsd", Role.ROLE_AGENCY, new_dsd, not_before=NOW))

    live = world.live()
    heard = Heard()
    live.listen(heard)
    live.offer(TrustUpdate(registries=[world.next_version(rotate)]))
    keys = live.view().agency_keys()
    assert old_dsd.key_id in keys and new_dsd.key_id in keys
    assert live.next_change() == NOW + 11

    world.clock.now = NOW + 10.9
    assert old_dsd.key_id in live.view().agency_keys()
    world.clock.now = NOW + 11
    keys = live.view().agency_keys()
    assert old_dsd.key_id not in keys and new_dsd.key_id in keys
    assert len(heard.told) == 2
    assert heard.told[-1][0].now == NOW + 11


def test_next_boundary() -> None:
    registry = TrustRegistry(
        not_after=NOW + 100,
        participants=[
            Participant(id="a", not_before=NOW - 5, not_after=NOW + 50),
            Participant(id="b", not_before=NOW + 20, not_after=NOW + 60),
        ],
    )
    assert next_boundary(registry, NOW) == NOW + 20
    assert next_boundary(registry, NOW + 20) == NOW + 51
    assert next_boundary(registry, NOW + 61) == NOW + 101
    assert next_boundary(registry, NOW + 101) is None


def test_a_frozen_registry_refuses_until_a_newer_version_arrives(world: World) -> None:
    live = world.live()
    world.clock.now = NOW + 90 * DAY + 1
    with pytest.raises(Unauthenticated) as frozen:
        live.require_active()
    assert frozen.value.reason == "REGISTRY_EXPIRED"
    with pytest.raises(Unauthenticated):
        live.view()

    def renewed(registry: TrustRegistry) -> None:
        registry.not_after = int(world.clock.now) + 90 * DAY

    assert live.offer(TrustUpdate(registries=[world.next_version(renewed)])) is True
    live.require_active()


# --- the party itself -----------------------------------------------------------------


def test_a_removed_party_refuses_to_act_and_says_so_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    live = world.live()
    live.require_active()
    with caplog.at_level(logging.WARNING, logger="fedscore.runtime.live_trust"):
        assert live.offer(TrustUpdate(registries=[world.next_version(_without(ME))])) is True
        for _ in range(3):
            with pytest.raises(FailedPrecondition) as refused:
                live.require_active()
            assert refused.value.reason == "PARTY_REMOVED"
        live.offer(TrustUpdate(registries=[world.next_version(lambda r: None)]))
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "was removed" in critical[0].getMessage()
    assert live.removed and live.own() is None
    # Readmitted: it acts again.
    me = _entry(
        ME, Role.ROLE_AGENCY, world.me.signing_key, box_public_key=world.me.box.public_bytes
    )
    live.offer(TrustUpdate(registries=[world.next_version(lambda r: r.participants.append(me))]))
    live.require_active()


def test_the_party_switches_to_its_next_key_once_the_registry_lists_it(world: World) -> None:
    live = world.live()
    old = live.signing_key
    nxt = replace(world.me, signing_seed=SigningKey.generate().seed)
    save_secrets(world.paths.next_key, nxt, PASSPHRASE, fast_kdf=True)
    # A version that does not list it yet changes nothing.
    live.offer(TrustUpdate(registries=[world.next_version(lambda r: None)]))
    assert live.signing_key.key_id == old.key_id

    def rotate(registry: TrustRegistry) -> None:
        for participant in registry.participants:
            if participant.id == ME:
                participant.not_after = NOW + 3600
        entry = _entry(
            ME,
            Role.ROLE_AGENCY,
            nxt.signing_key,
            not_before=NOW,
            box_public_key=world.me.box.public_bytes,
        )
        registry.participants.append(entry)

    heard: list[str] = []
    live.listen(lambda view, policy: heard.append(live.signing_key.key_id))
    live.offer(TrustUpdate(registries=[world.next_version(rotate)]))

    assert live.signing_key.key_id == nxt.signing_key.key_id
    assert heard == [nxt.signing_key.key_id]  # switched before listeners are told
    assert not world.paths.next_key.exists()
    assert len(list(world.paths.retired.iterdir())) == 1
    assert world.party().signing_key.key_id == nxt.signing_key.key_id


def test_update_since_serves_the_stored_chain_after_a_version(world: World) -> None:
    live = world.live()
    for _ in range(3):
        live.offer(TrustUpdate(registries=[world.next_version(lambda r: None)]))
    assert [
        TrustRegistry.FromString(s.registry).version for s in live.update_since(2).registries
    ] == [3, 4]
    assert len(live.update_since(0).registries) == 4
    assert list(live.update_since(4).registries) == []
    assert live.update_since(9).policy == live.policy_envelope
    # Restarted, it serves the same from its files.
    assert live.update_since(1) == world.live().update_since(1)


# --- the follower ---------------------------------------------------------------------


def test_the_follower_asks_listed_peers_but_itself_and_logs_an_outage_twice(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    live = world.live()
    asked: list[tuple[str, str, int]] = []
    down = {"on": False}

    async def fetch(endpoint: str, owner: str, since: int) -> TrustUpdate:
        asked.append((endpoint, owner, since))
        if down["on"]:
            raise ConnectionError("peer unreachable")
        return live_peer.update_since(since)

    sources = world.party().config.fetch_registry_from
    live_peer = world.live()  # a peer holding the same folder's chain, one version ahead
    live_peer.offer(TrustUpdate(registries=[world.next_version(_remove_rp)]))
    follower = TrustFollower(live, sources, 5.0, fetch=fetch)
    assert follower.peers() == [("127.0.0.1:7001", "consent-registry")]

    async def rounds() -> None:
        assert await follower.refresh() is True
        down["on"] = True
        for _ in range(3):
            with pytest.raises(Unavailable) as failed:
                await follower.refresh()
            assert failed.value.reason == "TRUST_UNAVAILABLE"
            follower._failed(failed.value)
        down["on"] = False
        assert await follower.refresh() is False
        follower._recovered()

    with caplog.at_level(logging.WARNING, logger="fedscore.runtime.trust_follower"):
        asyncio.run(rounds())
    assert live.version == 2
    assert asked[0] == ("127.0.0.1:7001", "consent-registry", 1)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith(
        "trust refresh failed: TRUST_UNAVAILABLE: consent-registry at 127.0.0.1:7001"
    )
    assert messages[1].endswith("and 3 failed attempts")


def test_a_peer_sending_what_does_not_verify_is_skipped_for_the_next(world: World) -> None:
    live = world.live()
    good = world.next_version(_remove_rp)
    bad = _sign(TrustRegistry.FromString(good.registry), ROOTS[0])

    async def fetch(endpoint: str, owner: str, since: int) -> TrustUpdate:
        return TrustUpdate(registries=[bad if owner == "consent-registry" else good])

    sources = ("127.0.0.1:7001", "127.0.0.1:7002")
    follower = TrustFollower(live, sources, 5.0, fetch=fetch)
    assert asyncio.run(follower.refresh()) is True
    assert live.version == 2


# --- the service ----------------------------------------------------------------------


class Context:
    """What the handlers read of a gRPC call: the caller's certificate name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_common_name": [self.name.encode()]}


def _call(handler: Any, request: Any, caller: str = "federation-authority") -> Any:
    return asyncio.run(handler(request.SerializeToString(), Context(caller)))


def test_the_service_serves_and_accepts_and_refuses_with_reasons(world: World) -> None:
    live = world.live()
    handlers = trust_handlers(live)[SERVICE_NAME]
    v2 = world.next_version(_remove_rp)
    answer = _call(handlers["OfferTrust"], OfferTrustRequest(update=TrustUpdate(registries=[v2])))
    assert isinstance(answer, OfferTrustResponse)
    assert answer.registry_version == 2 and answer.policy_hash == live.policy.content_hash
    got = _call(handlers["GetTrust"], GetTrustRequest(since_version=1), caller="dsd")
    assert isinstance(got, GetTrustResponse) and list(got.update.registries) == [v2]

    fork = TrustRegistry.FromString(v2.registry)
    fork.issued_at += 1
    with pytest.raises(FedscoreError) as refused:
        _call(
            handlers["OfferTrust"], OfferTrustRequest(update=TrustUpdate(registries=[_sign(fork)]))
        )
    assert refused.value.reason == "ROLLBACK"


def test_the_service_limits_each_callers_rate(world: World) -> None:
    counted: list[tuple[str, str]] = []
    handlers = trust_handlers(
        world.live(),
        limits=RateLimits(calls_per_second=0.001, burst=2),
        on_rate_limited=lambda caller, method: counted.append((caller, method)),
    )[SERVICE_NAME]
    for _ in range(2):
        _call(handlers["GetTrust"], GetTrustRequest(), caller="dsd")
    with pytest.raises(RateLimited):
        _call(handlers["GetTrust"], GetTrustRequest(), caller="dsd")
    _call(handlers["GetTrust"], GetTrustRequest(), caller="coordinator")  # its own bucket
    assert counted == [("dsd", "/fedscore.v1.TrustService/GetTrust")]


def test_a_removed_party_refuses_its_own_services_but_serves_the_chain(world: World) -> None:
    live = world.live()

    async def answer(raw: bytes, context: Any) -> Envelope:
        return Envelope(payload=b"done")

    guarded = acting_only(live, {"fedscore.v1.NodeService": {"Anything": answer}})
    method = guarded["fedscore.v1.NodeService"]["Anything"]
    assert _call(method, Envelope()).payload == b"done"
    live.offer(TrustUpdate(registries=[world.next_version(_without(ME))]))
    with pytest.raises(FailedPrecondition) as refused:
        _call(method, Envelope())
    assert refused.value.reason == "PARTY_REMOVED"
    served = _call(trust_handlers(live)[SERVICE_NAME]["GetTrust"], GetTrustRequest())
    assert len(served.update.registries) == 2


# --- channels that follow the registry ------------------------------------------------


class FakeChannel:
    def __init__(self, target: str) -> None:
        self.target = target
        self.closed = False

    async def close(self) -> None:
        self.closed = True


def test_node_channels_open_move_and_close_with_the_registry() -> None:
    opened: list[FakeChannel] = []

    def open_channel(agency: str, endpoint: str) -> Any:
        opened.append(FakeChannel(f"{agency}@{endpoint}"))
        return opened[-1]

    async def scenario() -> None:
        channels = NodeChannels({"trc": "h:1", "dsd": "h:2"}, open_channel, grace=0.01)
        trc, dsd = channels.get("trc"), channels.get("dsd")
        channels.follow({"trc": "h:1", "dsd": "h:9", "moph": "h:3"})
        assert channels.get("trc") is trc  # unchanged: the same channel
        assert channels.get("dsd").target == "dsd@h:9"  # type: ignore[union-attr]
        assert channels.get("moph").target == "moph@h:3"  # type: ignore[union-attr]
        channels.follow({"trc": "h:1", "dsd": "h:9"})
        assert channels.get("moph") is None
        assert channels.endpoints == {"trc": "h:1", "dsd": "h:9"}
        assert not dsd.closed  # type: ignore[union-attr]
        await asyncio.sleep(0.05)  # a call under way on the old channel had its grace
        assert dsd.closed and opened[-1].closed  # type: ignore[union-attr]
        await channels.close()
        assert all(channel.closed for channel in opened)

    asyncio.run(scenario())


def test_the_registry_channel_follows_the_endpoint_the_registry_lists(world: World) -> None:
    live = world.live()
    party = world.party()

    def moved(registry: TrustRegistry) -> None:
        for participant in registry.participants:
            if participant.id == "consent-registry":
                participant.endpoint = "127.0.0.1:7999"

    async def scenario() -> None:
        peer = PeerChannel(live.view(), Role.ROLE_CONSENT_REGISTRY, party.tls, grace=0.01)
        live.listen(lambda view, policy: peer.follow(view))
        first = peer.channel
        live.offer(TrustUpdate(registries=[world.next_version(lambda r: None)]))
        assert peer.channel is first
        live.offer(TrustUpdate(registries=[world.next_version(moved)]))
        assert peer.channel is not first
        await asyncio.sleep(0.05)
        await peer.close()

    asyncio.run(scenario())
