"""`fedscore demo`: a whole local federation, narrated, ending in one JSON line.

Every party runs as its own process with mutual TLS; the citizen's and the relying
party's steps run through the same CLI a user would type. The last stdout line is a
JSON object that tests and newcomers can check.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from audit.client.demo_summary import audit_summary
from fedscore.apps import demo_live
from fedscore.apps.demo_attacks import adversary, hostile_coordinator, nobody
from fedscore.apps.demo_data import DEMO_SEED, expected_total, generate
from fedscore.apps.demo_steps import PTT, cli, grant, narrate, reason, score, step
from fedscore.apps.federation import HELPER_ID, ROOT_THRESHOLD, init_federation
from fedscore.apps.processes import FederationProcesses
from fedscore.errors import FedscoreError
from fedscore.runtime.party import load_party
from policies.defaults import DEMO_RELEASE


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
        ptt_grant = grant(workdir, citizen, PTT, "ptt", days=30)
        narrate(f"  token {ptt_grant['token_id']} sealed for {', '.join(ptt_grant['agencies'])}")
        self_grant = grant(workdir, citizen, "self-view", "citizen-portal", days=1)

        step("5. PTT asks; the coordinator sums masked answers it cannot read one by one")
        _, band, _ = score(workdir, "ptt", ptt_grant["token_file"])
        narrate(f"  PTT learns only the band: {band['value']!r}")
        _, own, _ = score(workdir, "citizen-portal", self_grant["token_file"])
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
        code, _, stderr = score(workdir, "ptt", ptt_grant["token_file"], expect_ok=False)
        after = reason(stderr) if code != 0 else "ACCEPTED"
        narrate(f"  refused: {after}")

        step("7. An attacker forges a request, then replays a genuine one")
        forged, replayed = asyncio.run(adversary(workdir, Path(self_grant["token_file"])))

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
            f"  each agency split its histogram into two shares: one for the coordinator, one "
            f"sealed to {release['noised_by']}, which added the noise to the sum of its shares"
        )
        narrate(
            f"  epsilon spent {release['epsilon_spent']:g} (charged by both aggregators); noisy "
            f"counts only, and no process ever held an exact one, in "
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
        again = grant(workdir, citizen, PTT, "ptt", days=30)
        nobody_grant = grant(workdir, nobody(data.citizens), PTT, "ptt", days=1)
        hostile = asyncio.run(
            hostile_coordinator(
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
        for listed in listing["grants"]:
            narrate(f"  {listed['purpose']:20} {listed['relying_party']:16} {listed['status']}")

        step("12. The federation changes while it serves: admission, key rotation, removal")
        admitted = demo_live.admit_agency(
            workdir,
            processes,
            data,
            citizens,
            seed,
        )
        narrate("  trc rotates its signing key; the old one verifies only inside its overlap:")
        rotation = demo_live.rotate_key(
            workdir,
            layout.agencies[0],
            lambda: score(workdir, "citizen-portal", admitted["token_file"])[0] == 0,
        )
        narrate("  the authority removes PTT; PTT keeps asking:")
        removal_token = grant(workdir, citizen, PTT, "ptt", days=1)
        removed_reason, removal_ms = demo_live.remove_relying_party(
            workdir, Path(removal_token["token_file"]), admitted["policy_document"]
        )
    finally:
        step("13. Stopping every process the demo started")
        processes.stop_all()
    organisations = len(list((workdir / "orgs").iterdir()))
    registry_version = len(list((workdir / "authority" / "registry").glob("v*.signed")))
    layout_custodians = list((workdir / "custodians").iterdir())
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
        and admitted["four_agency_total"] == admitted["four_agency_expected"]
        and rotation == "ok"
        and removed_reason != "ACCEPTED"
        and release["noised_by"] == HELPER_ID
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
        "release_noised_by": release["noised_by"],
        "budget_remaining": release["budget_remaining"],
        "hostile_coordinator": hostile,
        "organisations": organisations,
        "registry_version": registry_version,
        "root_threshold": f"{ROOT_THRESHOLD}/{len(layout_custodians)}",
        "admitted_agency": admitted["admitted"],
        "key_rotation": rotation,
        "removed_party": removed_reason,
        "removal_effective_ms": removal_ms,
        "workdir": str(workdir),
    }
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    if summary["demo"] != "ok":
        raise FedscoreError("the demo's federated total or revocation check failed", "DEMO_FAILED")
    return summary
