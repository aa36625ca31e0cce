"""Signed release bundles: what is written, and that any change to them is detected."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from harness.stats import PARTICIPATION, StatsFederation, servers, stats_federation

pytest.importorskip("matplotlib")

from coordinator.bundle import (
    MANIFEST_TYPE,
    RELEASE_CSV,
    RELEASE_JSON,
    RELEASE_PNG,
    SIGNATURE,
    canonical_bytes,
    sha256_of,
    verify_bundle,
)
from coordinator.statistics import PublishedRelease, open_publisher, publish_release
from fedscore.apps.cli.stats_commands import verify
from fedscore.apps.federation import init_federation
from fedscore.errors import FedscoreError
from fedscore.runtime.party import federation_view, load_party
from fedscore.v1.envelope_pb2 import Envelope
from keys.envelope import sign_bytes
from keys.keyring import Keyring

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[StatsFederation, PublishedRelease]:
    fed = stats_federation(tmp_path_factory.mktemp("bundle") / "federation", citizens=120)

    async def publish() -> PublishedRelease:
        async with servers(fed.root):
            publisher = open_publisher(load_party(fed.root, "coordinator"))
            try:
                return await publish_release(publisher, PARTICIPATION)
            finally:
                await publisher.close()

    return fed, asyncio.run(publish())


def _keyring(root: Path) -> Keyring:
    return federation_view(root).coordinator_keys()


def _copy(release: PublishedRelease, tmp_path: Path) -> Path:
    target = tmp_path / release.release_id
    shutil.copytree(release.directory, target)
    return target


def test_the_bundle_holds_the_signed_release_json_csv_and_png(
    published: tuple[StatsFederation, PublishedRelease],
) -> None:
    fed, release = published
    directory = release.directory
    assert directory == fed.root / "orgs" / "coordinator" / "releases" / release.release_id
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [RELEASE_JSON, RELEASE_CSV, RELEASE_PNG, SIGNATURE]
    )
    raw = (directory / RELEASE_JSON).read_bytes()
    document = json.loads(raw)
    assert raw == canonical_bytes(document)  # canonical bytes, exactly what was hashed
    assert document == release.document
    for key in ("definition", "epsilon_spent", "budget", "values", "policy_hash", "published_at"):
        assert key in document
    assert document["budget"] == {
        "dataset": "agency-records",
        "year": document["year"],
        "total": 10.0,
        "spent": 1.0,
        "remaining": 9.0,
    }
    assert document["mechanism"]["l1_sensitivity"] == 4
    assert document["files"] == {
        RELEASE_CSV: sha256_of((directory / RELEASE_CSV).read_bytes()),
        RELEASE_PNG: sha256_of((directory / RELEASE_PNG).read_bytes()),
    }
    rows = list(csv.DictReader(io.StringIO((directory / RELEASE_CSV).read_text("utf-8"))))
    assert [(r["bin"], int(r["value"])) for r in rows] == [
        (v["bin"], v["value"]) for v in document["values"]
    ]
    assert rows[0]["label_th"] == "สุขภาพกายและจิต — ทั่วประเทศ"
    png = (directory / RELEASE_PNG).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    from matplotlib import image

    pixels = image.imread(io.BytesIO(png), format="png")
    assert pixels.shape[:2] == (700, 1200)  # 12 x 7 inches at 100 dpi

    verified = verify_bundle(directory, _keyring(fed.root))
    assert (verified.signer, verified.release_id) == ("coordinator", release.release_id)
    # Found from the bundle's own folder, or named with --workdir from anywhere.
    assert verify(directory)["verified"] is True


@pytest.mark.parametrize("name", [RELEASE_JSON, RELEASE_CSV, RELEASE_PNG])
def test_changing_any_published_byte_is_detected(
    published: tuple[StatsFederation, PublishedRelease], tmp_path: Path, name: str
) -> None:
    fed, release = published
    copy = _copy(release, tmp_path)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(FedscoreError) as refused:
        verify(copy, fed.root)
    assert refused.value.reason == "BUNDLE_MISMATCH"
    assert name in refused.value.message


def test_extra_missing_renamed_or_foreign_signed_bundles_are_refused(
    published: tuple[StatsFederation, PublishedRelease], tmp_path: Path
) -> None:
    fed, release = published
    keyring = _keyring(fed.root)

    extra = _copy(release, tmp_path / "extra")
    (extra / "notes.txt").write_text("added later")
    with pytest.raises(FedscoreError, match="BUNDLE_MISMATCH"):
        verify_bundle(extra, keyring)

    missing = _copy(release, tmp_path / "missing")
    (missing / RELEASE_PNG).unlink()
    with pytest.raises(FedscoreError, match="BUNDLE_MISMATCH"):
        verify_bundle(missing, keyring)

    renamed = tmp_path / "renamed" / "2020-something-else"
    shutil.copytree(release.directory, renamed)
    with pytest.raises(FedscoreError, match="BUNDLE_MISMATCH"):
        verify_bundle(renamed, keyring)

    unsigned = _copy(release, tmp_path / "unsigned")
    (unsigned / SIGNATURE).unlink()
    with pytest.raises(FedscoreError) as no_signature:
        verify_bundle(unsigned, keyring)
    assert no_signature.value.reason == "UNSIGNED"

    # The same manifest signed by an agency node: not the coordinator's signature.
    forged = _copy(release, tmp_path / "forged")
    envelope = Envelope.FromString((forged / SIGNATURE).read_bytes())
    node_key = load_party(fed.root, "trc").signing_key
    (forged / SIGNATURE).write_bytes(
        sign_bytes(MANIFEST_TYPE, envelope.payload, node_key).SerializeToString()
    )
    with pytest.raises(FedscoreError) as not_coordinator:
        verify_bundle(forged, keyring)
    assert not_coordinator.value.reason == "UNKNOWN_SIGNER"

    # Another federation's trust registry does not know this coordinator's key.
    other = tmp_path / "other-federation"
    init_federation(other, 2, fast_kdf=True)
    with pytest.raises(FedscoreError) as foreign:
        verify(_copy(release, tmp_path / "foreign"), other)
    assert foreign.value.reason == "UNKNOWN_SIGNER"
