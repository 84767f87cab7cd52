"""C2PA Content Credentials on studio exports: a signed manifest saying the image was edited by Product Studio,
with which model, from which source photo. It sits beside the XMP of ``provenance`` (kept as it is).

    signer = ManifestSigner.from_settings(settings.edit.c2pa)      # a real certificate, or the local test one
    signed = signer.sign(jpeg_bytes, provenance)                    # the same pixels and XMP, plus the manifest
    read_manifest(signed, trust_anchors=local_ca_pem())              # {"state": "Trusted", "actions": [...], ...}

Signing is ES256 (ECDSA P-256) through ``c2pa-python`` (the Rust c2pa-rs). C2PA needs a certificate chain, not a
self-signed certificate: a signer certificate with ``digitalSignature`` and the ``emailProtection`` extended key
usage, issued by a CA. Without a configured one, ``local_certificate`` makes a local test CA and signer under
``.tools/c2pa-test/`` on first use: a reader that is given that CA as a trust anchor says "Trusted", any other
reader says the signature is valid but the signer unknown. For real use, buy a C2PA-conformant signing
certificate (or use your organisation's CA), set ``edit.c2pa.certificate`` (the PEM chain, signer first) and
``edit.c2pa.private_key`` (PKCS#8 PEM), and ``timestamp_url`` (an RFC 3161 authority) so signatures outlive the
certificate.

An ECDSA signature differs on every signing, so signed exports are never byte-identical between runs: signing is
off by default, and the DVC stage keeps reproducible bytes.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from productstudio import __version__
from productstudio.editing.provenance import EDITED, Provenance, image_format
from productstudio.errors import DataError, ParamsError

MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WebP": "image/webp"}
TEST_CERTIFICATE_DAYS = 365
# a 1x1 white PNG: signed once when a signer is made, so a key that does not match its certificate fails early
PROBE_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000"
                          "3a7e9b550000000a4944415478da63f80f00010101001bb6ee560000000049454e44ae426082")


def local_certificate_dir() -> Path:
    """``.tools/c2pa-test`` in the project checkout (beside the pretrained weights; never committed)."""
    return Path(__file__).resolve().parents[3] / ".tools" / "c2pa-test"


@dataclass(frozen=True)
class SigningKey:
    """PEM bytes: the certificate chain (signer first) and the signer's PKCS#8 private key."""

    chain: bytes
    private_key: bytes


def local_certificate(directory: Path | None = None) -> SigningKey:
    """The local test CA and signer (made on first use, then reused): for tests and trying things out only."""
    directory = directory or local_certificate_dir()
    chain_path, key_path = directory / "chain.pem", directory / "signer.key"
    if not (chain_path.is_file() and key_path.is_file()):
        make_local_certificate(directory)
    return SigningKey(chain_path.read_bytes(), key_path.read_bytes())


def local_ca_pem(directory: Path | None = None) -> str:
    """The test CA's certificate: the trust anchor a reader needs to call test-signed manifests "Trusted"."""
    directory = directory or local_certificate_dir()
    local_certificate(directory)
    return (directory / "ca.pem").read_text()


def make_local_certificate(directory: Path) -> None:
    """A P-256 test CA and a signer certificate it issues, written as ca.pem, chain.pem and signer.key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Product Studio (test only)")])

    now = datetime.now(timezone.utc) - timedelta(minutes=5)
    ca_key, signer_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_subject = name("Product Studio Test Root")
    ca = (x509.CertificateBuilder().subject_name(ca_subject).issuer_name(ca_subject)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + timedelta(days=10 * TEST_CERTIFICATE_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    signer = (x509.CertificateBuilder().subject_name(name("Product Studio Test Signer")).issuer_name(ca_subject)
              .public_key(signer_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(now + timedelta(days=TEST_CERTIFICATE_DAYS))
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                           key_encipherment=False, data_encipherment=False, key_agreement=False,
                                           key_cert_sign=False, crl_sign=False, encipher_only=False,
                                           decipher_only=False), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "chain.pem").write_bytes(signer.public_bytes(pem) + ca.public_bytes(pem))
    key_path = directory / "signer.key"
    key_path.write_bytes(signer_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    key_path.chmod(0o600)


def manifest_definition(p: Provenance) -> dict:
    """The manifest: one c2pa.created action (the export is a new composite: the cut-out on a new canvas) with
    the IPTC source type, the model, the preset and the source photo's sha256. The source is named, not embedded
    as an ingredient (C2PA's c2pa.opened would need its bytes in every signing call)."""
    parameters = {"model": p.model_name, "modelVersion": p.model_version}
    if p.preset:
        parameters["preset"] = p.preset
    if p.source_sha256:
        parameters["sourceSha256"] = p.source_sha256
    return {"claim_generator_info": [{"name": "Product Studio", "version": __version__}],
            "title": f"{p.preset or 'edit'}",
            "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [
                {"action": "c2pa.created", "digitalSourceType": p.digital_source_type,
                 "softwareAgent": {"name": "Product Studio", "version": __version__},
                 "parameters": parameters}]}}]}


def mime_type(data: bytes) -> str:
    kind = image_format(data)
    if kind not in MIME_TYPES:
        raise DataError(f"C2PA signing supports JPEG, PNG and WebP, not {kind}")
    return MIME_TYPES[kind]


class ManifestSigner:
    """Signs encoded images with one certificate; reuse it for a whole batch."""

    def __init__(self, key: SigningKey, timestamp_url: str | None = None):
        import c2pa

        self.c2pa = c2pa
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, key.chain, key.private_key,
                                   timestamp_url.encode() if timestamp_url else None)
        # no thumbnail: the manifest would carry a second, re-encoded copy of the image
        self.context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
        try:
            self.signer = c2pa.Signer.from_info(info)
            self.sign(PROBE_PNG, Provenance(digital_source_type=EDITED, model_name="probe", model_version="0"))
        except c2pa.C2paError as error:  # e.g. a key that is not the certificate's: fail now, not on photo 1
            reason = str(error).splitlines()[0][:200]
            raise ParamsError(f"edit.c2pa: the certificate and key cannot sign: {reason}") from None

    @classmethod
    def from_settings(cls, settings) -> "ManifestSigner":
        """From ``edit.c2pa`` (``config.C2paSettings``): its certificate and key files, else the test ones."""
        if bool(settings.certificate) != bool(settings.private_key):
            raise ParamsError("edit.c2pa: give both certificate and private_key, or neither (the test certificate)")
        if settings.certificate:
            files = [Path(settings.certificate), Path(settings.private_key)]
            for path in files:
                if not path.is_file():
                    raise ParamsError(f"edit.c2pa: {path}: no such file")
            key = SigningKey(files[0].read_bytes(), files[1].read_bytes())
        else:
            key = local_certificate()
        return cls(key, settings.timestamp_url)

    def sign(self, data: bytes, provenance: Provenance) -> bytes:
        """``data`` (an encoded JPEG/PNG/WebP) with a signed manifest embedded; pixels and XMP unchanged."""
        mime = mime_type(data)
        builder = self.c2pa.Builder(manifest_definition(provenance), self.context)
        out = io.BytesIO()
        builder.sign(self.signer, mime, io.BytesIO(data), out)
        return out.getvalue()


def read_manifest(data: bytes, trust_anchors: str | None = None) -> dict:
    """The active manifest of a signed image: {"state": "Trusted"|"Valid"|"Invalid", "codes": failure codes,
    "generator": ..., "actions": [...]}. ``DataError`` when the image carries none."""
    import c2pa

    settings = {"verify": {"verify_trust": bool(trust_anchors)}}
    if trust_anchors:
        settings["trust"] = {"trust_anchors": trust_anchors}
    try:
        reader = c2pa.Reader(mime_type(data), io.BytesIO(data), context=c2pa.Context.from_dict(settings))
        store = json.loads(reader.json())
    except c2pa.C2paError as error:
        raise DataError(f"no readable C2PA manifest: {str(error).splitlines()[0][:200]}") from None
    manifest = store["manifests"][store["active_manifest"]]
    actions = [action for assertion in manifest.get("assertions", []) if assertion["label"].startswith("c2pa.actions")
               for action in assertion["data"]["actions"]]
    failures = [status["code"] for status in store.get("validation_status", [])]
    return {"state": store.get("validation_state", "Invalid" if failures else "Valid"), "codes": failures,
            "generator": manifest.get("claim_generator_info", [{}])[0].get("name"), "actions": actions}
