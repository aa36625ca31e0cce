"""Signed release bundles: `ORG/releases/<id>/` in the coordinator's folder, four files.

- `release.json`: the release document as canonical JSON (sorted keys, compact, UTF-8);
- `release.csv`: one row per bin with its coordinates, English and Thai labels, value;
- `release.png`: the chart (`coordinator.chart`);
- `release.signed`: a binary `Envelope` signed by the coordinator over a manifest, the
  canonical JSON `{"files": {name: "sha256:<hex>"}, "release_id": id, "signer": id}`,
  payload type `MANIFEST_TYPE`; one signature covers every published byte.

Invariants:
- A bundle appears under its final name only when complete: it is written to a hidden
  sibling folder and renamed (atomic within one file system).
- `verify_bundle` verifies the envelope under the coordinator keyring BEFORE reading the
  manifest, then refuses a missing, extra or changed file and a release id that differs
  from the folder's name or the document's.
- Only published (noisy) values ever reach this module.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedscore.errors import FailedPrecondition, InvalidArgument, Unauthenticated
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import sign_bytes, verify_bytes
from keys.keyring import CoordinatorKeys
from keys.signing import SigningKey

MANIFEST_TYPE = "application/vnd.fedscore.release-manifest+json"
RELEASE_JSON = "release.json"
RELEASE_CSV = "release.csv"
RELEASE_PNG = "release.png"
SIGNATURE = "release.signed"
PUBLISHED_FILES = (RELEASE_JSON, RELEASE_CSV, RELEASE_PNG)


def canonical_bytes(document: Mapping[str, Any]) -> bytes:
    text = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def release_csv(release_id: str, values: list[Mapping[str, Any]]) -> bytes:
    """One row per bin: its key, coordinates, labels in English and Thai, and noisy value."""
    dimensions = list(dict.fromkeys(name for v in values for name in v["dimensions"]))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["release_id", "bin", *dimensions, "label", "label_th", "value"])
    for value in values:
        coordinates = [value["dimensions"].get(name, "") for name in dimensions]
        writer.writerow(
            [
                release_id,
                value["bin"],
                *coordinates,
                value["label"],
                value["label_th"],
                value["value"],
            ]
        )
    return buffer.getvalue().encode("utf-8")


def manifest(release_id: str, signer: str, files: Mapping[str, bytes]) -> bytes:
    hashes = {name: sha256_of(data) for name, data in files.items()}
    return canonical_bytes({"files": hashes, "release_id": release_id, "signer": signer})


def write_bundle(
    releases_dir: Path,
    release_id: str,
    files: Mapping[str, bytes],
    signing_key: SigningKey,
    signer: str,
) -> Path:
    """Write the published files and their signature as `releases_dir/release_id`."""
    if set(files) != set(PUBLISHED_FILES):
        raise InvalidArgument(f"a bundle holds exactly {PUBLISHED_FILES}", "BAD_BUNDLE")
    final = releases_dir / release_id
    if final.exists():
        raise FailedPrecondition(f"{final} exists already", reason="RELEASE_EXISTS")
    partial = releases_dir / f".{release_id}.partial"
    envelope = sign_bytes(MANIFEST_TYPE, manifest(release_id, signer, files), signing_key)
    partial.mkdir(parents=True)
    try:
        for name, data in files.items():
            (partial / name).write_bytes(data)
        (partial / SIGNATURE).write_bytes(envelope.SerializeToString())
        os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature and every file checked out."""

    directory: Path
    release_id: str
    signer: str
    document: dict[str, Any]
    hashes: dict[str, str]


def verify_bundle(directory: Path, coordinator_keyring: CoordinatorKeys) -> VerifiedBundle:
    """Check the signature, then every file; raise `Unauthenticated` on any mismatch."""
    directory = Path(directory)
    try:
        envelope = Envelope.FromString((directory / SIGNATURE).read_bytes())
    except OSError as exc:
        raise Unauthenticated(f"{directory} has no {SIGNATURE}", reason="UNSIGNED") from exc
    except Exception as exc:
        raise Unauthenticated(f"{SIGNATURE} is not an envelope", reason="UNSIGNED") from exc
    verified = verify_bytes(envelope, MANIFEST_TYPE, coordinator_keyring)
    signed = json.loads(verified.payload)
    hashes: dict[str, str] = signed["files"]
    present = {p.name for p in directory.iterdir()} - {SIGNATURE}
    if present != set(hashes) or set(hashes) != set(PUBLISHED_FILES):
        raise Unauthenticated(
            f"bundle holds {sorted(present)}, its signature covers {sorted(hashes)}",
            reason="BUNDLE_MISMATCH",
        )
    for name, expected in hashes.items():
        if sha256_of((directory / name).read_bytes()) != expected:
            raise Unauthenticated(f"{name} differs from what was signed", "BUNDLE_MISMATCH")
    document: dict[str, Any] = json.loads((directory / RELEASE_JSON).read_bytes())
    release_id = signed["release_id"]
    if not release_id == document.get("release_id") == directory.name:
        raise Unauthenticated(
            f"folder {directory.name!r}, document and signature name different releases",
            reason="BUNDLE_MISMATCH",
        )
    if signed.get("signer") != verified.signer:
        raise Unauthenticated("manifest names another signer", reason="BUNDLE_MISMATCH")
    return VerifiedBundle(directory, release_id, verified.signer, document, hashes)
