"""The inference API's contract, free of TorchServe: parse and check a request, draw the latents, generate a
batch, encode the images, shape the JSON answer. The TorchServe handler (``handler.py``) only adapts this.

Request (JSON object)::

    {"category": "Sneaker" | 7, "count": 1..64 (default 1), "seed": 0..2**53 (optional), "format": "png"|"jpeg"|"webp"}

Answer: ``{"model", "version", "category": {"id", "name"}, "format", "count", "seeds", "images": [base64, ...]}``;
image ``i`` is drawn from ``seeds[i]`` (the given seed plus i), so any single image can be made again alone.
With ``count`` 1 and ``Accept: image/png`` (or jpeg/webp) the answer is the image itself.

Bad input raises ``BadRequest`` with an HTTP status and a one-line reason.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
from dataclasses import dataclass

FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
ALIASES = {"jpg": "jpeg"}
FIELDS = ("category", "count", "seed", "format")
MAX_COUNT = 64
MAX_SEED = 2**53  # exact in every JSON reader (JavaScript numbers included)


from productstudio.errors import BadRequest  # noqa: E402,F401  (re-exported for the handler)


@dataclass(frozen=True)
class GenerateRequest:
    category: int
    seeds: tuple[int, ...]
    format: str
    raw: bool  # answer with the image bytes instead of JSON

    @property
    def count(self) -> int:
        return len(self.seeds)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a number


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, (bytes, bytearray)) else repr(bytes(value[:40]))
    return text if len(text) <= 40 else text[:37] + "..."


def decode_body(body) -> dict:
    """The request body as a dict: TorchServe hands over a decoded dict for application/json, else bytes/str."""
    if isinstance(body, (bytes, bytearray, str)):
        try:
            body = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise BadRequest('the body is not JSON; send {"category": ..., "count": ...} with Content-Type: application/json') from None
    if not isinstance(body, dict):
        raise BadRequest(f"expected a JSON object like {{\"category\": \"Sneaker\", \"count\": 4}}, got {_short(body)}")
    return body


def parse_category(value, categories: list[str]) -> int:
    if _is_int(value):
        if 0 <= value < len(categories):
            return value
        raise BadRequest(f"category id {value} is out of range 0..{len(categories) - 1}")
    if isinstance(value, str):
        lowered = [name.lower() for name in categories]
        if value.strip().lower() in lowered:
            return lowered.index(value.strip().lower())
        raise BadRequest(f"unknown category {_short(value)} (known: {', '.join(categories)})")
    raise BadRequest(f"category must be a name or an id, got {_short(value)}")


def accepted_image_type(accept: str | None) -> str | None:
    """The image format an Accept header asks for ('png', ...), '*' for image/*, None for JSON (or anything)."""
    if not accept:
        return None
    first = accept.split(",")[0].split(";")[0].strip().lower()
    if first == "image/*":
        return "*"
    for name, media in FORMATS.items():
        if first == media:
            return name
    return None


def parse_request(body, categories: list[str], accept: str | None = None, max_count: int = MAX_COUNT,
                  random_seed=lambda: secrets.randbelow(2**31)) -> GenerateRequest:
    """Check one request; raises ``BadRequest`` (400, or 406 for an Accept it cannot meet)."""
    body = decode_body(body)
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r} (allowed: {', '.join(FIELDS)})")
    if "category" not in body:
        raise BadRequest("missing field 'category' (a name or an id)")
    category = parse_category(body["category"], categories)

    count = body.get("count", 1)
    if not _is_int(count):
        raise BadRequest(f"count must be an integer 1..{max_count}, got {_short(count)}")
    if not 1 <= count <= max_count:
        raise BadRequest(f"count {count} is out of range 1..{max_count}")

    seed = body.get("seed")
    if seed is None:
        seed = random_seed()
    elif not _is_int(seed) or not 0 <= seed <= MAX_SEED - count:
        raise BadRequest(f"seed must be an integer 0..{MAX_SEED - count}, got {_short(seed)}")

    fmt = body.get("format", "png")
    if not isinstance(fmt, str) or ALIASES.get(fmt.lower(), fmt.lower()) not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}, got {_short(fmt)}")
    fmt = ALIASES.get(fmt.lower(), fmt.lower())

    wanted = accepted_image_type(accept)
    if wanted is not None and count != 1:
        raise BadRequest(f"Accept: {accept} returns one image; ask for count 1 or accept application/json", 406)
    if wanted not in (None, "*"):
        fmt = wanted
    return GenerateRequest(category, tuple(range(seed, seed + count)), fmt, raw=wanted is not None)


def latents(seeds, latent_dim: int):
    """One latent per seed, each from its own generator: an image does not depend on its batch."""
    import torch

    return torch.stack([torch.randn(latent_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


def generate(model, requests: list[GenerateRequest], latent_dim: int) -> list:
    """All requests of a batch in one forward pass; returns one (count, C, H, W) tensor in [-1, 1] per request."""
    import torch

    if not requests:
        return []
    z = torch.cat([latents(r.seeds, latent_dim) for r in requests])
    y = torch.cat([torch.full((r.count,), r.category, dtype=torch.long) for r in requests])
    with torch.inference_mode():
        images = model(z, y)
    return list(torch.split(images, [r.count for r in requests]))


def encode(images, fmt: str) -> list[bytes]:
    """(N, C, H, W) in [-1, 1] -> one encoded file per image (grey or RGB)."""
    import numpy as np
    import torch
    from PIL import Image

    pixels = ((images.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    files = []
    for array in pixels:
        image = Image.fromarray(array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0)))
        buffer = io.BytesIO()
        if fmt == "webp":
            image.save(buffer, format="WEBP", lossless=True)
        elif fmt == "jpeg":
            image.save(buffer, format="JPEG", quality=95)
        else:
            image.save(buffer, format="PNG")
        files.append(buffer.getvalue())
    return files


def answer(request: GenerateRequest, files: list[bytes], categories: list[str], model: str, version: str) -> dict:
    return {
        "model": model,
        "version": version,
        "category": {"id": request.category, "name": categories[request.category]},
        "format": request.format,
        "media_type": FORMATS[request.format],
        "count": request.count,
        "seeds": list(request.seeds),
        "images": [base64.b64encode(data).decode("ascii") for data in files],
    }


def error_body(error: BadRequest) -> dict:
    return {"code": error.status, "type": "BadRequest", "message": error.message}
