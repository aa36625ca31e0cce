"""Signed checkpoints: the exact body, strict parsing, signatures, and a signer that never
signs two checkpoints inconsistent with each other, on real SQLite files."""

from __future__ import annotations

import base64
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine

from audit.core import merkle
from audit.core.checkpoint import PAYLOAD_TYPE, Checkpoint
from audit.core.entries import leaf_data
from audit.store.checkpoints import CheckpointSigner
from audit.store.log import EventLog
from fedscore.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import sign_bytes
from keys.keyring import Keyring
from keys.signing import SigningKey

TRC_KEY = SigningKey.from_seed(bytes(range(32)))
DSD_KEY = SigningKey.from_seed(bytes(range(1, 33)))
KEYRING = Keyring.of({"trc": TRC_KEY.verify_key, "dsd": DSD_KEY.verify_key})
ROOT = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")


# --- the checkpoint body ----------------------------------------------------------------


def test_body_is_origin_size_base64_root_and_time_one_per_line() -> None:
    checkpoint = Checkpoint("trc", 8, ROOT, 1_700_000_000)
    assert checkpoint.to_bytes() == (
        b"trc\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n1700000000\n"
    )
    assert Checkpoint.from_bytes(checkpoint.to_bytes()) == checkpoint


GOOD_ROOT = base64.b64encode(ROOT).decode()
URLSAFE_ROOT = base64.urlsafe_b64encode((b"\xfb\xff\xbf" * 11)[:32]).decode()  # has - and _


@pytest.mark.parametrize(
    "body",
    [
        f"trc\n8\n{GOOD_ROOT}\n1700000000",  # no final newline
        f"trc\n8\n{GOOD_ROOT}\n1700000000\n\n",  # an extra line
        f"trc\n8\n{GOOD_ROOT}\n",  # no time
        f"trc\n08\n{GOOD_ROOT}\n1700000000\n",  # leading zero
        f"trc\n-8\n{GOOD_ROOT}\n1700000000\n",
        f"trc\n 8\n{GOOD_ROOT}\n1700000000\n",
        f"trc\n8\n{GOOD_ROOT[:-1]}\n1700000000\n",  # not base64
        f"trc\n8\n{base64.b64encode(ROOT[:31]).decode()}\n1700000000\n",  # 31-byte root
        f"trc\n8\n{URLSAFE_ROOT}\n1700000000\n",  # base64url, not standard base64
        f"t rc\n8\n{GOOD_ROOT}\n1700000000\n",
        f"\n8\n{GOOD_ROOT}\n1700000000\n",
        f"trc\r\n8\n{GOOD_ROOT}\n1700000000\n",
    ],
)
def test_malformed_bodies_are_refused(body: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        Checkpoint.from_bytes(body.encode())
    assert err.value.reason == "BAD_CHECKPOINT"


def test_a_body_that_is_not_text_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        Checkpoint.from_bytes(b"trc\n8\n\xff\n1\n")


def test_signed_checkpoints_verify_only_as_their_own_party() -> None:
    checkpoint = Checkpoint("trc", 8, ROOT, 1_700_000_000)
    envelope = checkpoint.sign(TRC_KEY)
    assert envelope.payload_type == PAYLOAD_TYPE
    assert Checkpoint.verify(envelope, KEYRING, "trc") == checkpoint

    with pytest.raises(Unauthenticated) as err:
        Checkpoint.verify(envelope, KEYRING, "dsd")  # trc's checkpoint passed off as dsd's
    assert err.value.reason == "WRONG_SIGNER"
    with pytest.raises(Unauthenticated) as err:  # dsd signing a checkpoint that names trc
        Checkpoint.verify(checkpoint.sign(DSD_KEY), KEYRING, "dsd")
    assert err.value.reason == "WRONG_ORIGIN"
    with pytest.raises(Unauthenticated) as err:
        Checkpoint.verify(checkpoint.sign(SigningKey.generate()), KEYRING, "trc")
    assert err.value.reason == "UNKNOWN_SIGNER"

    changed = Envelope()
    changed.CopyFrom(envelope)
    changed.payload = envelope.payload.replace(b"\n8\n", b"\n9\n")
    with pytest.raises(Unauthenticated) as err:
        Checkpoint.verify(changed, KEYRING, "trc")
    assert err.value.reason == "BAD_SIGNATURE"
    other_type = sign_bytes("fedscore.v1.LogPromise", envelope.payload, TRC_KEY)
    with pytest.raises(Unauthenticated) as err:
        Checkpoint.verify(other_type, KEYRING, "trc")
    assert err.value.reason == "WRONG_PAYLOAD_TYPE"


# --- the signer ---------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_700_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{db_path}")
    yield engine
    engine.dispose()


def _grow(log: EventLog, count: int) -> None:
    start = log.size()
    for i in range(count):
        log.append_now("e", {"i": start + i})


def _verify(envelope: Envelope) -> Checkpoint:
    return Checkpoint.verify(envelope, KEYRING, "trc")


def test_the_signer_signs_the_whole_log_and_reuses_an_unchanged_checkpoint(engine: Engine) -> None:
    log = EventLog(engine, "trc")
    clock = Clock()
    signer = CheckpointSigner(log, TRC_KEY, clock)
    assert signer.last() is None
    empty = _verify(signer.sign())
    assert (empty.size, empty.root, empty.timestamp) == (0, merkle.EMPTY_ROOT, 1_700_000_000)

    _grow(log, 5)
    clock.now += 10
    first = signer.sign()
    checkpoint = _verify(first)
    assert (checkpoint.size, checkpoint.root) == (5, log.root())
    clock.now += 10
    assert signer.sign() == first  # nothing new was logged: the same signed checkpoint
    last = signer.last()
    assert last is not None and last[1] == first


def test_checkpoints_survive_a_restart_and_stay_consistent(db_path: Path) -> None:
    clock = Clock()
    engine = create_engine(f"sqlite:///{db_path}")
    log = EventLog(engine, "trc")
    _grow(log, 7)
    before = _verify(CheckpointSigner(log, TRC_KEY, clock).sign())
    engine.dispose()

    engine = create_engine(f"sqlite:///{db_path}")
    log = EventLog(engine, "trc")
    signer = CheckpointSigner(log, TRC_KEY, clock)
    last = signer.last()
    assert last is not None and last[0] == before
    _grow(log, 300)  # across a cached block boundary
    clock.now -= 3600  # the clock went back; checkpoint time must not
    after = _verify(signer.sign())
    assert after.size == 307 and after.timestamp == before.timestamp
    proof = log.consistency_proof(before.size, after.size)
    merkle.verify_consistency(before.size, after.size, before.root, after.root, proof)
    engine.dispose()


def test_a_truncated_log_is_never_signed(engine: Engine, db_path: Path) -> None:
    log = EventLog(engine, "trc")
    _grow(log, 6)
    signer = CheckpointSigner(log, TRC_KEY)
    signer.sign()
    with sqlite3.connect(db_path) as connection:
        connection.execute('delete from audit_entry where "index" >= 4')
    with pytest.raises(FailedPrecondition) as err:
        signer.sign()
    assert err.value.reason == "LOG_TRUNCATED"
    last = signer.last()
    assert last is not None and last[0].size == 6


@pytest.mark.parametrize("grow_after", [0, 3])
def test_a_rewritten_history_is_never_signed(db_path: Path, grow_after: int) -> None:
    """An attacker rewrites an entry and its leaf hash; the party must refuse to sign."""
    engine = create_engine(f"sqlite:///{db_path}")
    log = EventLog(engine, "trc")
    _grow(log, 6)
    CheckpointSigner(log, TRC_KEY).sign()
    engine.dispose()
    entry_body, logged_at = '{"i":99}', 1_700_000_000
    leaf = merkle.leaf_hash(leaf_data("trc", 2, "e", entry_body, logged_at))
    with sqlite3.connect(db_path) as connection:
        connection.execute(
            'update audit_entry set body = ?, logged_at = ?, leaf_hash = ? where "index" = 2',
            (entry_body, logged_at, leaf.hex()),
        )
    engine = create_engine(f"sqlite:///{db_path}")  # a restart: nothing cached
    log = EventLog(engine, "trc")
    _grow(log, grow_after)
    signer = CheckpointSigner(log, TRC_KEY)
    with pytest.raises(FailedPrecondition) as err:
        signer.sign()
    assert err.value.reason == "LOG_INCONSISTENT"
    last = signer.last()
    assert last is not None and last[0].size == 6
    engine.dispose()


def test_an_altered_new_entry_is_never_signed(engine: Engine, db_path: Path) -> None:
    log = EventLog(engine, "trc")
    _grow(log, 3)
    signer = CheckpointSigner(log, TRC_KEY)
    signer.sign()
    _grow(log, 3)
    with sqlite3.connect(db_path) as connection:
        connection.execute('update audit_entry set body = \'{"i":0}\' where "index" = 4')
    with pytest.raises(FailedPrecondition) as err:
        signer.sign()
    assert err.value.reason == "LOG_CORRUPTED"


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=6))
def test_every_two_signed_checkpoints_are_consistent(growths: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'state.db'}")
        log = EventLog(engine, "trc")
        signer = CheckpointSigner(log, TRC_KEY)
        signed = []
        for growth in growths:
            with engine.connect() as connection:
                log.append_many(connection, [("e", {"n": n}) for n in range(growth)])
                connection.commit()
            signed.append(_verify(signer.sign()))
        for older in signed:
            for newer in signed:
                if older.size <= newer.size:
                    proof = log.consistency_proof(older.size, newer.size)
                    merkle.verify_consistency(older.size, newer.size, older.root, newer.root, proof)
        engine.dispose()
