"""A party restored to an older state against one that rewrote its history, as the
verifier judges them from what they served (pure: no server). The same cases on live
servers, through backups and `fedscore db restore`, are in tests/test_backup_restore.py."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from harness.audit import audit_verify, fedscore_cli, live_federation

from audit.client.regulator_state import RegulatorState
from audit.client.restored import LOG_BEHIND
from audit.client.verifier import FetchedLog, check_log
from audit.core import merkle
from audit.core.checkpoint import Checkpoint
from audit.core.entries import LogEntry, canonical_json, leaf_data
from fedscore.runtime.db import open_engine
from fedscore.runtime.party import load_party
from node import server as node_server

PARTY = "trc"
VERIFIED_AT = 2000  # the time of the checkpoint the regulator verified


def _entry(index: int, at: int, note: str = "") -> LogEntry:
    body = canonical_json({"query_id": f"q{index}{note}"})
    leaf = merkle.leaf_hash(leaf_data(PARTY, index, "query_answered", body, at))
    return LogEntry(index, "query_answered", body, leaf, at)


# What the regulator verified: six entries, the last logged at the checkpoint's time.
SEEN = [_entry(i, 1000 + 200 * i) for i in range(6)]
STORED = Checkpoint(PARTY, 6, merkle.root([e.leaf_hash for e in SEEN]), VERIFIED_AT)
STORED_LEAVES = [e.leaf_hash for e in SEEN]


def _served(entries: list[LogEntry], checkpoint: bool = True) -> FetchedLog:
    leaves = [e.leaf_hash for e in entries]
    at = max([VERIFIED_AT, *(e.logged_at for e in entries)])
    signed = Checkpoint(PARTY, len(entries), merkle.root(leaves), at)
    proof = merkle.consistency_proof(leaves, STORED.size) if len(leaves) >= STORED.size else None
    return FetchedLog(
        PARTY,
        checkpoint=signed if checkpoint else None,
        entries={e.index: e for e in entries},
        log_size=len(entries),
        consistency_proof=proof,
    )


def _reasons(fetched: FetchedLog) -> set[tuple[int | None, str]]:
    verdict = check_log(fetched, "agency", STORED, STORED_LEAVES)
    assert not verdict.consistent
    return {(a.index, a.reason) for a in verdict.anomalies}


def test_a_log_that_only_grew_is_not_behind() -> None:
    grown = _served([*SEEN, _entry(6, 3000)])
    assert check_log(grown, "agency", STORED, STORED_LEAVES).consistent


def test_a_prefix_of_what_was_verified_is_behind_not_rewritten() -> None:
    assert _reasons(_served(SEEN[:4])) == {(4, LOG_BEHIND)}


def test_a_prefix_then_entries_written_since_is_behind_not_rewritten() -> None:
    restored = [*SEEN[:4], _entry(4, 5000, "new"), _entry(5, 5001, "new"), _entry(6, 5002, "n")]
    found = _reasons(_served(restored))
    assert found == {(4, LOG_BEHIND)}
    # Empty too: a backup taken before the first entry.
    assert _reasons(_served([_entry(0, 5000, "new")])) == {(0, LOG_BEHIND)}


def test_a_changed_entry_with_later_verified_ones_kept_is_a_rewrite() -> None:
    changed = [*SEEN[:2], _entry(2, SEEN[2].logged_at, "x"), *SEEN[3:]]
    found = _reasons(_served(changed))
    assert (2, "ENTRY_REWRITTEN") in found
    assert LOG_BEHIND not in {reason for _, reason in found}


def test_new_entries_claiming_the_verified_history_s_time_are_a_rewrite() -> None:
    # The tail replaced by entries dated inside the verified history: a different history.
    forged = [*SEEN[:4], _entry(4, 1900, "x"), _entry(5, 5000, "x")]
    found = _reasons(_served(forged))
    assert (4, "ENTRY_REWRITTEN") in found
    assert LOG_BEHIND not in {reason for _, reason in found}


def test_a_truncation_the_party_will_not_sign_stays_log_truncated() -> None:
    found = _reasons(_served(SEEN[:3], checkpoint=False))
    assert (3, "LOG_TRUNCATED") in found
    assert LOG_BEHIND not in {reason for _, reason in found}


def test_a_restored_log_is_still_checked_on_its_own() -> None:
    """Behind, and a new entry does not hash to the leaf stored with it: both named."""
    bad = _entry(5, 5001, "new")
    bad = LogEntry(bad.index, bad.kind, bad.body, b"\x00" * 32, bad.logged_at)
    found = _reasons(_served([*SEEN[:4], _entry(4, 5000, "new"), bad]))
    assert (4, LOG_BEHIND) in found
    assert (5, "ENTRY_ALTERED") in found


# --- on live servers, through `fedscore db backup|restore` ---------------------------------


def _found(report: dict[str, Any], party: str) -> set[tuple[int | None, str]]:
    return {(a["index"], a["reason"]) for a in report["anomalies"] if a["party"] == party}


def _verified_time(root: Path, party: str) -> int:
    """The time of the checkpoint of `party` the regulator verified last."""
    engine = open_engine(f"sqlite:///{root / 'orgs' / 'regulator' / 'state.db'}")
    try:
        checkpoint = RegulatorState(engine).checkpoint(party)
    finally:
        engine.dispose()
    assert checkpoint is not None
    return checkpoint.timestamp


@pytest.mark.integration
def test_a_party_restored_to_an_older_state_is_reported_as_behind(audit_federation: Path) -> None:
    root = audit_federation
    trc = ("--workdir", str(root), "--party", "trc")

    async def clean() -> dict[str, Any]:
        code, report, stderr = await audit_verify(root)
        assert code == 0 and report["anomalies"] == [], (stderr, report["anomalies"])
        return report

    async def restore(backup: Path) -> dict[str, Any]:
        code, done, stderr = await asyncio.to_thread(
            fedscore_cli, "db", "restore", *trc, "--from", str(backup), "--json"
        )
        assert code == 0, stderr
        return done

    async def scenario() -> None:
        async with live_federation(root) as live:
            grant = await live.grant()
            for _ in range(3):
                await live.score(grant)
            # Backups are taken while the party serves.
            older = root / "trc-older.backup"
            code, taken, stderr = await asyncio.to_thread(
                fedscore_cli, "db", "backup", *trc, "--out", str(older), "--json"
            )
            assert code == 0, stderr
            assert taken["log"]["size"] == 3
            await clean()  # the regulator sees trc's 3 entries
            await live.score(grant)
            newer = root / "trc-newer.backup"
            assert (await asyncio.to_thread(
                fedscore_cli, "db", "backup", *trc, "--out", str(newer)
            ))[0] == 0  # fmt: skip

            # Not into a running party.
            code, _, stderr = await asyncio.to_thread(
                fedscore_cli, "db", "restore", *trc, "--from", str(newer)
            )
            assert code == 2 and stderr.startswith("fedscore: error: PARTY_RUNNING: ")

            # A backup at least as new as what the regulator saw: its log still verifies.
            await live.nodes["trc"].stop()
            assert (await restore(newer))["behind"] is False
            live.nodes["trc"] = await node_server.start(load_party(root, "trc"))
            assert (await clean())["logs"]["trc"]["size"] == 4
            await live.score(grant)
            await clean()  # the regulator now remembers 5 entries of trc

            # An older one: behind what the regulator verified, and named so.
            await live.nodes["trc"].stop()
            done = await restore(older)
            assert (done["behind"], done["log_before"], done["log"]["size"]) == (True, 5, 3)
            live.nodes["trc"] = await node_server.start(load_party(root, "trc"))
            for written_since in (0, 1):
                code, report, _ = await audit_verify(root)
                assert code == 2
                assert _found(report, "trc") == {(3, LOG_BEHIND)}, report["anomalies"]
                [behind] = [a for a in report["anomalies"] if a["party"] == "trc"]
                assert f"then {written_since} written since" in behind["detail"]
                assert report["logs"]["trc"]["consistent"] is False
                assert all(log["consistent"] for p, log in report["logs"].items() if p != "trc")
                # The restored party serves on; what it writes now comes after the time of
                # what the regulator verified (a restore takes longer than a second).
                while int(time.time()) <= _verified_time(root, "trc"):
                    await asyncio.sleep(0.05)
                await live.score(grant)

            # Told of the restore, the regulator forgets what it verified of trc
            # (docs/operations.md, 4.5): the next run verifies trc's log from the start.
            with sqlite3.connect(root / "orgs" / "regulator" / "state.db") as state:
                state.execute("DELETE FROM regulator_leaf WHERE party = 'trc'")
                state.execute("DELETE FROM regulator_checkpoint WHERE party = 'trc'")
            assert (await clean())["logs"]["trc"]["size"] == 5

    asyncio.run(scenario())
