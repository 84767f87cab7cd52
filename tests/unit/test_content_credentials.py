"""C2PA Content Credentials: signed with the local test certificate, read back as trusted, tampering detected,
the XMP provenance and the pixels kept, bad settings refused with one line."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from productstudio.config import C2paSettings
from productstudio.editing.content_credentials import (ManifestSigner, make_local_certificate, read_manifest,
                                                       local_ca_pem, local_certificate)
from productstudio.editing.provenance import EDITED, Provenance, read_provenance, with_provenance
from productstudio.errors import DataError, ParamsError

PROVENANCE = Provenance(digital_source_type=EDITED, model_name="u2netp", model_version="pkg==0.1.3 sha256:ab12",
                        source_sha256="0f" * 32, preset="amazon-main", created="")


@pytest.fixture(scope="module")
def certificate_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("c2pa")
    make_local_certificate(directory)
    return directory


@pytest.fixture(scope="module")
def signer(certificate_dir):
    return ManifestSigner(local_certificate(certificate_dir))


@pytest.fixture(scope="module")
def photo(clothing_dir) -> Image.Image:
    path = sorted((clothing_dir / "test" / "shoes").glob("*.jpg"))[0]
    with Image.open(path) as image:
        return image.convert("RGB").resize((120, 160))


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return with_provenance(buffer.getvalue(), PROVENANCE)


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_signed_export_reads_back_trusted_with_pixels_and_xmp_kept(signer, certificate_dir, photo, fmt):
    data = encoded(photo, fmt)
    signed = signer.sign(data, PROVENANCE)
    assert signed != data and np.array_equal(pixels(signed), pixels(data))
    assert Provenance(**read_provenance(signed)) == PROVENANCE
    manifest = read_manifest(signed, trust_anchors=local_ca_pem(certificate_dir))
    assert (manifest["state"], manifest["codes"], manifest["generator"]) == ("Trusted", [], "Product Studio")
    [action] = manifest["actions"]
    assert action["action"] == "c2pa.created" and action["digitalSourceType"] == EDITED
    assert action["parameters"] == {"model": "u2netp", "modelVersion": "pkg==0.1.3 sha256:ab12",
                                    "preset": "amazon-main", "sourceSha256": "0f" * 32}
    # a reader without our test CA: the signature checks out, the signer is simply not one it trusts
    assert read_manifest(signed)["state"] == "Valid"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_changed_pixels_or_xmp_after_signing_are_detected(signer, certificate_dir, photo, fmt):
    signed = signer.sign(encoded(photo, fmt), PROVENANCE)
    anchors = local_ca_pem(certificate_dir)
    relabelled = with_provenance(signed, Provenance(digital_source_type="digitalCapture", model_name="-",
                                                    model_version="-"))
    assert read_manifest(relabelled, trust_anchors=anchors)["state"] == "Invalid"
    flipped = bytearray(signed)
    flipped[len(flipped) // 2] ^= 0xFF  # inside the compressed pixels
    manifest = read_manifest(bytes(flipped), trust_anchors=anchors)
    assert manifest["state"] == "Invalid" and "assertion.dataHash.mismatch" in manifest["codes"]


def test_another_ca_does_not_make_it_trusted(signer, photo, tmp_path):
    make_local_certificate(tmp_path)  # a second, unrelated test CA
    signed = signer.sign(encoded(photo, "JPEG"), PROVENANCE)
    assert read_manifest(signed, trust_anchors=(tmp_path / "ca.pem").read_text())["state"] != "Trusted"


def test_an_unsigned_image_or_a_non_image_is_a_one_line_data_error(photo):
    with pytest.raises(DataError, match="no readable C2PA manifest"):
        read_manifest(encoded(photo, "JPEG"))
    with pytest.raises(DataError):
        read_manifest(b"GIF89a not supported")


def test_settings_name_both_files_or_neither(tmp_path, certificate_dir):
    with pytest.raises(ParamsError, match="both certificate and private_key"):
        ManifestSigner.from_settings(C2paSettings(sign=True, certificate=str(certificate_dir / "chain.pem")))
    with pytest.raises(ParamsError, match="no such file"):
        ManifestSigner.from_settings(C2paSettings(sign=True, certificate=str(tmp_path / "missing.pem"),
                                                  private_key=str(tmp_path / "missing.key")))
    # a real certificate's files work the same way (here: the test one, named explicitly)
    named = ManifestSigner.from_settings(C2paSettings(sign=True, certificate=str(certificate_dir / "chain.pem"),
                                                      private_key=str(certificate_dir / "signer.key")))
    assert read_manifest(named.sign(encoded(Image.new("RGB", (32, 32), "white"), "PNG"), PROVENANCE),
                         trust_anchors=local_ca_pem(certificate_dir))["state"] == "Trusted"
    wrong_key = tmp_path / "wrong.key"
    make_local_certificate(tmp_path / "other")
    wrong_key.write_bytes((tmp_path / "other" / "signer.key").read_bytes())
    with pytest.raises(ParamsError, match="cannot sign"):
        ManifestSigner.from_settings(C2paSettings(sign=True, certificate=str(certificate_dir / "chain.pem"),
                                                  private_key=str(wrong_key)))
