"""The demo's living federation: while every party serves, the federation authority admits
a new agency, one agency rotates its signing key, and a relying party is removed.

Each change goes the way separate organisations make it: the organisation runs its own
command in its own folder, the authority drafts the next registry version from the
request, two of the three custodians sign it, the policy authority signs the policy that
goes with it, and the authority publishes and offers both to every server. No party is
restarted; they apply the new version live (`fedscore.runtime.live_trust`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedscore.apps.client import channel_to, current_party, send_score_query, signed_score_query
from fedscore.apps.demo_data import DemoData, expected_total, generate
from fedscore.apps.demo_steps import cli, grant, narrate, score
from fedscore.apps.federation import CUSTODIANS, ROOT_THRESHOLD, free_port, loopback_host
from fedscore.apps.processes import FederationProcesses, wait_serving
from fedscore.errors import FedscoreError
from fedscore.runtime.org_paths import FederationPaths
from fedscore.runtime.party import load_party
from fedscore.v1.envelope_pb2 import Envelope
from policies.defaults import default_policy_document
from policies.loader import canonical_json, parse_policy

NEW_PURPOSE = "self-view-four-agencies"
REMOVED = "ptt"
PTT_PURPOSE = "ptt-fuel-discount"


def _prepare(workdir: Path, policy: dict[str, Any] | None = None) -> list[str]:
    """Two custodians sign the draft and the policy authority signs the policy; the
    `authority publish` arguments that publish and offer both."""
    paths = FederationPaths(workdir)
    draft = paths.authority / "draft.registry"
    for name in CUSTODIANS[:ROOT_THRESHOLD]:
        cli(workdir, "custodian", "sign", str(paths.custodian(name)), str(draft), show_output=True)
    extra: list[str] = []
    if policy is not None:
        source = workdir / "policy" / f"policy-{policy['policy_id']}.json"
        source.write_text(canonical_json(policy), "utf-8")
        signed = source.with_suffix(".signed")
        cli(
            workdir, "policy", "sign", str(paths.org("policy-authority").root), str(source),
            "--out", str(signed),
        )  # fmt: skip
        extra = ["--policy", str(signed)]
    return ["authority", "publish", str(paths.authority), *extra, "--json"]


def _publish(workdir: Path, policy: dict[str, Any] | None = None) -> int:
    """Sign, then publish and offer to every server; the new registry version."""
    _, published, _ = cli(workdir, *_prepare(workdir, policy), show_output=True)
    return int(published["registry_version"])


def _with_new_agency(document: dict[str, Any], version: int) -> tuple[dict[str, Any], str]:
    """The current policy, plus the fourth default agency and a purpose that counts it."""
    four = default_policy_document(4)
    known = {a["id"] for a in document["agencies"]}
    (new,) = [a for a in four["agencies"] if a["id"] not in known]
    changed = copy.deepcopy(document)
    changed["policy_id"] = f"{document['policy_id'].split('.v')[0]}.v{version}"
    changed["agencies"].append(new)
    changed["indicators"].extend(i for i in four["indicators"] if i["agency"] == new["id"])
    self_view = next(p for p in changed["purposes"] if p["id"] == "self-view")
    purpose = copy.deepcopy(self_view)
    purpose["id"] = NEW_PURPOSE
    purpose["description"] = (
        "A person checks their own yearly score for positive behaviour, counted at every "
        "agency including the one admitted last."
    )
    purpose["participants"] = [a["id"] for a in changed["agencies"]]
    changed["purposes"].append(purpose)
    return changed, str(new["id"])


def policy_without(document: dict[str, Any], relying_party: str, version: int) -> dict[str, Any]:
    """The policy without the purposes that name `relying_party`, as version `version`."""
    changed = copy.deepcopy(document)
    changed["policy_id"] = f"{document['policy_id'].split('.v')[0]}.v{version}"
    changed["purposes"] = [
        p for p in changed["purposes"] if relying_party not in p["relying_parties"]
    ]
    return changed


def admit_agency(
    workdir: Path, processes: FederationProcesses, data: DemoData, citizens: int, seed: int
) -> dict[str, Any]:
    """A fourth agency makes its keys, is admitted live, serves, and counts in a new purpose."""
    paths = FederationPaths(workdir)
    document = json.loads(paths.policy_json.read_text("utf-8"))
    policy_document, agency = _with_new_agency(document, 2)
    host = loopback_host(len(list(paths.orgs.iterdir())))
    endpoint = f"{host}:{free_port(host)}"
    org = paths.org(agency).root
    narrate(f"  {agency} makes its own keys on its own host ({endpoint}) and asks to join:")
    registry_endpoint = (
        load_party(workdir, "regulator").trust.participant("consent-registry").endpoint
    )
    cli(
        workdir, "org", "init", str(org), "--id", agency, "--role", "agency",
        "--name", next(a["name"] for a in policy_document["agencies"] if a["id"] == agency),
        "--endpoint", endpoint, "--fetch-registry-from", registry_endpoint,
    )  # fmt: skip
    cli(workdir, "authority", "admit", str(paths.authority), str(org / "admission.request"))
    version = _publish(workdir, policy_document)
    bundle = workdir / f"{agency}.bundle"
    cli(workdir, "authority", "bundle", str(paths.authority), "--id", agency, "--out", str(bundle))
    cli(workdir, "org", "install", str(org), str(bundle))
    policy = parse_policy(policy_document)
    four = generate(workdir / "data-4", policy, [*data.files, agency], citizens, seed=seed)
    _, report, _ = cli(
        workdir, "node", "ingest", "--workdir", str(workdir), "--agency", agency,
        str(four.files[agency]), "--json",
    )  # fmt: skip
    narrate(f"    {agency}: {report['new_records']} records stored under its own pseudonyms")
    processes.start_party(agency)
    prober = asyncio.run(current_party(workdir, "regulator"))
    asyncio.run(wait_serving(prober, agency))
    narrate(f"  {agency} serves from its own config; no other party restarted")
    granted = grant(workdir, data.demo_citizen, NEW_PURPOSE, "citizen-portal", days=1)
    _, own, _ = score(workdir, "citizen-portal", granted["token_file"])
    expected = expected_total(four.files, policy, data.demo_citizen, data.year)
    narrate(
        f"  the citizen's score over four agencies: {own['value']} (from the files: {expected})"
    )
    return {
        "admitted": agency,
        "registry_version": version,
        "four_agency_total": int(own["value"]),
        "four_agency_expected": expected,
        "token_file": granted["token_file"],
        "policy_document": policy_document,
    }


def rotate_key(workdir: Path, agency: str, check: Callable[[], bool]) -> str:
    """One agency rotates its signing key while serving; a score still verifies after it."""
    paths = FederationPaths(workdir)
    org = paths.org(agency)
    before = org.key.read_bytes()
    cli(workdir, "org", "rotate-key", str(org.root))
    cli(
        workdir, "authority", "rotate", str(paths.authority), str(org.rotation_request),
        "--overlap-seconds", "60",
    )  # fmt: skip
    _publish(workdir)
    deadline = time.monotonic() + 30
    while org.next_key.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    switched = not org.next_key.exists() and org.key.read_bytes() != before
    narrate(f"  {agency} signs with its new key: {'yes' if switched else 'no'}")
    return "ok" if switched and check() else "failed"


async def _ask_until_refused(workdir: Path, token: Envelope, deadline: float) -> tuple[str, float]:
    """The relying party asks again and again (a fresh nonce each time) until refused."""
    relying_party = load_party(workdir, REMOVED)
    async with channel_to(relying_party, "coordinator") as channel:
        while time.monotonic() < deadline:
            query = signed_score_query(relying_party, token, PTT_PURPOSE)
            try:
                await send_score_query(relying_party, query, channel)
            except FedscoreError as error:
                return error.reason, time.time()
            await asyncio.sleep(0.005)
    return "ACCEPTED", time.time()


def remove_relying_party(
    workdir: Path, token_file: Path, document: dict[str, Any]
) -> tuple[str, int]:
    """The authority removes a relying party; its next question is refused everywhere.

    The removed party keeps asking from the moment the authority starts publishing;
    the figure is from the instant the version was written to the first refusal.
    """
    paths = FederationPaths(workdir)
    latest = len(list((paths.authority / "registry").glob("v*.signed")))
    policy_document = policy_without(document, REMOVED, latest + 1)
    cli(workdir, "authority", "remove", str(paths.authority), "--id", REMOVED)
    publish = _prepare(workdir, policy_document)
    narrate(f"  $ fedscore {' '.join(publish)}".replace(str(workdir), "$W"))
    token = Envelope.FromString(token_file.read_bytes())
    process = subprocess.Popen(
        [sys.executable, "-m", "fedscore.apps.cli.main", *publish],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    reason, refused_at = asyncio.run(_ask_until_refused(workdir, token, time.monotonic() + 60))
    _, stderr = process.communicate(timeout=60)
    if process.returncode != 0:
        raise RuntimeError(f"publishing the removal failed: {stderr.decode().strip()}")
    published = paths.authority / "registry" / f"v{latest + 1:06d}.signed"
    elapsed_ms = max(0, round((refused_at - published.stat().st_mtime) * 1000))
    narrate(f"  {REMOVED}'s next question: refused, {reason} ({elapsed_ms} ms after publication)")
    return reason, elapsed_ms
