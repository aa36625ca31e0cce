"""`fedscore demo`: a whole local federation, narrated, ending in one JSON line.

Every party runs as its own process with mutual TLS; the citizen's and the relying
party's steps run through the same CLI a user would type. The last stdout line is a
JSON object that tests and newcomers can check.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from audit.client.demo_summary import audit_summary
from fedscore.apps.client import send_score_query, signed_score_query
from fedscore.apps.demo_data import DEMO_SEED, DemoData, expected_total, generate
from fedscore.apps.federation import init_federation
from fedscore.apps.insider import HostileCoordinator
from fedscore.apps.processes import FederationProcesses
from fedscore.errors import FedscoreError
from fedscore.runtime.party import load_party
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import sign_bytes
from keys.masks import MODULUS
from keys.national_id import with_check_digit
from keys.signing import SigningKey
from policies.defaults import DEMO_RELEASE
from policies.model import Policy

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


def _grant(
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


def _score(
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


def _reason(stderr: str) -> str:
    # "fedscore: error: REASON: message"
    parts = stderr.splitlines()[-1].split(": ") if stderr else []
    return parts[2] if len(parts) > 2 else stderr


async def _adversary(workdir: Path, self_view_token: Path) -> tuple[str, str]:
    """A forged and a replayed request, sent straight to the coordinator."""
    portal = load_party(workdir, "citizen-portal")
    token = Envelope.FromString(self_view_token.read_bytes())
    genuine = signed_score_query(portal, token, "self-view")
    forger = SigningKey.generate()
    forged = sign_bytes(genuine.payload_type, genuine.payload, forger)
    forged.key_id = genuine.key_id  # claims to be the citizen portal
    try:
        await send_score_query(portal, forged)
        forged_reason = "ACCEPTED"
    except FedscoreError as error:
        forged_reason = error.reason
    narrate(
        f"  forged request (signed by an outsider's key, claiming the portal's): {forged_reason}"
    )
    await send_score_query(portal, genuine)
    try:
        await send_score_query(portal, genuine)
        replay_reason = "ACCEPTED"
    except FedscoreError as error:
        replay_reason = error.reason
    narrate(f"  the same signed request sent a second time: {replay_reason}")
    return forged_reason, replay_reason


def _nobody(citizens: list[str]) -> str:
    """A valid national ID that holds no record at any agency of the demo."""
    held = set(citizens)
    for serial in range(1, 10_000):
        candidate = with_check_digit(f"3999900{serial:05d}")
        if candidate not in held:
            return candidate
    raise FedscoreError("no record-less national ID left for the demo", "DEMO_FAILED")


async def _hostile_coordinator(
    workdir: Path, data: DemoData, policy: Policy, citizen_token: Path, nobody_token: Path
) -> dict[str, Any]:
    """The coordinator's operator asks each agency a different question under one query id.

    It holds the coordinator's real key, database and log. PTT's requests about the demo
    citizen and about a person with no records reach it; instead of serving them it logs two
    "matching" entries under one query id and asks the first agency about the citizen and
    the others about the record-less person. With masks over the query id alone, the sum
    would have been the first agency's exact part of the citizen's score.
    """
    ptt = load_party(workdir, "ptt")
    citizen = signed_score_query(ptt, Envelope.FromString(citizen_token.read_bytes()), PTT)
    nobody = signed_score_query(ptt, Envelope.FromString(nobody_token.read_bytes()), PTT)
    insider = HostileCoordinator.open(workdir)
    try:
        query_id = "hostile-" + str(time.time_ns())
        to_citizen = insider.log_score(insider.score_spec(citizen, query_id))
        to_nobody = insider.log_score(insider.score_spec(nobody, query_id))
        target, *others = list(policy.purposes[PTT].participants)
        asked = {target: to_citizen} | dict.fromkeys(others, to_nobody)
        answers = await asyncio.gather(
            *(insider.ask_in_batch(agency, [asked[agency]]) for agency in asked)
        )
    finally:
        insider.close()
    outcomes = [per_node[0] for per_node in answers]
    refused = [answer for answer in outcomes if isinstance(answer, FedscoreError)]
    truth = {
        agency: expected_total({agency: path}, policy, data.demo_citizen, data.year)
        for agency, path in data.files.items()
    }
    narrate(f"  {target} asked about the citizen, {', '.join(others)} about a record-less person")
    if refused:
        narrate(f"  the nodes refused: {', '.join(sorted({r.reason for r in refused}))}")
        total = None
    else:
        total = sum(answer for answer in outcomes if isinstance(answer, int)) % MODULUS
        narrate(f"  every node answered; the masked answers add up to {total}")
    values = list(truth.values())
    partial_sums = {
        sum(chosen)
        for size in range(1, len(values) + 1)
        for chosen in itertools.combinations(values, size)
    }
    learned = total is not None and total in partial_sums
    narrate(
        f"  {target}'s true part of the citizen's score (from its export file): "
        f"{truth[target]}; every agency's: {truth}"
    )
    narrate(
        "  the sum is none of them, nor any partial sum: the masks were bound to the question "
        "each node was asked, so different questions leave noise"
        if not learned
        else "  THE SUM REVEALED A CONTRIBUTION"
    )
    return {"tried": "different spec per node", "learned_a_contribution": learned}


def run_demo(workdir: Path | None, citizens: int = 1200, seed: int = DEMO_SEED) -> dict[str, Any]:
    """Run the demo; `seed` (default DEMO_SEED) fixes the synthetic records, and so the totals."""
    started = time.monotonic()
    if workdir is None:
        workdir = Path.cwd() / time.strftime("fedscore-demo-%Y%m%d-%H%M%S")
    workdir = workdir.resolve()
    narrate("fedscore demo: a federated score for positive behaviour, with no central database.")

    step("1. The federation authority creates a local federation of 3 agencies")
    layout = init_federation(workdir, 3)
    narrate(f"  folder: {workdir}")
    for party_id, role in layout.roles.items():
        narrate(f"  {party_id:18} {role:24} {layout.endpoints.get(party_id) or '(client only)'}")
    policy = load_party(workdir, "regulator").policy
    narrate(
        f"  signed policy {policy.content_hash[:23]}... with {len(policy.indicators)} indicators"
    )

    step(f"2. Each agency exports its own records ({citizens} synthetic citizens)")
    data = generate(workdir / "data", policy, layout.agencies, citizens, seed=seed)
    narrate(
        f"  {data.records} records (seed {seed}) across {len(data.files)} export files "
        f"in {workdir / 'data'}"
    )
    for agency, path in data.files.items():
        _, report, _ = cli(
            workdir,
            "node",
            "ingest",
            "--workdir",
            str(workdir),
            "--agency",
            agency,
            str(path),
            "--json",
        )
        narrate(f"    {agency}: {report['new_records']} records stored under agency pseudonyms")
    _, again, _ = cli(
        workdir,
        "node",
        "ingest",
        "--workdir",
        str(workdir),
        "--agency",
        layout.agencies[0],
        str(data.files[layout.agencies[0]]),
        "--json",
    )
    unchanged = again["already_imported"]
    narrate(f"    re-importing the same file changes nothing: already_imported={unchanged}")

    processes = FederationProcesses(workdir)
    citizen = data.demo_citizen
    try:
        step("3. Every party starts as its own process (mutual TLS on loopback)")
        prober = load_party(workdir, "regulator")
        asyncio.run(processes.start_all(prober))
        for party_id, process in processes.processes.items():
            narrate(f"  {party_id:18} pid {process.pid}  serving on {layout.endpoints[party_id]}")

        step(f"4. Citizen ...{citizen[-4:]} consents: PTT may ask for the fuel-discount band")
        ptt_grant = _grant(workdir, citizen, PTT, "ptt", days=30)
        narrate(f"  token {ptt_grant['token_id']} sealed for {', '.join(ptt_grant['agencies'])}")
        self_grant = _grant(workdir, citizen, "self-view", "citizen-portal", days=1)

        step("5. PTT asks; the coordinator sums masked answers it cannot read one by one")
        _, band, _ = _score(workdir, "ptt", ptt_grant["token_file"])
        narrate(f"  PTT learns only the band: {band['value']!r}")
        _, own, _ = _score(workdir, "citizen-portal", self_grant["token_file"])
        federated = int(own["value"])
        expected = expected_total(data.files, policy, citizen, data.year)
        narrate(
            f"  the citizen sees the full {data.year} score: {federated} "
            f"(computed from the export files independently: {expected})"
        )

        step("6. The citizen revokes PTT's consent; PTT asks again")
        cli(
            workdir,
            "consent",
            "revoke",
            "--workdir",
            str(workdir),
            "--citizen",
            citizen,
            "--token-id",
            ptt_grant["token_id"],
            "--json",
        )
        code, _, stderr = _score(workdir, "ptt", ptt_grant["token_file"], expect_ok=False)
        after = _reason(stderr) if code != 0 else "ACCEPTED"
        narrate(f"  refused: {after}")

        step("7. An attacker forges a request, then replays a genuine one")
        forged, replayed = asyncio.run(_adversary(workdir, Path(self_grant["token_file"])))

        step("8. The coordinator publishes overview statistics with differential privacy")
        _, release, _ = cli(
            workdir,
            "stats",
            "publish",
            "--workdir",
            str(workdir),
            "--release",
            DEMO_RELEASE,
            "--json",
        )
        narrate(
            f"  epsilon spent {release['epsilon_spent']:g}; noisy counts only, in "
            f"{Path(release['release']).parent}"
        )
        cli(workdir, "stats", "verify", str(Path(release["release"]).parent), show_output=True)
        cli(workdir, "stats", "budget", "--workdir", str(workdir), show_output=True)

        step("9. The regulator verifies every party's log; the citizen reads their history")
        receipts = [str(ptt_grant["receipt_file"]), str(self_grant["receipt_file"])]
        _, _, _ = cli(workdir, "audit", "verify", "--workdir", str(workdir), show_output=True)
        history_args = [arg for receipt in receipts for arg in ("--receipt", receipt)]
        cli(workdir, "audit", "history", "--workdir", str(workdir), *history_args, show_output=True)
        accountability = audit_summary(workdir, [Path(receipt) for receipt in receipts])

        step("10. The coordinator's operator turns hostile: a different question per agency")
        narrate("  the citizen consents to PTT again, and so does a person with no records:")
        again = _grant(workdir, citizen, PTT, "ptt", days=30)
        nobody_grant = _grant(workdir, _nobody(data.citizens), PTT, "ptt", days=1)
        hostile = asyncio.run(
            _hostile_coordinator(
                workdir,
                data,
                policy,
                Path(again["token_file"]),
                Path(nobody_grant["token_file"]),
            )
        )
        narrate("  the regulator audits again:")
        _, afterwards, _ = cli(
            workdir,
            "audit",
            "verify",
            "--workdir",
            str(workdir),
            "--json",
            expect_ok=False,
        )
        named = sorted({anomaly["reason"] for anomaly in afterwards.get("anomalies", [])})
        hostile["regulator_named"] = named
        narrate(f"  and names what was tried: {', '.join(named) or 'nothing'}")

        step("11. Consents as the citizen sees them")
        _, listing, _ = cli(
            workdir, "consent", "list", "--workdir", str(workdir), "--citizen", citizen, "--json"
        )
        for grant in listing["grants"]:
            narrate(f"  {grant['purpose']:20} {grant['relying_party']:16} {grant['status']}")
    finally:
        step("12. Stopping every process the demo started")
        processes.stop_all()
    narrate(f"  everything the federation wrote is in {workdir}")
    narrate(f"  demo took {time.monotonic() - started:.1f} s")
    summary: dict[str, Any] = {
        "demo": "ok"
        if federated == expected
        and after == "CONSENT_REVOKED"
        and accountability["audit"]["consistent"]
        and accountability["audit"]["anomalies"] == 0
        and hostile["learned_a_contribution"] is False
        and "SPEC_MISMATCH" in hostile["regulator_named"]
        else "failed",
        "agencies": len(layout.agencies),
        "citizens": len(data.citizens),
        "records": data.records,
        "expected_total": expected,
        "federated_total": federated,
        "band": band["value"],
        "after_revocation": after,
        "forged_request": forged,
        "replayed_request": replayed,
        "audit": {
            "consistent": accountability["audit"]["consistent"],
            "entries": accountability["audit"]["entries"],
        },
        "history_entries": accountability["history_entries"],
        "release": release["release"],
        "budget_remaining": release["budget_remaining"],
        "hostile_coordinator": hostile,
        "workdir": str(workdir),
    }
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    if summary["demo"] != "ok":
        raise FedscoreError("the demo's federated total or revocation check failed", "DEMO_FAILED")
    return summary
