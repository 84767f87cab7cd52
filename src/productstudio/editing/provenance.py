"""Machine-readable provenance inside every edited or generated image: an XMP packet.

    p = Provenance(digital_source_type=EDITED, model_name="u2netp", model_version="...", source_sha256=sha,
                   preset="amazon-main", created="2026-11-30T12:00:00+00:00")   # created: injectable, default now
    packet = xmp_packet(p)                # bytes, UTF-8, ready for Pillow's save(..., xmp=packet) (JPEG, WebP)
    data = with_provenance(png_bytes, p)  # or embed_xmp(data, packet): into an already encoded JPEG/PNG/WebP
    read_provenance(data)                 # -> the fields as a dict; Provenance(**read_provenance(data)) == p

What the packet says (x:xmpmeta / rdf:RDF / one rdf:Description):
    Iptc4xmpExt:DigitalSourceType     the IPTC NewsCodes URI: compositeWithTrainedAlgorithmicMedia for an edit,
                                      trainedAlgorithmicMedia for a generated image
    Iptc4xmpExt:AISystemUsed          model_name      (IPTC Photo Metadata 2025.1 AI properties)
    Iptc4xmpExt:AISystemVersionUsed   model_version
    xmp:CreatorTool, xmp:CreateDate   software, created
    dc:description                    one human-readable sentence (not read back)
    ps:sourceSha256, ps:preset, ps:*  our own namespace: the source photo's sha256, the preset, extra key/values

``embed_xmp`` never re-encodes pixels: it splices the container. JPEG: an APP1 XMP segment after SOI (after a
leading JFIF APP0 / Exif APP1, which must stay first); PNG: an iTXt ``XML:com.adobe.xmp`` chunk after IHDR; WebP: an
``XMP `` chunk, turning a simple (VP8/VP8L) file into the extended (VP8X) form. Any XMP already there is replaced.
Note that Pillow 13's PNG encoder ignores ``save(..., xmp=)``: for PNG, encode first, then ``embed_xmp``.

``read_provenance`` parses the containers itself (no pixel decoding, so a huge or hostile file costs nothing) and
raises ``DataError`` for a file with no XMP, XMP without a DigitalSourceType, or XMP that is not plain XML (a DOCTYPE
or entity declaration is refused, never expanded). XML cannot carry control characters: ``xmp_packet`` writes each
as U+FFFD, so values with them do not round-trip exactly (nor does a carriage return, which XML reads as a newline).
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from xml.etree import ElementTree as ET

from productstudio import __version__
from productstudio.errors import DataError

IPTC_SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
EDITED = IPTC_SOURCE_TYPES + "compositeWithTrainedAlgorithmicMedia"
GENERATED = IPTC_SOURCE_TYPES + "trainedAlgorithmicMedia"

NAMESPACES = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "dc": "http://purl.org/dc/elements/1.1/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "ps": "https://productstudio.dev/ns/1.0/",
}
XML_NS = "http://www.w3.org/XML/1998/namespace"

# Which XMP property holds which Provenance field (the extras are every other ps: property).
STANDARD_FIELDS = {
    "digital_source_type": ("Iptc4xmpExt", "DigitalSourceType"),
    "model_name": ("Iptc4xmpExt", "AISystemUsed"),
    "model_version": ("Iptc4xmpExt", "AISystemVersionUsed"),
    "software": ("xmp", "CreatorTool"),
    "created": ("xmp", "CreateDate"),
    "source_sha256": ("ps", "sourceSha256"),
    "preset": ("ps", "preset"),
}
EXTRA_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")  # an XML name without a colon: it becomes ps:<key>
NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

JPEG_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
JPEG_SEGMENT_MAX = 0xFFFF - 2  # a segment's payload: its 2-byte length counts itself
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"
WEBP_XMP_FLAG = 0x04
WEBP_ALPHA_FLAG = 0x10
PACKET_LIMIT = 1 << 20  # read_provenance refuses larger XMP: ours are about 2 KB


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class Provenance:
    """How an image was made. ``digital_source_type`` takes ``EDITED``, ``GENERATED`` or another IPTC code (a bare
    code such as "trainedAlgorithmicMedia" is expanded to its URI)."""

    digital_source_type: str
    model_name: str
    model_version: str
    software: str = f"Product Studio {__version__}"
    source_sha256: str = ""  # of the source photo, for edits
    preset: str = ""
    created: str = field(default_factory=now_iso)  # ISO 8601; pass a fixed value for reproducible files
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.digital_source_type.startswith(("http://", "https://")):
            self.digital_source_type = IPTC_SOURCE_TYPES + self.digital_source_type
        reserved = {local for prefix, local in STANDARD_FIELDS.values() if prefix == "ps"}
        for key in self.extra:
            if not EXTRA_KEY.fullmatch(key) or key in reserved:
                raise ValueError(f"provenance extra key {key!r} must be an XML name (letters, digits, _ . -) "
                                 f"other than {sorted(reserved)}")
        self.extra = {key: str(value) for key, value in self.extra.items()}


def xml_text(value: str) -> str:
    return NOT_XML_CHAR.sub("\ufffd", value)


def describe(p: Provenance) -> str:
    made = "Edited" if p.digital_source_type == EDITED else (
        "Generated" if p.digital_source_type == GENERATED else "Made")
    sentence = f"{made} by {p.software} with {p.model_name}"
    return sentence + (f" (preset {p.preset})" if p.preset else "")


def xmp_packet(p: Provenance) -> bytes:
    """The XMP packet (UTF-8 bytes) for ``p``: every value escaped (``&``, ``<``, ``>``; no character XML forbids).

    Written as text rather than through ElementTree, which took a third of a served image's time besides the
    model (the served generate task stamps every image); ``parse_packet`` reads it with ElementTree.
    """
    properties = [(prefix, local, getattr(p, name)) for name, (prefix, local) in STANDARD_FIELDS.items()
                  if getattr(p, name)]
    properties += [("ps", key, value) for key, value in p.extra.items()]
    used = {"x", "rdf", "dc"} | {prefix for prefix, _, _ in properties}
    declarations = " ".join(f'xmlns:{prefix}="{NAMESPACES[prefix]}"' for prefix in sorted(used))
    lines = [f"<x:xmpmeta {declarations}>", " <rdf:RDF>", '  <rdf:Description rdf:about="">']
    lines += [f"   <{prefix}:{local}>{_escape(value)}</{prefix}:{local}>" if value else f"   <{prefix}:{local} />"
              for prefix, local, value in properties]
    lines += ["   <dc:description>", "    <rdf:Alt>",
              f'     <rdf:li xml:lang="x-default">{_escape(describe(p))}</rdf:li>',
              "    </rdf:Alt>", "   </dc:description>", "  </rdf:Description>", " </rdf:RDF>", "</x:xmpmeta>"]
    body = "\n".join(lines)
    # The xpacket wrapper lets scanners find the packet; "w" marks it writable in place by other tools.
    return f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n{body}\n<?xpacket end="w"?>'.encode()


def _escape(value: str) -> str:
    return xml_text(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def parse_packet(packet: bytes) -> dict:
    """The Provenance fields from an XMP packet (attributes or elements of any rdf:Description)."""
    if len(packet) > PACKET_LIMIT:
        raise DataError(f"the XMP packet is {len(packet)} bytes, over the {PACKET_LIMIT} this reader accepts")
    if b"<!DOCTYPE" in packet or b"<!ENTITY" in packet:
        raise DataError("the XMP packet declares a DOCTYPE or entities: refused (not plain XMP)")
    try:
        root = ET.fromstring(packet)
    except ET.ParseError as error:
        raise DataError(f"the XMP packet is not well-formed XML ({error})") from None
    values: dict[str, str] = {}
    rdf_description = f"{{{NAMESPACES['rdf']}}}Description"
    for description in root.iter(rdf_description):
        values.update(description.attrib)
        for child in description:
            if len(child) == 0:  # simple properties only; dc:description (an rdf:Alt) is for people
                values[child.tag] = child.text or ""
    found = {name: values.get(f"{{{NAMESPACES[prefix]}}}{local}", "")
             for name, (prefix, local) in STANDARD_FIELDS.items()}
    if not found["digital_source_type"]:
        raise DataError("the XMP has no Iptc4xmpExt:DigitalSourceType: no provenance")
    ours = f"{{{NAMESPACES['ps']}}}"
    known = {f"{{{NAMESPACES[prefix]}}}{local}" for prefix, local in STANDARD_FIELDS.values()}
    found["extra"] = {tag[len(ours):]: value for tag, value in values.items()
                      if tag.startswith(ours) and tag not in known}
    return found


def read_provenance(data: bytes) -> dict:
    """The provenance of an encoded JPEG, PNG or WebP file, as a dict of ``Provenance``'s fields."""
    packet = find_xmp(data)
    if packet is None:
        raise DataError(f"no XMP metadata in this {image_format(data)} file: it carries no provenance")
    return parse_packet(packet)


def with_provenance(data: bytes, p: Provenance) -> bytes:
    """``data`` (an encoded JPEG, PNG or WebP) with ``p``'s XMP packet inside; pixels are not re-encoded."""
    return embed_xmp(data, xmp_packet(p))


# --- containers -------------------------------------------------------------------------------------------------

def image_format(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == PNG_SIGNATURE:
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    raise DataError("not a JPEG, PNG or WebP file: provenance is read and written only for those")


def find_xmp(data: bytes) -> bytes | None:
    kind = image_format(data)
    if kind == "JPEG":
        for marker, payload in jpeg_segments(data)[0]:
            if marker == 0xE1 and payload.startswith(JPEG_XMP_HEADER):
                return payload[len(JPEG_XMP_HEADER):]
    elif kind == "PNG":
        for chunk_type, payload in png_chunks(data):
            if chunk_type == b"iTXt" and payload.startswith(PNG_XMP_KEYWORD + b"\x00"):
                return png_itxt_text(payload)
    else:
        for fourcc, payload in webp_chunks(data):
            if fourcc == b"XMP ":
                return payload
    return None


def embed_xmp(data: bytes, packet: bytes) -> bytes:
    """``data`` with ``packet`` as its only XMP, spliced into the container (no re-encoding)."""
    kind = image_format(data)
    if kind == "JPEG":
        return jpeg_with_xmp(data, packet)
    if kind == "PNG":
        return png_with_xmp(data, packet)
    return webp_with_xmp(data, packet)


def jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The marker segments between SOI and the first SOS as (marker, payload), and where SOS starts."""
    segments, pos = [], 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise DataError("a damaged JPEG: a marker segment does not start with 0xFF")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: entropy-coded data follows, kept as it is
            return segments, pos
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            segments.append((marker, b""))
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if length < 2 or pos + 2 + length > len(data):
            raise DataError("a damaged JPEG: a marker segment runs past the end of the file")
        segments.append((marker, data[pos + 4:pos + 2 + length]))
        pos += 2 + length
    raise DataError("a damaged JPEG: no image data (SOS) found")


def jpeg_with_xmp(data: bytes, packet: bytes) -> bytes:
    payload = JPEG_XMP_HEADER + packet
    if len(payload) > JPEG_SEGMENT_MAX:
        raise ValueError(f"an XMP packet of {len(packet)} bytes does not fit one JPEG APP1 segment")
    segments, scan_at = jpeg_segments(data)
    segments = [(m, p) for m, p in segments if not (m == 0xE1 and p.startswith(JPEG_XMP_HEADER))]
    # JFIF's APP0 and Exif's APP1 must come first when present; XMP goes right after them.
    leading = 0
    while leading < len(segments) and (segments[leading][0] == 0xE0 or (
            segments[leading][0] == 0xE1 and segments[leading][1].startswith(b"Exif\x00"))):
        leading += 1
    segments.insert(leading, (0xE1, payload))
    out = bytearray(b"\xff\xd8")
    for marker, body in segments:
        out += bytes((0xFF, marker))
        if marker != 0x01 and not 0xD0 <= marker <= 0xD7:
            out += struct.pack(">H", len(body) + 2) + body
    return bytes(out) + data[scan_at:]


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length, chunk_type = struct.unpack(">I4s", data[pos:pos + 8])
        if pos + 12 + length > len(data):
            raise DataError("a damaged PNG: a chunk runs past the end of the file")
        chunks.append((chunk_type, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
        if chunk_type == b"IEND":
            return chunks
    raise DataError("a damaged PNG: no IEND chunk")


def png_chunk(chunk_type: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + chunk_type + payload + struct.pack(">I", zlib.crc32(chunk_type + payload))


def png_itxt_text(payload: bytes) -> bytes:
    """The text of an iTXt chunk: keyword NUL, compression flag and method, language NUL, translated keyword NUL."""
    keyword_end = payload.index(b"\x00")
    compressed = payload[keyword_end + 1]
    rest = payload[keyword_end + 3:]
    language_end = rest.index(b"\x00")
    translated_end = rest.index(b"\x00", language_end + 1)
    text = rest[translated_end + 1:]
    if compressed:
        try:
            # Bounded: a compressed bomb stops at the packet limit instead of filling memory.
            text = zlib.decompressobj().decompress(text, PACKET_LIMIT + 1)
        except zlib.error as error:
            raise DataError(f"a damaged PNG: the XMP chunk does not decompress ({error})") from None
    return text


def png_with_xmp(data: bytes, packet: bytes) -> bytes:
    chunks = [(t, p) for t, p in png_chunks(data)
              if not (t == b"iTXt" and p.startswith(PNG_XMP_KEYWORD + b"\x00"))]
    if not chunks or chunks[0][0] != b"IHDR":
        raise DataError("a damaged PNG: it does not start with IHDR")
    # Uncompressed, no language, before IDAT: where the XMP specification puts it.
    xmp = (b"iTXt", PNG_XMP_KEYWORD + b"\x00\x00\x00" + b"\x00" + b"\x00" + packet)
    chunks.insert(1, xmp)
    return PNG_SIGNATURE + b"".join(png_chunk(t, p) for t, p in chunks)


def webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    (riff_size,) = struct.unpack("<I", data[4:8])
    end = min(len(data), 8 + riff_size)
    chunks, pos = [], 12
    while pos + 8 <= end:
        fourcc, size = struct.unpack("<4sI", data[pos:pos + 8])
        if pos + 8 + size > end:
            raise DataError("a damaged WebP: a chunk runs past the end of the file")
        chunks.append((fourcc, data[pos + 8:pos + 8 + size]))
        pos += 8 + size + (size & 1)  # chunks are padded to an even size
    if not chunks:
        raise DataError("a damaged WebP: no chunks")
    return chunks


def webp_canvas(fourcc: bytes, payload: bytes) -> tuple[int, int, bool]:
    """(width, height, has alpha) of a simple WebP's only image chunk."""
    if fourcc == b"VP8L":
        if len(payload) < 5 or payload[0] != 0x2F:
            raise DataError("a damaged WebP: bad VP8L header")
        (bits,) = struct.unpack("<I", payload[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)
    if fourcc == b"VP8 ":
        if len(payload) < 10 or payload[3:6] != b"\x9d\x01\x2a":
            raise DataError("a damaged WebP: bad VP8 key frame header")
        width, height = struct.unpack("<HH", payload[6:10])
        return width & 0x3FFF, height & 0x3FFF, False  # lossy with alpha is always extended (ALPH chunk)
    raise DataError(f"a damaged WebP: unexpected first chunk {fourcc!r}")


def webp_with_xmp(data: bytes, packet: bytes) -> bytes:
    chunks = [(f, p) for f, p in webp_chunks(data) if f != b"XMP "]
    if chunks[0][0] == b"VP8X":
        header = bytearray(chunks[0][1])
        header[0] |= WEBP_XMP_FLAG
        chunks[0] = (b"VP8X", bytes(header))
    else:
        width, height, alpha = webp_canvas(*chunks[0])
        flags = WEBP_XMP_FLAG | (WEBP_ALPHA_FLAG if alpha else 0)
        vp8x = bytes((flags, 0, 0, 0)) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        chunks.insert(0, (b"VP8X", vp8x))
    chunks.append((b"XMP ", packet))  # metadata goes after the image data
    body = b"WEBP" + b"".join(struct.pack("<4sI", f, len(p)) + p + b"\x00" * (len(p) & 1) for f, p in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body
