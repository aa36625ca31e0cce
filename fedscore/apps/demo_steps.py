"""The demo's narration and its commands, run as a user would type them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

WIDTH = 78
PTT = "ptt-fuel-discount"


def narrate(text: str) -> None:
    print(text, flush=True)


def step(title: str) -> None:
    narrate("")
    narrate(f"== {title} " + "=" * max(0, WIDTH - len(title) - 4))


def cli(
    workdir: Path, *args: str, expect_ok: bool = True, show_output: bool = False
) -> tuple[int, dict[str, Any], str]:
    """Run one `fedscore` command in its own process, as a user would type it."""
    command = [sys.executable, "-m", "fedscore.apps.cli.main", *args]
    shown = " ".join(["fedscore", *args]).replace(str(workdir), "$W")
    narrate(f"  $ {shown}")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    data: dict[str, Any] = {}
    if "--json" in args and done.stdout.strip():
        # A command that fails may still print its result (audit verify's anomalies).
        data = json.loads(done.stdout.strip().splitlines()[-1])
    if show_output:
        for line in done.stdout.rstrip().splitlines():
            narrate(f"  {line}")
    if expect_ok and done.returncode != 0:
        raise RuntimeError(f"'{shown}' failed: {done.stderr.strip()}")
    return done.returncode, data, done.stderr.strip()


def grant(
    workdir: Path, citizen: str, purpose: str, relying_party: str, *, days: int
) -> dict[str, Any]:
    """`fedscore consent grant`, as the citizen portal would ask for the citizen."""
    _, granted, _ = cli(
        workdir,
        "consent",
        "grant",
        "--workdir",
        str(workdir),
        "--citizen",
        citizen,
        "--purpose",
        purpose,
        "--relying-party",
        relying_party,
        "--days",
        str(days),
        "--json",
    )
    return granted


def score(
    workdir: Path, party: str, token_file: str, *, expect_ok: bool = True
) -> tuple[int, dict[str, Any], str]:
    """`fedscore score` as `party` with the token in `token_file`."""
    return cli(
        workdir,
        "score",
        "--workdir",
        str(workdir),
        "--as",
        party,
        "--token",
        token_file,
        "--json",
        expect_ok=expect_ok,
    )


def reason(stderr: str) -> str:
    # "fedscore: error: REASON: message"
    parts = stderr.splitlines()[-1].split(": ") if stderr else []
    return parts[2] if len(parts) > 2 else stderr
