"""Progress of long commands: drawn on a terminal only, never with --json or into a pipe.

`fedscore node ingest` runs as its own process, once on a pseudo-terminal (stdout and
stderr a terminal, as a person types it) and once with pipes (as a script runs it).
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import os
import pty
import random
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from fedscore.apps.cli.progress import Progress, shown
from fedscore.apps.federation import init_federation
from fedscore.runtime.party import load_party
from keys.national_id import with_check_digit

ROWS = 150_000  # about 1.5 s to import here: well past the bar's half-second delay
BAR = "%|"  # tqdm's bar, between the percentage and the blocks


def test_no_progress_with_json_or_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    for out, err, as_json, expected in [
        (True, True, False, True),
        (True, True, True, False),
        (False, True, False, False),
        (True, False, False, False),
    ]:
        monkeypatch.setattr(sys, "stdout", Terminal(out))
        monkeypatch.setattr(sys, "stderr", Terminal(err))
        assert shown(argparse.Namespace(json=as_json)) is expected
    monkeypatch.undo()
    quiet = Progress(False)
    quiet("checking", 1, 2)  # nothing to draw on, nothing drawn
    assert quiet.bar is None


def _export(workdir: Path, name: str, extra: int) -> Path:
    """A valid trc export of ROWS rows (+ `extra` to make each file's hash its own)."""
    policy = load_party(workdir, "trc").policy
    codes = sorted(c for c, i in policy.indicators.items() if i.agency == "trc")
    rng = random.Random(17)
    people = [with_check_digit(f"1{rng.randrange(10**11):011d}") for _ in range(2000)]
    year = time.localtime().tm_year - 1
    path = workdir.parent / name
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["national_id", "indicator", "occurred_at", "quantity", "certifier"])
        for n in range(ROWS + extra):
            day = f"{year}-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:00"
            writer.writerow([people[n % len(people)], codes[n % len(codes)], day, 1, "unit"])
    return path


def _on_a_terminal(argv: list[str]) -> tuple[int, str]:
    """Run fedscore with stdin, stdout and stderr a pseudo-terminal; all it wrote."""
    main, child = pty.openpty()
    # A terminal of 24 rows of 100 columns, as a person's (a new pty has 0 x 0).
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "fedscore.apps.cli.main", *argv],
        stdin=child, stdout=child, stderr=child, close_fds=True,
    )  # fmt: skip
    os.close(child)
    written = b""
    while True:
        try:
            chunk = os.read(main, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        written += chunk
    code = process.wait(timeout=120)
    os.close(main)
    return code, written.decode("utf-8", "replace")


@pytest.mark.integration  # runs fedscore as a process
def test_a_large_import_shows_progress_on_a_terminal_only(tmp_path: Path) -> None:
    workdir = tmp_path / "federation"
    init_federation(workdir, 3, fast_kdf=True)
    ingest = ["node", "ingest", "--workdir", str(workdir), "--agency", "trc"]

    code, seen = _on_a_terminal([*ingest, str(_export(workdir, "a.csv", 0))])
    assert code == 0, seen
    assert "checking a.csv" in seen and BAR in seen
    assert f"a.csv: {ROWS} rows" in seen  # the report itself, after the bar is gone

    code, seen = _on_a_terminal([*ingest, str(_export(workdir, "b.csv", 1)), "--json"])
    assert code == 0, seen
    assert "checking" not in seen and BAR not in seen and "\r" not in seen.replace("\r\n", "")
    assert json.loads(seen)["rows"] == ROWS + 1  # one JSON object, nothing else

    piped = _export(workdir, "c.csv", 2)
    done = subprocess.run(
        [sys.executable, "-m", "fedscore.apps.cli.main", *ingest, str(piped)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith(f"{tmp_path / 'c.csv'}: {ROWS + 2} rows")


ENTRIES = 60_000  # about 2 s to audit here


def _long_log(workdir: Path) -> None:
    """trc's log holds ENTRIES refusal summaries before it serves (a long-lived node's)."""
    from audit.core import kinds
    from audit.store.log import EventLog
    from fedscore.runtime.db import open_engine

    engine = open_engine(load_party(workdir, "trc").db_url)
    try:
        log = EventLog(engine, "trc")
        fields = {"caller": "ptt", "interval_start": 1, "interval_seconds": 60,
                  "counts": {"BAD_SIGNATURE": 5}}  # fmt: skip
        for _ in range(ENTRIES // 10_000):
            with engine.begin() as connection:
                log.append_many(connection, [(kinds.REFUSALS_SUMMARISED, fields)] * 10_000)
    finally:
        engine.dispose()


@pytest.mark.integration  # runs a federation and fedscore as processes
def test_audit_verify_shows_progress_on_a_terminal_and_names_a_party_down_once(
    tmp_path: Path,
) -> None:
    import asyncio

    from fedscore.apps.processes import FederationProcesses

    workdir = tmp_path / "federation"
    init_federation(workdir, 3, fast_kdf=True)
    _long_log(workdir)
    processes = FederationProcesses(workdir)
    asyncio.run(processes.start_all(load_party(workdir, "regulator")))
    verify = ["audit", "verify", "--workdir", str(workdir)]
    try:
        code, seen = _on_a_terminal(verify)
        assert code == 0, seen
        assert "trc: fetching entries" in seen and BAR in seen
        assert seen.rstrip().splitlines()[-1].endswith("no anomalies")
        code, seen = _on_a_terminal([*verify, "--json"])
        assert code == 0, seen
        assert "fetching" not in seen and BAR not in seen
        assert json.loads(seen)["consistent"] is True
        piped = subprocess.run(
            [sys.executable, "-m", "fedscore.apps.cli.main", *verify],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert piped.returncode == 0 and piped.stderr == "", piped.stderr
        assert str(ENTRIES) in piped.stdout and "fetching" not in piped.stdout
        # A party that is down is named once, with where it was asked, not twice.
        processes.stop_party("dsd")
        down = subprocess.run(
            [sys.executable, "-m", "fedscore.apps.cli.main", *verify],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        processes.stop_all()
    assert down.returncode == 2
    [line] = [line for line in down.stdout.splitlines() if line.startswith("  ! dsd")]
    endpoint = load_party(workdir, "dsd").participant.endpoint
    assert line.startswith(f"  ! dsd: PARTY_UNREACHABLE: at {endpoint}: PEER_UNAVAILABLE: ")
    assert line.count("PEER_UNAVAILABLE") == 1
