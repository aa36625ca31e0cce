"""A party's trust while it serves: the registry chain, the signed policy and its own keys,
changing under it.

`LiveTrust` holds the newest registry version the party trusts (`ChainLink`), the signed
policy it holds, every policy it accepted while running (by content hash, so consent
tokens issued under an older one still verify), the party's own current secrets, and the
`TrustView` valid now. Each server derives its keyrings, mask seeds, channels and push
targets from it and swaps them whole when a listener is told (asyncio makes the swap
atomic: no request sees half of it).

Invariants:
- `view()` is valid now: the view is rebuilt once the clock reaches the next window
  boundary of the current version (a participant's `not_before`, the second after its
  `not_after`), so a key's overlap window ends on time, and listeners are told. The
  second after the version's own `not_after` the registry is frozen (REGISTRY_EXPIRED):
  `view()` and `require_active()` raise it until a newer version arrives.
- `offer(update)` applies a `TrustUpdate` whole or not at all. Versions the party already
  trusts (the same bytes) are skipped; the rest must follow the chain
  (`keys.registry_chain.follow`: ROLLBACK, CHAIN_GAP, BELOW_THRESHOLD, CHAIN_BROKEN,
  WRONG_FEDERATION, REGISTRY_EXPIRED). A policy that is new to this party must verify under
  the new view's policy keys (`policies.signing.verify_policy`). The policy then held must
  pass `policies.sectors.check_sectors` under the new view, where a relying party the
  registry no longer lists keeps the sector it was last listed with: it can sign nothing
  now, so a policy still naming it is harmless, while a party listed as a public-service
  provider refuses the update (a registry version cannot make a held policy inadmissible).
  Any refusal raises (`Unauthenticated`, `PolicyError`) and changes nothing, in memory or
  on disk.
- Nothing changes in memory before it is on disk: each new version is written to
  `paths.registry_version(n)` and a new policy to `paths.policy_signed`, each atomically
  (a temporary file, fsync, then `os.replace`); then the state is swapped and listeners
  are told, synchronously, in the order they subscribed. A listener that fails is logged;
  it cannot undo what the party now trusts.
- Policies carry no version: a different policy that verifies is taken as the newer,
  except one this party already replaced while running (a peer that lags behind cannot
  hand it back). Protection against an older policy this party never held, and keeping
  replaced policies across a restart, are the subject of a later issue (multiple policy
  versions); until then only the stored policy is held after a restart.
- The party's own key follows the registry: when the current version lists a signing key
  for it other than the one it uses, `fedscore.runtime.party.current_secrets` switches to
  `next.key` (with the passphrase kept in memory since start) before listeners are told.
- A party the current version does not list (it was removed) is logged as CRITICAL once,
  keeps following the chain and serving it, and refuses to act: `require_active()` raises
  PARTY_REMOVED until a version lists it again. It never raises out of a listener or the
  follower, so it cannot crash-loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

from fedscore.errors import (
    FailedPrecondition,
    FedscoreError,
    KeyFileError,
    PolicyError,
    Unauthenticated,
)
from fedscore.runtime.files import write_atomically
from fedscore.runtime.org_paths import OrgPaths
from fedscore.runtime.party import Party, current_secrets, read_passphrase, stored_chain
from fedscore.v1.envelope_pb2 import Envelope
from fedscore.v1.trust_pb2 import Participant, SignedRegistry, TrustRegistry, TrustUpdate
from keys.box import BoxKeyPair
from keys.registry import TrustView, listed_sectors
from keys.registry_chain import ChainLink, follow, registry_digest
from keys.signing import SigningKey
from policies.loader import content_hash_of
from policies.model import Policy
from policies.sectors import check_sectors
from policies.signing import verify_policy

_log = logging.getLogger(__name__)

# Told of every new view (a new version, a window boundary) and of every new policy.
Listener = Callable[[TrustView, Policy], None]
Clock = Callable[[], float]


def next_boundary(registry: TrustRegistry, now: int) -> int | None:
    """The first second after `now` at which a participant enters or leaves the view, or
    the version itself expires; None if nothing changes any more."""
    moments = [registry.not_after + 1]
    for participant in registry.participants:
        moments += [participant.not_before, participant.not_after + 1]
    later = [int(moment) for moment in moments if moment > now]
    return min(later, default=None)


class LiveTrust:
    """What one party trusts now, and who must be told when it changes."""

    def __init__(
        self,
        party: Party,
        *,
        passphrase: str | None = None,
        clock: Clock = time.time,
        versions: Iterable[SignedRegistry] | None = None,
        switch_grace: float = 0.0,
    ) -> None:
        self.party_id = party.id
        # A rotated key is used only this long after this party first saw it listed (while
        # its old key is still valid), so peers that have not polled yet still accept it.
        self._switch_grace = switch_grace
        self._new_key_seen_at: float | None = None
        self.paths: OrgPaths = party.paths
        self._clock = clock
        # Kept in memory from start, to open `next.key` when the registry lists it.
        self._passphrase = passphrase
        self._versions = list(versions) if versions is not None else stored_chain(party.paths)
        self._known = {registry_digest(s.registry) for s in self._versions}
        self._former_sectors: dict[str, str] = {}
        for signed in self._versions:
            self._former_sectors.update(listed_sectors(TrustRegistry.FromString(signed.registry)))
        self._chain = party.chain
        self._policy_envelope = party.policy_envelope
        self._policy = party.policy
        self._policies: dict[str, Policy] = {party.policy.content_hash: party.policy}
        self._replaced: set[str] = set()
        self._signing_key = party.signing_key
        self._box = party.box
        self._listeners: list[Listener] = []
        self._removed = False
        self._expired = False
        now = int(clock())
        self._view = party.chain.view(now)
        self._boundary = next_boundary(party.chain.registry, now)
        self._own_entry(self._view)

    # --- what servers read ------------------------------------------------------------

    @property
    def chain(self) -> ChainLink:
        return self._chain

    @property
    def version(self) -> int:
        return self._chain.version

    @property
    def policy(self) -> Policy:
        """The newest policy accepted: what new consents and releases are made under."""
        return self._policy

    @property
    def policy_envelope(self) -> Envelope:
        return self._policy_envelope

    @property
    def policies(self) -> Mapping[str, Policy]:
        """Every policy accepted while running that still passes the sector check, by hash."""
        return dict(self._policies)

    @property
    def signing_key(self) -> SigningKey:
        return self._signing_key

    @property
    def box(self) -> BoxKeyPair:
        return self._box

    @property
    def removed(self) -> bool:
        return self._removed

    def listen(self, listener: Listener) -> None:
        """Tell `listener` of every new view and policy from now on."""
        self._listeners.append(listener)

    def view(self) -> TrustView:
        """The view valid now (rebuilt at window boundaries); REGISTRY_EXPIRED if frozen."""
        self.tick()
        if self._expired:
            raise self._expiry()
        return self._view

    def own(self) -> Participant | None:
        """The party's own entry in the current view; None once it was removed."""
        try:
            return self._view.participant(self.party_id)
        except FedscoreError:
            return None

    def require_active(self) -> None:
        """Raise unless the party may act: listed in a registry version that has not expired."""
        self.tick()
        if self._expired:
            raise self._expiry()
        if self._removed:
            raise FailedPrecondition(
                f"{self.party_id} is not in trust registry version {self.version}: it was "
                "removed from the federation and refuses to act",
                reason="PARTY_REMOVED",
            )

    def next_change(self) -> int | None:
        """When the view changes next without a new version (Unix seconds), if ever."""
        return self._boundary

    def tick(self) -> None:
        """Rebuild the view if the clock passed a window boundary, and tell listeners."""
        now = int(self._clock())
        if self._new_key_seen_at is not None and not self._removed:
            before = self._signing_key
            self._own_entry(self._view)
            if self._signing_key is not before:
                self._notify()
        if self._boundary is None or now < self._boundary:
            return
        self._boundary = next_boundary(self._chain.registry, now)
        try:
            view = self._chain.view(now)
        except Unauthenticated as error:
            if not self._expired:
                _log.critical("%s; this party refuses to act until a newer one arrives", error)
            self._expired = True
            return
        self._install(view)
        self._notify()

    # --- what GetTrust and OfferTrust do ----------------------------------------------

    def update_since(self, version: int) -> TrustUpdate:
        """The stored versions after `version`, oldest first, and the signed policy held."""
        first = self._chain.version - len(self._versions) + 1
        newer = self._versions[max(0, int(version) + 1 - first) :]
        return TrustUpdate(registries=newer, policy=self._policy_envelope)

    def offer(self, update: TrustUpdate) -> bool:
        """Apply what is new in `update`, whole, or raise and change nothing (see module)."""
        now = int(self._clock())
        fresh: list[SignedRegistry] = []
        seen = set(self._known)
        for signed in update.registries:
            digest = registry_digest(signed.registry)
            if digest not in seen:
                seen.add(digest)
                fresh.append(signed)
        chain = follow(self._chain, fresh)
        view = chain.view(now) if fresh else self.view()
        envelope, policy = self._offered_policy(update, view)
        if not fresh and policy is self._policy:
            return False
        sectors = dict(self._former_sectors)
        for signed in fresh:
            sectors.update(listed_sectors(TrustRegistry.FromString(signed.registry)))
        sectors.update(view.relying_party_sectors())
        check_sectors(policy, sectors)

        for number, signed in enumerate(fresh, start=self._chain.version + 1):
            write_atomically(self.paths.registry_version(number), signed.SerializeToString())
        if policy is not self._policy:
            write_atomically(self.paths.policy_signed, envelope.SerializeToString())

        self._keep_policies(policy, sectors)
        for number in range(self._chain.version + 1, chain.version + 1):
            _log.info("trust registry version %d applied (%s)", number, chain.federation_id)
        if policy is not self._policy:
            _log.info(
                "policy %s applied, replacing %s", policy.content_hash, self._policy.content_hash
            )
            self._replaced.add(self._policy.content_hash)
        self._chain, self._policy, self._policy_envelope = chain, policy, envelope
        self._versions += fresh
        self._known.update(registry_digest(s.registry) for s in fresh)
        self._former_sectors = sectors
        self._boundary = next_boundary(chain.registry, now)
        self._expired = False
        self._install(view)
        self._notify()
        return True

    # --- inside -----------------------------------------------------------------------

    def _expiry(self) -> Unauthenticated:
        return Unauthenticated(
            f"trust registry version {self.version} expired at {self._chain.registry.not_after} "
            "(frozen: no newer version has reached this party)",
            reason="REGISTRY_EXPIRED",
        )

    def _offered_policy(self, update: TrustUpdate, view: TrustView) -> tuple[Envelope, Policy]:
        """The policy to hold after `update`: the offered one if it is new here, verified."""
        held = (self._policy_envelope, self._policy)
        if not update.HasField("policy") or not update.policy.payload:
            return held
        claimed = content_hash_of(bytes(update.policy.payload))  # not verified yet
        if claimed == self._policy.content_hash or claimed in self._replaced:
            return held  # nothing new, or one this party already replaced
        return update.policy, verify_policy(update.policy, view.policy_keys())

    def _keep_policies(self, policy: Policy, sectors: Mapping[str, str]) -> None:
        kept: dict[str, Policy] = {}
        for content_hash, older in self._policies.items():
            try:
                check_sectors(older, sectors)
            except PolicyError as error:
                _log.warning("policy %s is no longer held: %s", content_hash, error)
                continue
            kept[content_hash] = older
        kept[policy.content_hash] = policy
        self._policies = kept

    def _install(self, view: TrustView) -> None:
        self._view = view
        self._own_entry(view)

    def _own_entry(self, view: TrustView) -> None:
        """Note whether the party is still listed, and follow its own key if it changed."""
        try:
            own = view.participant(self.party_id)
        except FedscoreError:
            if not self._removed:
                _log.critical(
                    "%s is not listed in trust registry version %d: it was removed from the "
                    "federation. It keeps following the registry and refuses every request "
                    "(PARTY_REMOVED) until a version lists it again",
                    self.party_id,
                    view.version,
                )
            self._removed = True
            return
        if self._removed:
            _log.warning(
                "%s is listed again in version %d; acting again", self.party_id, view.version
            )
        self._removed = False
        if bytes(own.signing_public_key) == self._signing_key.verify_key.encode():
            self._new_key_seen_at = None
            return
        now = self._clock()
        if self._new_key_seen_at is None:
            self._new_key_seen_at = now
        if now - self._new_key_seen_at >= self._switch_grace or not self._own_key_valid(view):
            self._switch_keys(own)
            self._new_key_seen_at = None

    def _own_key_valid(self, view: TrustView) -> bool:
        """Whether the key this party signs with is still listed for it now."""
        mine = self._signing_key.verify_key.encode()
        return any(
            p.id == self.party_id
            and bytes(p.signing_public_key) == mine
            and p.not_before <= view.now <= p.not_after
            for p in view.registry.participants
        )

    def _switch_keys(self, own: Participant) -> None:
        if self._passphrase is None:
            _log.error(
                "the registry lists a new signing key for %s, but no passphrase is "
                "held to open it; still signing with the old key",
                self.party_id,
            )
            return
        try:
            secrets = current_secrets(self.paths, own, self._passphrase)
        except FedscoreError as error:
            _log.error(
                "cannot switch %s to the signing key the registry lists: %s", self.party_id, error
            )
            return
        box = secrets.box
        if own.box_public_key and box.public_bytes != bytes(own.box_public_key):
            _log.error(
                "the new key file of %s holds another box key than the registry "
                "lists; still using the old keys",
                self.party_id,
            )
            return
        self._signing_key, self._box = secrets.signing_key, box
        _log.warning("%s now signs with key %s", self.party_id, self._signing_key.key_id)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener(self._view, self._policy)
            except Exception:
                _log.exception("a trust listener failed; the new trust is applied regardless")


def open_live_trust(
    party: Party, *, passphrase: str | None = None, clock: Clock = time.time
) -> LiveTrust:
    """A server's live trust, keeping the passphrase (given, else the party's own) in memory.

    A rotated key takes over two refresh intervals after the party first sees it listed:
    by then every peer polling at the same interval has the version too.
    """
    try:
        held: str | None = read_passphrase(party.paths.root, passphrase)
    except KeyFileError:
        _log.warning("no passphrase for %s: a key rotation cannot be followed live", party.id)
        held = None
    grace = 2 * party.config.trust_refresh_seconds
    return LiveTrust(party, passphrase=held, clock=clock, switch_grace=grace)
