"""Image helpers shared by validation and preprocessing: defensive opening, mode conversion, resizing."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# A truncated file must fail loudly, never decode as half an image.
ImageFile.LOAD_TRUNCATED_IMAGES = False

EXIF_ORIENTATION = 0x0112


class BadImage(Exception):
    """An image that cannot be used; the message is the one-line reason for the report."""


def open_image(path: str | Path | bytes, max_pixels: int) -> Image.Image:
    """Open and fully decode an image (a file, or an upload's bytes), checking the declared pixel count
    *before* decoding.

    Raises BadImage with a one-line reason for anything unusable.
    """
    path = io.BytesIO(path) if isinstance(path, (bytes, bytearray)) else Path(path)
    with warnings.catch_warnings():
        # We enforce our own max_pixels from the header; Pillow's warning would be noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
            raise BadImage(f"decompression bomb: declares more than Pillow's hard limit of {limit:,} pixels") from None
        except UnidentifiedImageError:
            raise BadImage("not an image: no known image format in the file's content") from None
        except OSError as error:
            raise BadImage(f"unreadable: {error}") from None
        except ValueError as error:
            # Pillow caps what compressed PNG text, XMP and ICC chunks may inflate to and raises ValueError past
            # the cap (a zTXt/iCCP bomb), before any pixel; anything else it raises as ValueError is unreadable.
            bomb = "too large" in str(error) or "Too much memory" in str(error)
            raise BadImage(f"{'decompression bomb' if bomb else 'unreadable'}: {error}") from None
        width, height = image.size
        if width * height > max_pixels:
            image.close()
            raise BadImage(f"decompression bomb: declares {width}x{height} = {width * height:,} pixels > max_pixels {max_pixels:,}")
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            image.close()
            raise BadImage(f"truncated or corrupt image data ({error})") from None
    return image


def orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # malformed EXIF must not make a good image unusable
        return 1


def to_mode(image: Image.Image, mode: str, background: int = 255) -> Image.Image:
    """Convert any Pillow mode to "L" or "RGB" faithfully.

    16-bit and 32-bit integer images are scaled (Pillow's own convert would clip them at 255);
    transparency is flattened onto a plain background (product photos are shot on white).
    """
    if image.mode == mode:
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array * (255.0 / top), 0, 255).round().astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (background,) * 3 + (255,))
        image = Image.alpha_composite(flat, rgba)
    return image.convert(mode)


def upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation so the product stands as the photographer saw it."""
    return ImageOps.exif_transpose(image)


def fit_square(image: Image.Image, size: int, method: str, pad_value: int = 255) -> Image.Image:
    """Aspect-preserving resize to size x size: 'pad' letterboxes, 'crop' takes the centre."""
    if method == "crop":
        return ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS)
    fill = pad_value if image.mode == "L" else (pad_value,) * 3
    return ImageOps.pad(image, (size, size), method=Image.Resampling.LANCZOS, color=fill)


def centre_crop(image: np.ndarray, size: int) -> np.ndarray | None:
    """The central size x size square of an (H, W, ...) array, or None when the image is smaller."""
    height, width = image.shape[:2]
    if min(height, width) < size:
        return None
    top, left = (height - size) // 2, (width - size) // 2
    return np.ascontiguousarray(image[top:top + size, left:left + size])


def laplacian_variance(gray: np.ndarray) -> np.ndarray:
    """Blur score of (N, H, W) or (H, W) grey images: variance of the 4-neighbour Laplacian (low = blurry)."""
    g = gray.astype(np.float32)
    lap = -4 * g[..., 1:-1, 1:-1] + g[..., :-2, 1:-1] + g[..., 2:, 1:-1] + g[..., 1:-1, :-2] + g[..., 1:-1, 2:]
    return lap.reshape(*lap.shape[:-2], -1).var(axis=-1)


def dhash(gray: Image.Image, bits: int = 16) -> str:
    """Difference hash (bits x bits comparisons) as hex: equal hashes mean near-identical pictures.

    16x16 rather than the usual 8x8: on 28x28 product images an 8x8 hash merges thousands of
    distinct items (measured on Fashion-MNIST: 11k false groups at 8x8, 21 real ones at 16x16).
    """
    small = np.asarray(gray.convert("L").resize((bits + 1, bits), Image.Resampling.BILINEAR), dtype=np.int16)
    return np.packbits((small[:, 1:] > small[:, :-1]).ravel()).tobytes().hex()
