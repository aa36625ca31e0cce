"""`fedscore db backup|restore`: round trips on SQLite and on a real PostgreSQL server, a
backup taken while a process keeps writing (a consistent snapshot whose log verifies on its
own), and every refusal, each one line that leaves the database as it was.

The regulator's view of a restored party is tested in tests/test_audit_restored.py."""

from __future__ import annotations

import itertools
import json
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness.backup import PARTY, committed, contents, fill, log_of, start_writer

from audit.store.checkpoints import SIGNED_CHECKPOINT
from fedscore.errors import FedscoreError
from fedscore.runtime import backup_file
from fedscore.runtime.backup import Target, backup, restore
from fedscore.runtime.backup_postgres import BIN_ENV, client_program
from fedscore.runtime.db import open_engine
from fedscore.runtime.schema import head

NewDatabase = Callable[[], str]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> NewDatabase:
    """Makes new, empty databases of one kind: SQLite files, or a real PostgreSQL server's."""
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres")
        return server.fresh_database  # type: ignore[no-any-return]
    numbers = itertools.count()
    return lambda: f"sqlite:///{tmp_path / f'state{next(numbers)}.db'}"


def _reason(call: Callable[[], object]) -> str:
    with pytest.raises(FedscoreError) as refused:
        call()
    assert "\n" not in str(refused.value)  # one line
    return refused.value.reason


def test_a_backup_restores_the_database_as_it_was(
    new_database: NewDatabase, tmp_path: Path
) -> None:
    url = new_database()
    party = Target(PARTY, "agency", url)
    fill(url, 300)
    snapshot = contents(url)
    out = tmp_path / "trc.backup"
    taken = backup(party, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds personal data
    header = backup_file.read_header(out)
    assert (header["party"], header["kind"]) == (PARTY, "agency")
    assert header["schema_revision"] == head("agency")
    log = log_of(url)
    assert header["log"] == taken["log"] == {"size": 300, "root": log.root().hex()}
    log.engine.dispose()
    assert header["checkpoint"]["size"] == 300 and header["rows"]["audit_entry"] == 300

    fill(url, 50, start=300)  # the party goes on after the backup
    assert contents(url) != snapshot
    done = restore(party, out)
    assert contents(url) == snapshot
    assert (done["log_before"], done["log"]["size"], done["behind"]) == (350, 300, True)
    assert done["pending"] is False and done["taken_at"] == header["taken_at"]
    # The same backup again: nothing is behind now.
    assert restore(party, out)["behind"] is False


def test_a_restore_onto_a_new_machine_makes_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    fill(url, 10)
    snapshot = contents(url)
    party = Target(PARTY, "agency", url)
    backup(party, tmp_path / "b")
    (tmp_path / "state.db").unlink()
    assert restore(party, tmp_path / "b")["log_before"] is None
    assert contents(url) == snapshot


@pytest.mark.integration
def test_a_backup_is_a_consistent_snapshot_while_a_process_keeps_writing(
    new_database: NewDatabase, tmp_path: Path
) -> None:
    url = new_database()
    fill(url, 60_000)  # enough that taking the copy takes a while
    writer, stop, progress = start_writer(url, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while committed(progress) < 20:
            assert writer.poll() is None, writer.stderr.read() if writer.stderr else b""
            assert time.monotonic() < deadline
            time.sleep(0.01)
        before = committed(progress)
        header = backup(Target(PARTY, "agency", url), tmp_path / "snapshot")
        after = committed(progress)
        assert after > before  # it kept writing while the backup was taken
    finally:
        stop.touch()
        writer.wait(timeout=60)
    assert writer.returncode == 0
    # Whole transactions only (20 entries each), as many as were committed when it was taken.
    size = header["log"]["size"]
    assert (size - 60_000) % 20 == 0
    assert 60_000 + 20 * before <= size <= 60_000 + 20 * (after + 1)
    # Its log verifies on its own: restored elsewhere, every entry re-hashes, the root is
    # the header's, and the last checkpoint in it is of a prefix of it.
    elsewhere = new_database()
    restore(Target(PARTY, "agency", elsewhere), tmp_path / "snapshot")
    log = log_of(elsewhere)
    try:
        assert log.size() == size
        log.entries(0, size)  # LOG_CORRUPTED on a gap or an entry that does not hash
        assert log.root().hex() == header["log"]["root"]
        with log.engine.connect() as connection:
            last = max(connection.execute(SIGNED_CHECKPOINT.select()), key=lambda r: r.size)
        assert last.size <= size and log.root(last.size).hex() == last.root
        assert header["checkpoint"]["size"] == last.size
    finally:
        log.engine.dispose()


# --- refusals: each changes nothing ---------------------------------------------------------


def _rewritten(source: Path, out: Path, **changes: object) -> Path:
    """`source` with its header changed (its database and that database's SHA-256 kept)."""
    copy = out.parent / "payload"
    header = backup_file.extract(source, copy)
    backup_file.write(out, {**header, **changes}, copy)
    return out


def _damaged(source: Path, out: Path, damage: str) -> Path:
    data = bytearray(source.read_bytes())
    with tarfile.open(source) as archive:
        header, database = archive.getmembers()
    if damage == "flipped byte":
        data[database.offset_data + database.size // 2] ^= 0xFF
    elif damage == "truncated":
        data = data[: database.offset_data + database.size // 2]
    elif damage == "not an archive":
        data = bytearray(b"SQLite format 3\x00" + bytes(4096))
    elif damage == "header garbled":
        data[header.offset_data + 1 : header.offset_data + 9] = b"}" * 8
    out.write_bytes(bytes(data))
    return out


DAMAGE = ("flipped byte", "truncated", "not an archive", "header garbled")


@pytest.fixture
def backed_up(new_database: NewDatabase, tmp_path: Path) -> tuple[Target, Path]:
    url = new_database()
    fill(url, 300)
    party = Target(PARTY, "agency", url)
    backup(party, tmp_path / "good")
    fill(url, 5, start=300)  # so that a restore would change something
    return party, tmp_path / "good"


def test_every_refusal_changes_nothing(backed_up: tuple[Target, Path], tmp_path: Path) -> None:
    party, good = backed_up
    before = contents(party.url)
    other = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    if party.database == "postgresql":
        other = f"sqlite:///{tmp_path / 'other.db'}"
    cases: dict[str, Callable[[], object]] = {
        "WRONG_PARTY": lambda: restore(Target("dsd", "agency", party.url), good),
        "WRONG_DATABASE": lambda: restore(Target(PARTY, "agency", other), good),
        "SCHEMA_TOO_NEW": lambda: restore(
            party, _rewritten(good, tmp_path / "new", schema_revision="agency_9999")
        ),
        "BACKUP_FORMAT_TOO_NEW": lambda: restore(
            party, _rewritten(good, tmp_path / "v", version=2)
        ),
        "BACKUP_NOT_FOUND": lambda: restore(party, tmp_path / "missing"),
        "OUT_EXISTS": lambda: backup(party, good),
    }
    for expected, call in cases.items():
        assert _reason(call) == expected
    for damage in DAMAGE:
        damaged = _damaged(good, tmp_path / damage.replace(" ", "-"), damage)
        with pytest.raises(FedscoreError, match=r"^BACKUP_DAMAGED: [^\n]*$"):
            restore(party, damaged)
    # A kind of party the backup is not of: an agency's backup for a coordinator.
    assert _reason(lambda: restore(Target(PARTY, "coordinator", party.url), good)) == "WRONG_PARTY"
    assert contents(party.url) == before
    assert good.exists() and not (tmp_path / "missing").exists()


def test_a_restore_into_a_running_party_is_refused(backed_up: tuple[Target, Path]) -> None:
    """A serving party holds its database open: a SQLite connection, a PostgreSQL session."""
    party, good = backed_up
    before = contents(party.url)
    engine = open_engine(party.url)
    try:
        with engine.connect() as serving:
            serving.exec_driver_sql("SELECT 1")
            assert _reason(lambda: restore(party, good)) == "PARTY_RUNNING"
    finally:
        engine.dispose()
    assert contents(party.url) == before
    assert restore(party, good)["behind"] is True  # once it has stopped


def test_without_postgresql_client_programs_a_postgresql_backup_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BIN_ENV, str(tmp_path))  # a folder with no pg_dump in it
    assert _reason(lambda: client_program("pg_dump")) == "PG_CLIENT_MISSING"
    party = Target(PARTY, "agency", "postgresql+psycopg://trc@db.invalid/trc")
    assert _reason(lambda: backup(party, tmp_path / "b")) == "PG_CLIENT_MISSING"
    assert list(tmp_path.iterdir()) == []


# --- the commands ------------------------------------------------------------------------------


def _fedscore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedscore.apps.cli.main", *args],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


@pytest.mark.integration
def test_the_commands_say_what_they_did_and_refuse_in_one_line(
    audit_federation: Path, tmp_path: Path
) -> None:
    trc = ("--workdir", str(audit_federation), "--party", "trc")
    config = str(audit_federation / "orgs" / "dsd" / "party.toml")
    assert _fedscore("db", "upgrade", *trc).returncode == 0
    out = tmp_path / "trc.backup"
    made = _fedscore("db", "backup", *trc, "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"trc (agency): sqlite database backed up to {out}")
    restored = _fedscore("db", "restore", *trc, "--from", str(out), "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["schema_revision"] == head("agency")
    for args, reason in (
        (("db", "restore", "--config", config, "--from", str(out)), "WRONG_PARTY"),
        (("db", "restore", *trc, "--from", str(tmp_path / "none")), "BACKUP_NOT_FOUND"),
        (("db", "backup", *trc, "--out", str(out)), "OUT_EXISTS"),
    ):
        refused = _fedscore(*args)
        assert refused.returncode == 2
        assert refused.stderr.startswith(f"fedscore: error: {reason}: ")
        assert refused.stderr.count("\n") == 1 and refused.stdout == ""
