"""The federation CA and party certificates for mutual TLS (`cryptography`, ECDSA P-256).

P-256 because gRPC's TLS stack (BoringSSL) supports it everywhere; Ed25519 certificates
are not reliably accepted in TLS handshakes.

Invariants:
- The CA certificate is a CA (basic constraints, path length 0) that may only sign
  certificates and CRLs.
- A party certificate is not a CA; its subject CN and a DNS SAN equal the party id, its
  SANs also hold `localhost` and `127.0.0.1` (the local federation) plus any given hosts,
  and it is valid for both server and client authentication, so one certificate serves
  a party's server and its outgoing calls.
- Keys are returned as unencrypted PKCS#8 PEM; they are encrypted at rest by the key file.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedscore.errors import InvalidArgument

CA_VALIDITY = datetime.timedelta(days=3650)
PARTY_VALIDITY = datetime.timedelta(days=730)
# Certificates start a little in the past so small clock differences between parties
# do not make a fresh certificate "not yet valid".
CLOCK_SKEW = datetime.timedelta(minutes=5)
LOCAL_HOSTS = ("localhost", "127.0.0.1")

_DNS_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now(now: datetime.datetime | None) -> datetime.datetime:
    return now if now is not None else datetime.datetime.now(datetime.UTC)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _DNS_NAME.match(host):
        raise InvalidArgument(f"{host!r} is neither an IP address nor a DNS name", "BAD_HOST")
    return x509.DNSName(host)


def create_ca(name: str, *, now: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """A new federation CA: (key PEM, self-signed certificate PEM)."""
    key = _new_key()
    start = _now(now) - CLOCK_SKEW
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedscore federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def _check_party_id(party_id: str) -> None:
    if not _DNS_NAME.match(party_id):
        raise InvalidArgument(
            f"party id {party_id!r} must be usable as a DNS name (letters, digits, '-', '.')",
            reason="BAD_PARTY_ID",
        )


def create_csr(party_id: str) -> tuple[bytes, bytes]:
    """A new TLS key and a certificate signing request for `party_id`: (key PEM, CSR PEM).

    Made on the party's own host: the key never leaves it, only the request does.
    """
    _check_party_id(party_id)
    key = _new_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party_id)]))
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def csr_public_key_pem(csr_pem: bytes) -> bytes:
    """The public key a CSR asks a certificate for (PEM), after checking its signature."""
    return (
        _load_csr(csr_pem)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise InvalidArgument("not a PEM certificate signing request", "BAD_CSR") from exc
    if not csr.is_signature_valid:
        raise InvalidArgument("the CSR's signature does not verify", "BAD_CSR")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise InvalidArgument("the CSR's key must be ECDSA P-256", "BAD_CSR")
    return csr


def issue_from_csr(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    csr_pem: bytes,
    party_id: str,
    hosts: Iterable[str] = (),
    *,
    now: datetime.datetime | None = None,
    validity: datetime.timedelta = PARTY_VALIDITY,
) -> bytes:
    """A certificate for the key in `csr_pem`, signed by the CA (cert PEM).

    The CSR's subject must name `party_id`; the names the certificate carries are the
    authority's choice (the party id, the local hosts and `hosts`), not the CSR's.
    """
    _check_party_id(party_id)
    csr = _load_csr(csr_pem)
    names_in_csr = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [attribute.value for attribute in names_in_csr] != [party_id]:
        raise InvalidArgument(f"the CSR does not name {party_id!r} as its subject", "BAD_CSR")
    public = csr.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument("CA key must be an ECDSA key", reason="BAD_KEY")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    if ca_cert.public_key() != ca_key.public_key():
        raise InvalidArgument("CA key does not belong to the CA certificate", reason="BAD_KEY")
    names: list[x509.GeneralName] = []
    for host in [party_id, *LOCAL_HOSTS, *hosts]:
        general_name = _general_name(host)
        if general_name not in names:
            names.append(general_name)
    start = _now(now) - CLOCK_SKEW
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(start + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def certificate_not_after(cert_pem: bytes) -> datetime.datetime:
    """When a certificate expires (UTC)."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def issue_certificate(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    party_id: str,
    hosts: Iterable[str] = (),
    *,
    now: datetime.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A new key and certificate for `party_id`, signed by the CA: (key PEM, cert PEM).

    For tests and the CA's own client certificate; an organisation makes its key with
    `create_csr` on its own host.
    """
    key_pem, csr_pem = create_csr(party_id)
    return key_pem, issue_from_csr(ca_key_pem, ca_cert_pem, csr_pem, party_id, hosts, now=now)
