"""Federation CA and party certificates, made directly or from a party's signing request."""

from __future__ import annotations

import base64
import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedscore.errors import InvalidArgument
from keys.tls import (
    CLOCK_SKEW,
    certificate_not_after,
    create_ca,
    create_csr,
    csr_public_key_pem,
    issue_certificate,
    issue_from_csr,
)

CA_KEY_PEM, CA_CERT_PEM = create_ca("fed-test CA")
CA_CERT = x509.load_pem_x509_certificate(CA_CERT_PEM)


def _party(party_id: str = "trc", hosts: tuple[str, ...] = ()) -> tuple[bytes, x509.Certificate]:
    key_pem, cert_pem = issue_certificate(CA_KEY_PEM, CA_CERT_PEM, party_id, hosts)
    return key_pem, x509.load_pem_x509_certificate(cert_pem)


def test_ca_is_a_certificate_signing_ca() -> None:
    constraints = CA_CERT.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = CA_CERT.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    CA_CERT.verify_directly_issued_by(CA_CERT)


def test_party_certificate_chains_to_the_ca() -> None:
    key_pem, cert = _party()
    cert.verify_directly_issued_by(CA_CERT)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.public_key() == key.public_key()


def test_certificate_from_another_ca_does_not_chain() -> None:
    other_key, other_cert = create_ca("other CA")
    _, foreign_pem = issue_certificate(other_key, other_cert, "trc", ())
    with pytest.raises(ValueError):  # issuer name differs
        x509.load_pem_x509_certificate(foreign_pem).verify_directly_issued_by(CA_CERT)
    # Same CA name, different key: only the signature tells them apart.
    twin_key, twin_cert = create_ca("fed-test CA")
    _, twin_pem = issue_certificate(twin_key, twin_cert, "trc", ())
    with pytest.raises(InvalidSignature):
        x509.load_pem_x509_certificate(twin_pem).verify_directly_issued_by(CA_CERT)


def test_names_and_usages() -> None:
    _, cert = _party("consent-registry", ("registry.example.go.th", "10.0.0.7"))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "consent-registry"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "consent-registry",
        "localhost",
        "registry.example.go.th",
    ]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.7"),
    ]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_validity_is_about_two_years() -> None:
    _, cert = _party()
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=700) < lifetime < datetime.timedelta(days=760)
    assert cert.not_valid_before_utc <= datetime.datetime.now(datetime.UTC)


@pytest.mark.parametrize("bad_id", ["", "has space", "-leading", "under_score", "ทดสอบ"])
def test_party_id_must_be_a_dns_name(bad_id: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        issue_certificate(CA_KEY_PEM, CA_CERT_PEM, bad_id, ())
    assert error.value.reason == "BAD_PARTY_ID"


def test_ca_key_must_match_ca_certificate() -> None:
    other_key, _ = create_ca("other CA")
    with pytest.raises(InvalidArgument) as error:
        issue_certificate(other_key, CA_CERT_PEM, "trc", ())
    assert error.value.reason == "BAD_KEY"


# --- certificates issued from a party's signing request --------------------------------


def _csr_pem(
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
    common_name: str,
    extra_names: tuple[str, ...] = (),
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if extra_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in extra_names]),
            critical=False,
        )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def _tampered(csr_pem: bytes, old: bytes, new: bytes) -> bytes:
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    assert der.count(old) == 1 and len(old) == len(new)
    body = base64.encodebytes(der.replace(old, new)).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"\n".join(
        [b"-----BEGIN CERTIFICATE REQUEST-----", *lines, b"-----END CERTIFICATE REQUEST-----", b""]
    )


def test_certificate_from_a_csr_chains_to_the_ca_and_names_the_party() -> None:
    key_pem, csr_pem = create_csr("trc")
    cert = x509.load_pem_x509_certificate(
        issue_from_csr(CA_KEY_PEM, CA_CERT_PEM, csr_pem, "trc", ("trc.example.go.th",))
    )
    cert.verify_directly_issued_by(CA_CERT)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    # The certificate is for the key the party kept; the CA never saw the private key.
    assert cert.public_key() == key.public_key()
    assert csr_public_key_pem(csr_pem) == key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "trc"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["trc", "localhost", "trc.example.go.th"]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_names_a_csr_asks_for_are_not_granted() -> None:
    csr_pem = _csr_pem(ec.generate_private_key(ec.SECP256R1()), "trc", ("coordinator",))
    cert = x509.load_pem_x509_certificate(issue_from_csr(CA_KEY_PEM, CA_CERT_PEM, csr_pem, "trc"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "coordinator" not in san.get_values_for_type(x509.DNSName)


def _bad_csrs() -> dict[str, bytes]:
    _, csr_pem = create_csr("trc-node")
    return {
        "names another party": create_csr("dsd")[1],
        "names no party": x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM),
        "names the party twice": x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "trc-node"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "dsd"),
                ]
            )
        )
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM),
        "tampered subject": _tampered(csr_pem, b"trc-node", b"trc-nodf"),
        "ed25519 key": _csr_pem(ed25519.Ed25519PrivateKey.generate(), "trc-node"),
        "p-384 key": _csr_pem(ec.generate_private_key(ec.SECP384R1()), "trc-node"),
        "garbage": b"not a certificate signing request",
        "empty": b"",
        "a certificate, not a request": CA_CERT_PEM,
        "truncated": csr_pem[: len(csr_pem) // 2],
    }


BAD_CSRS = _bad_csrs()


@pytest.mark.parametrize("csr_pem", list(BAD_CSRS.values()), ids=list(BAD_CSRS))
def test_a_bad_csr_is_refused(csr_pem: bytes) -> None:
    with pytest.raises(InvalidArgument) as error:
        issue_from_csr(CA_KEY_PEM, CA_CERT_PEM, csr_pem, "trc-node")
    assert error.value.reason == "BAD_CSR"


def test_a_tampered_csr_has_no_public_key() -> None:
    _, csr_pem = create_csr("trc-node")
    with pytest.raises(InvalidArgument) as error:
        csr_public_key_pem(_tampered(csr_pem, b"trc-node", b"trc-nodf"))
    assert error.value.reason == "BAD_CSR"


def test_a_csr_is_only_made_for_a_dns_name() -> None:
    with pytest.raises(InvalidArgument) as error:
        create_csr("has space")
    assert error.value.reason == "BAD_PARTY_ID"


def test_certificate_not_after_reads_the_expiry() -> None:
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    _, csr_pem = create_csr("trc")
    cert_pem = issue_from_csr(
        CA_KEY_PEM, CA_CERT_PEM, csr_pem, "trc", now=now, validity=datetime.timedelta(days=30)
    )
    expected = now - CLOCK_SKEW + datetime.timedelta(days=30)
    assert certificate_not_after(cert_pem) == expected
    assert certificate_not_after(cert_pem).tzinfo is not None
    # A certificate never outlives its CA.
    longer = issue_from_csr(
        CA_KEY_PEM, CA_CERT_PEM, csr_pem, "trc", validity=datetime.timedelta(days=100_000)
    )
    assert certificate_not_after(longer) == CA_CERT.not_valid_after_utc
    assert certificate_not_after(CA_CERT_PEM) == CA_CERT.not_valid_after_utc
