"""Provenance XMP: written by Pillow or spliced into encoded files, read back from JPEG, PNG and WebP."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from productstudio.editing.provenance import (
    EDITED, GENERATED, Provenance, embed_xmp, jpeg_segments, read_provenance, with_provenance, xmp_packet)
from productstudio.errors import DataError

HOSTILE = 'a "quoted" <tag> & \'apos\' ]]> é 漢字 🧵'


def hostile_provenance() -> Provenance:
    return Provenance(digital_source_type=EDITED, model_name=f"u2netp {HOSTILE}",
                      model_version="pkg==0.1.3 sha256:ab12",
                      source_sha256="0f" * 32, preset=f"amazon-main{HOSTILE}", created="2026-11-30T12:00:00+00:00",
                      extra={"source_name": f"<script>alert(1)</script>{HOSTILE}", "k.2-x": "&amp;"})


@pytest.fixture(scope="module")
def photo(clothing_dir) -> Image.Image:
    """A real garment photo, shrunk so the test stays fast."""
    path = sorted((clothing_dir / "test" / "shoes").glob("*.jpg"))[0]
    with Image.open(path) as image:
        return image.convert("RGB").resize((120, 160))


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGBA"))


def test_packet_is_xmp_with_iptc_source_type_and_escaped_values():
    packet = xmp_packet(hostile_provenance())
    text = packet.decode("utf-8")
    assert text.startswith("<?xpacket begin=") and text.rstrip().endswith('<?xpacket end="w"?>')
    assert "<Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/" \
           "compositeWithTrainedAlgorithmicMedia</Iptc4xmpExt:DigitalSourceType>" in text
    assert "<xmp:CreatorTool>Product Studio " in text
    assert "<script>" not in text and "&lt;script&gt;" in text  # values are escaped, never markup


@pytest.mark.parametrize("fmt, options", [("JPEG", {"quality": 90}), ("WEBP", {"lossless": True}),
                                          ("WEBP", {"quality": 80})])
def test_pillow_written_xmp_round_trips(photo, fmt, options):
    p = hostile_provenance()
    data = encode(photo, fmt, xmp=xmp_packet(p), **options)
    assert Provenance(**read_provenance(data)) == p


@pytest.mark.parametrize("fmt, options, mode", [("JPEG", {"quality": 90}, "RGB"), ("PNG", {}, "RGB"),
                                                ("PNG", {}, "RGBA"), ("WEBP", {"lossless": True}, "RGB"),
                                                ("WEBP", {"lossless": True}, "RGBA"), ("WEBP", {"quality": 80}, "RGB"),
                                                ("WEBP", {"quality": 80}, "RGBA")])
def test_with_provenance_keeps_pixels_and_reads_back(photo, fmt, options, mode):
    image = photo.convert(mode)
    if mode == "RGBA":  # a transparent export: alpha must survive the splice
        image.putalpha(Image.linear_gradient("L").resize(photo.size))
    data = encode(image, fmt, **options)
    p = hostile_provenance()
    stamped = with_provenance(data, p)
    assert np.array_equal(pixels(stamped), pixels(data))
    assert Provenance(**read_provenance(stamped)) == p
    with Image.open(io.BytesIO(stamped)) as reread:  # an independent reader finds the same packet
        assert reread.info["xmp"] == xmp_packet(p)
        assert reread.mode == Image.open(io.BytesIO(data)).mode


def test_jpeg_splice_keeps_the_compressed_scan_bytes(photo):
    data = encode(photo, "JPEG", quality=85)
    stamped = with_provenance(data, hostile_provenance())
    _, scan_at = jpeg_segments(data)
    _, stamped_scan_at = jpeg_segments(stamped)
    assert stamped[stamped_scan_at:] == data[scan_at:]  # not re-encoded: the entropy-coded data is the same bytes
    markers = [marker for marker, _ in jpeg_segments(stamped)[0]]
    assert markers[0] == 0xE0 and markers[1] == 0xE1  # JFIF stays first, XMP right after


def test_stamping_twice_replaces_the_old_packet(photo):
    first = Provenance(digital_source_type=EDITED, model_name="a", model_version="1", created="2026-01-01T00:00:00Z")
    second = Provenance(digital_source_type="trainedAlgorithmicMedia", model_name="b", model_version="2",
                        created="2026-01-02T00:00:00Z")
    assert second.digital_source_type == GENERATED  # a bare IPTC code becomes its URI
    for fmt in ("JPEG", "PNG", "WEBP"):
        data = with_provenance(with_provenance(encode(photo, fmt), first), second)
        assert data.count(b"DigitalSourceType>") == 2  # one element (open and close tag): one packet only
        assert read_provenance(data)["model_name"] == "b"


def test_control_characters_become_replacement_characters():
    p = Provenance(digital_source_type=EDITED, model_name="bad\x00name\x1b", model_version="1", created="x")
    data = embed_xmp(encode(Image.new("RGB", (8, 8)), "PNG"), xmp_packet(p))
    assert read_provenance(data)["model_name"] == "bad\ufffdname\ufffd"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_file_without_xmp_is_a_data_error(photo, fmt):
    with pytest.raises(DataError, match="no XMP"):
        read_provenance(encode(photo, fmt))


def test_not_an_image_or_xmp_without_source_type_is_a_data_error(photo):
    with pytest.raises(DataError, match="not a JPEG, PNG or WebP"):
        read_provenance(b"GIF89a" + b"\x00" * 40)
    plain = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">' \
            b'<rdf:Description rdf:about=""/></rdf:RDF></x:xmpmeta>'
    with pytest.raises(DataError, match="DigitalSourceType"):
        read_provenance(encode(photo, "JPEG", xmp=plain))


def test_entity_declarations_are_refused_not_expanded(photo):
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>' \
           b'<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>'
    with pytest.raises(DataError, match="DOCTYPE"):
        read_provenance(encode(photo, "JPEG", xmp=bomb))


def test_reads_attribute_form_and_compressed_png_xmp():
    """Other tools write simple properties as attributes and may compress PNG's iTXt: both are read."""
    packet = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
              'xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
              f'Iptc4xmpExt:DigitalSourceType="{GENERATED}" xmp:CreatorTool="Other &amp; Co"/>'
              '</rdf:RDF></x:xmpmeta>').encode()
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", packet.decode(), zip=True)
    data = encode(Image.new("RGB", (8, 8)), "PNG", pnginfo=info)
    assert b"CreatorTool" not in data  # zip=True: the packet is stored deflated
    found = read_provenance(data)
    assert found["digital_source_type"] == GENERATED and found["software"] == "Other & Co"
    assert found["model_name"] == "" and found["extra"] == {}


def test_bad_extra_keys_are_refused():
    with pytest.raises(ValueError, match="XML name"):
        Provenance(digital_source_type=EDITED, model_name="m", model_version="v", extra={"has space": "x"})
    with pytest.raises(ValueError, match="XML name"):
        Provenance(digital_source_type=EDITED, model_name="m", model_version="v", extra={"preset": "x"})
