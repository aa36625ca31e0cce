"""Federation CA and party certificates."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedscore.errors import InvalidArgument
from keys.tls import create_ca, issue_certificate

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
