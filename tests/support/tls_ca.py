"""A throw-away certificate authority for the TLS and WSS tests, made at test time with
``cryptography`` in a temporary directory (nothing secret is checked in).

::

    ca = TestCA(tmp_path)                       # writes ca.pem
    server = ca.issue("server", dns=["sip.test"], ips=["127.0.0.1"])
    server.cert, server.key                     # PEM file paths (cert = leaf then the CA: a chain)
    client = ca.issue("client", client=True)
    rogue = TestCA(tmp_path / "rogue")          # another, untrusted authority

ECDSA P-256 keys keep generation fast. Certificates are valid from a day ago for thirty days.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TestCA", "Issued"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeproxy tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class Issued:
    """One issued certificate: ``cert`` is the chain file (leaf, then the CA), ``leaf`` the leaf
    alone, ``key`` its private key (unencrypted PKCS#8); all PEM file paths as strings."""

    name: str
    cert: str
    leaf: str
    key: str


class TestCA:
    """A self-signed root that issues server and client certificates into ``directory``."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path | str, common_name: str = "edgeproxy test CA") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self._not_before = now - datetime.timedelta(days=1)
        self._not_after = now + datetime.timedelta(days=30)
        name = _name(common_name)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.pem = self._cert.public_bytes(serialization.Encoding.PEM)
        self.cert = str(self.directory / "ca.pem")
        Path(self.cert).write_bytes(self.pem)

    def issue(self, name: str, *, dns: list[str] | tuple[str, ...] = (), ips: list[str] | tuple[str, ...] = (),
              client: bool = False, server: bool = True, common_name: str | None = None) -> Issued:
        """Issue a certificate for ``dns`` names and ``ips`` (subjectAltName); ``name`` names the
        files. ``client``/``server`` set the extended key usages."""
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name or (dns[0] if dns else name)))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                           critical=False)
        )
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        leaf_pem = cert.public_bytes(serialization.Encoding.PEM)
        leaf = self.directory / f"{name}.leaf.pem"
        chain = self.directory / f"{name}.pem"
        key_path = self.directory / f"{name}.key"
        leaf.write_bytes(leaf_pem)
        chain.write_bytes(leaf_pem + self.pem)
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)
        return Issued(name, str(chain), str(leaf), str(key_path))
