"""A small, hostile photo folder for the validation and preprocessing tests.

``make_hostile_folder(root, clothing_dir)`` lays out ``<root>/<split>/<category>/<file>`` with real
clothing photos (the good files) and one file of every kind that a real catalogue export throws at
us: unusable ones (to be quarantined), convertible ones (to be converted), stray and misplaced files,
and one exact duplicate across splits (a leak). It returns ``{relative path: expected kind}`` for
every file it wrote; a kind is the phrase the validation reason must contain (or "ok" / "leak").

Nothing big is ever allocated: the decompression bomb is a hand-written PNG that only *declares*
a huge size.
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = ("hat", "pants", "shoes")
SPLITS = ("train", "test")
GOOD_PER_CATEGORY = 4  # real photos per category and split

OK = "ok"
LEAK = "leak"  # an exact copy of a good image sits in the other split (both copies get this kind)

# Unusable: status "quarantined", the reason contains the kind.
EMPTY = "empty"
TRUNCATED = "truncated"
NOT_AN_IMAGE = "not an image"
BOMB = "decompression bomb"
TOO_SMALL = "too small"
STRAY = "stray non-image"
OUTSIDE = "outside any category folder"
QUARANTINED_KINDS = (EMPTY, TRUNCATED, NOT_AN_IMAGE, BOMB, TOO_SMALL, STRAY, OUTSIDE)

# Convertible: status "converted", the reason names the conversion.
CMYK = "mode CMYK"
RGBA = "mode RGBA"
PALETTE = "mode P"
GRAY16 = "mode I;16"
ANIMATED = "2 frames"
EXIF_ROTATED = "EXIF orientation 6"
WRONG_EXTENSION = "extension .jpg but content is PNG"
CONVERTED_KINDS = (CMYK, RGBA, PALETTE, GRAY16, ANIMATED, EXIF_ROTATED, WRONG_EXTENSION)

# The EXIF-rotated image: stored landscape EXIF_STORED_SIZE, upright it is portrait (width, height)
# below, dark in its top half and light in its bottom half, so rotation and its direction are checkable.
EXIF_UPRIGHT_SIZE = (48, 72)
EXIF_TOP_LEVEL, EXIF_BOTTOM_LEVEL = 40, 170

BOMB_SIDE = 100_000


# What the upload parser (and so the served edit task) answers each hostile file it refuses: (status, phrase).
REFUSED_ANSWERS = {
    "decompression bomb (100,000 px square PNG)": (413, "decompression bomb"),
    "20,000 px square": (413, "decompression bomb"),
    "zTXt text bomb": (413, "decompression bomb"),
    "iCCP profile bomb": (413, "decompression bomb"),
    "truncated JPEG": (400, "truncated"),
    "PDF labelled PNG": (400, "not an image"),
    "text labelled JPEG": (400, "not an image"),
}

def expected_status(kind: str) -> str:
    if kind in QUARANTINED_KINDS:
        return "quarantined"
    if kind in CONVERTED_KINDS:
        return "converted"
    return "ok"


def png_bytes(width: int, height: int, color_type: int = 2, bit_depth: int = 8, idat: bytes | None = None) -> bytes:
    """A PNG written chunk by chunk with correct CRCs. By default the IDAT holds a single filtered
    zero row only, so a huge declared size costs a few bytes on disk and nothing in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _photos(clothing_dir: Path, split: str, category: str) -> list[Path]:
    return sorted((Path(clothing_dir) / split / category).glob("*.jpg"))


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _exif_rotated_jpeg(path: Path) -> None:
    """Upright: EXIF_UPRIGHT_SIZE portrait, dark top, light bottom, seeded noise (a unique dHash).
    Stored turned a quarter so that orientation 6 (display = stored turned 90 degrees clockwise) restores it."""
    width, height = EXIF_UPRIGHT_SIZE
    rng = np.random.default_rng(6)
    upright = np.empty((height, width, 3), np.float64)
    upright[: height // 2] = EXIF_TOP_LEVEL
    upright[height // 2 :] = EXIF_BOTTOM_LEVEL
    upright += rng.integers(-20, 21, size=upright.shape)
    image = Image.fromarray(upright.clip(0, 255).astype(np.uint8), "RGB")
    stored = image.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise: orientation 6 undoes it
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, "JPEG", quality=95, exif=exif.tobytes())


def make_hostile_folder(root: Path, clothing_dir: Path) -> dict[str, str]:
    root = Path(root)
    kinds: dict[str, str] = {}

    def target(rel: str) -> Path:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # Good files: the first GOOD_PER_CATEGORY real photos of each category in each split.
    # Later photos of the train split are the raw material of the hostile ones (never reused, so
    # no derived file looks like a good one to the near-duplicate check).
    spare: dict[str, list[Path]] = {}
    for split in SPLITS:
        for category in CATEGORIES:
            photos = _photos(clothing_dir, split, category)
            needed = GOOD_PER_CATEGORY + (6 if split == "train" else 0)
            assert len(photos) >= needed, f"{clothing_dir}/{split}/{category}: fewer than {needed} photos"
            for photo in photos[:GOOD_PER_CATEGORY]:
                rel = f"{split}/{category}/{photo.name}"
                shutil.copyfile(photo, target(rel))
                kinds[rel] = OK
            if split == "train":
                spare[category] = photos[GOOD_PER_CATEGORY:]

    # The leak: the first good train hat, copied byte for byte (same name) into test/hat.
    original = next(rel for rel in kinds if rel.startswith("train/hat/"))
    copy = "test/hat/" + original.rsplit("/", 1)[1]
    shutil.copyfile(root / original, target(copy))
    kinds[original] = kinds[copy] = LEAK

    # Unusable files.
    target("train/hat/empty.jpg").write_bytes(b"")
    kinds["train/hat/empty.jpg"] = EMPTY

    whole = spare["hat"][0].read_bytes()
    target("train/hat/truncated.jpg").write_bytes(whole[: len(whole) // 2])
    kinds["train/hat/truncated.jpg"] = TRUNCATED

    target("train/pants/not_a_photo.jpg").write_text("This is the product description, not its photo.\n" * 20)
    kinds["train/pants/not_a_photo.jpg"] = NOT_AN_IMAGE

    noise = np.random.default_rng(1234).integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    target("train/pants/noise.png").write_bytes(noise)
    kinds["train/pants/noise.png"] = NOT_AN_IMAGE

    target("train/shoes/bomb.png").write_bytes(png_bytes(BOMB_SIDE, BOMB_SIDE))
    kinds["train/shoes/bomb.png"] = BOMB

    _rgb(spare["shoes"][0]).resize((8, 8)).save(target("test/hat/tiny.jpg"), "JPEG")
    kinds["test/hat/tiny.jpg"] = TOO_SMALL

    target("train/hat/notes.txt").write_text("shoot notes: reshoot the blue cap\n")
    kinds["train/hat/notes.txt"] = STRAY
    target("train/pants/.DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 2048)
    kinds["train/pants/.DS_Store"] = STRAY
    # At the root it is both outside any category folder and not an image; the latter is reported.
    target("readme.txt").write_text("Exported from the catalogue on Monday.\n")
    kinds["readme.txt"] = STRAY

    shutil.copyfile(spare["shoes"][1], target("train/loose.jpg"))
    kinds["train/loose.jpg"] = OUTSIDE

    # Convertible files.
    _rgb(spare["hat"][1]).convert("CMYK").save(target("train/hat/cmyk.jpg"), "JPEG", quality=90)
    kinds["train/hat/cmyk.jpg"] = CMYK

    rgba = _rgb(spare["pants"][0]).convert("RGBA")
    alpha = np.full(rgba.size[::-1], 255, np.uint8)
    alpha[:, : rgba.size[0] // 4] = 0  # a transparent strip, flattened onto white later
    rgba.putalpha(Image.fromarray(alpha, "L"))
    rgba.save(target("train/pants/rgba.png"), "PNG")
    kinds["train/pants/rgba.png"] = RGBA

    _rgb(spare["shoes"][2]).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(target("train/shoes/palette.png"), "PNG")
    kinds["train/shoes/palette.png"] = PALETTE

    gray = np.asarray(_rgb(spare["pants"][1]).convert("L"), np.float64)
    stretched = (gray - gray.min()) / (gray.max() - gray.min()) * 65535.0
    Image.fromarray(stretched.round().astype(np.uint16)).save(target("test/pants/gray16.png"), "PNG")
    kinds["test/pants/gray16.png"] = GRAY16

    frames = [_rgb(spare["shoes"][3]).convert("P", palette=Image.Palette.ADAPTIVE), _rgb(spare["shoes"][4]).convert("P", palette=Image.Palette.ADAPTIVE)]
    frames[0].save(target("test/shoes/animated.gif"), "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    kinds["test/shoes/animated.gif"] = ANIMATED

    _exif_rotated_jpeg(target("test/hat/exif6.jpg"))
    kinds["test/hat/exif6.jpg"] = EXIF_ROTATED

    _rgb(spare["shoes"][5]).save(target("train/shoes/really_a_png.jpg"), "PNG")
    kinds["train/shoes/really_a_png.jpg"] = WRONG_EXTENSION

    return dict(sorted(kinds.items()))


def gray16_source(clothing_dir: Path) -> np.ndarray:
    """The 8-bit picture the 16-bit PNG was stretched from, stretched the same way onto 0..255."""
    photo = _photos(clothing_dir, "train", "pants")[GOOD_PER_CATEGORY + 1]
    gray = np.asarray(_rgb(photo).convert("L"), np.float64)
    return ((gray - gray.min()) / (gray.max() - gray.min()) * 255.0).round().astype(np.uint8)


# --- Hostile uploads for the served endpoints ------------------------------------------------------------------
# Each builder takes a real photo (a PIL image) and returns the bytes a client would send.


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_chunks(photo: Image.Image, *chunks: tuple[bytes, bytes]) -> bytes:
    """The photo as a PNG with extra chunks right after IHDR (signature 8 bytes + IHDR 25)."""
    data = _encoded(photo, "PNG")
    return data[:33] + b"".join(_chunk(kind, body) for kind, body in chunks) + data[33:]


def text_bomb_png(photo: Image.Image, inflated: int = 64_000_000) -> bytes:
    """A zTXt chunk of 64 MB of zeros, compressed to about 64 KB."""
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(bytes(1_000_000)) for _ in range(inflated // 1_000_000)) + packer.flush()
    return png_with_chunks(photo, (b"zTXt", b"Comment\x00\x00" + body))


def icc_bomb_png(photo: Image.Image, inflated: int = 50_000_000) -> bytes:
    """An ICC profile (iCCP) that inflates to 50 MB."""
    return png_with_chunks(photo, (b"iCCP", b"icc\x00\x00" + zlib.compress(bytes(inflated), 9)))


def _tiff_header_and_ifd(entries: list[tuple[int, int, int, int]], next_ifd: int = 0) -> bytes:
    """EXIF data (little-endian TIFF) with one IFD at offset 8: (tag, type, count, value or offset) entries."""
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *entry) for entry in entries)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", next_ifd)


def exif_loop() -> bytes:
    """IFD0's Exif and GPS pointers and its next-IFD offset all point back at IFD0: a parser that follows them loops."""
    return _tiff_header_and_ifd([(0x0112, 3, 1, 6), (0x8769, 4, 1, 8), (0x8825, 4, 1, 8)], next_ifd=8)


def exif_huge_counts(entries: int = 4000) -> bytes:
    """Thousands of tags, each declaring 4 GB of data: a parser that trusts the counts allocates terabytes."""
    return _tiff_header_and_ifd([(1 + i % 65000, 7, 0xFFFFFFFF, 8) for i in range(entries)])


def jpeg_with_exif(photo: Image.Image, exif: bytes) -> bytes:
    data = _encoded(photo, "JPEG", quality=90)
    app1 = b"Exif\x00\x00" + exif
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:]


def rgb16_png(photo: Image.Image) -> bytes:
    """A 48-bit PNG (16 bits per channel; Pillow cannot write one), written row by row."""
    pixels = np.asarray(photo.convert("RGB"), np.uint16) * 257
    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    return png_bytes(width, height, color_type=2, bit_depth=16, idat=zlib.compress(rows))


def gray16_png(photo: Image.Image) -> bytes:
    return _encoded(Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257), "PNG")


PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def hostile_uploads(photo_bytes: bytes) -> dict[str, tuple[bytes, str]]:
    """{case: (body, Content-Type the client claims)} for every kind of hostile image in issue 13."""
    photo = Image.open(io.BytesIO(photo_bytes)).convert("RGB")
    return {
        "decompression bomb (100,000 px square PNG)": (png_bytes(BOMB_SIDE, BOMB_SIDE), "image/png"),
        "20,000 px square": (png_bytes(20_000, 20_000), "image/png"),
        "20,000 x 1 strip": (_encoded(Image.new("RGB", (20_000, 1), (200, 30, 30)), "PNG"), "image/png"),
        "zTXt text bomb": (text_bomb_png(photo), "image/png"),
        "iCCP profile bomb": (icc_bomb_png(photo), "image/png"),
        "truncated JPEG": (photo_bytes[: len(photo_bytes) // 2], "image/jpeg"),
        "PDF labelled PNG": (PDF, "image/png"),
        "text labelled JPEG": (b"This is the product description, not its photo.\n" * 20, "image/jpeg"),
        "EXIF IFD loop": (jpeg_with_exif(photo, exif_loop()), "image/jpeg"),
        "EXIF with 4 GB tags": (jpeg_with_exif(photo, exif_huge_counts()), "image/jpeg"),
        "16-bit grey PNG": (gray16_png(photo), "image/png"),
        "16-bit RGB PNG": (rgb16_png(photo), "image/png"),
        "CMYK JPEG": (_encoded(photo.convert("CMYK"), "JPEG", quality=90), "image/jpeg"),
        "1x1 PNG": (_encoded(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), "image/png"),
    }
