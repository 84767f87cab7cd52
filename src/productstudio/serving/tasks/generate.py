"""The ``generate`` task, free of TorchServe: parse and check a request, draw the latents, generate a batch,
encode the images, shape the JSON answer. ``GenerateTask`` is what the generic handler (``serving/handler.py``)
calls; the module's functions are its steps.

Request (JSON object)::

    {"category": "Sneaker" | 7, "count": 1..64 (default 1), "seed": 0..2**53 (optional), "format": "png"|"jpeg"|"webp"}

Answer: ``{"model", "version", "category": {"id", "name"}, "format", "count", "seeds", "images": [base64, ...]}``;
image ``i`` is drawn from ``seeds[i]`` (the given seed plus i), so any single image can be made again alone.
Every image carries XMP provenance (IPTC DigitalSourceType ``trainedAlgorithmicMedia``, the model, its version,
the category and the seed).
With ``count`` 1 and ``Accept: image/png`` (or jpeg/webp) the answer is the image itself.

Bad input raises ``BadRequest`` with an HTTP status and a one-line reason.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from productstudio.errors import BadRequest, MissingInput, ParamsError
from productstudio.imaging import FORMATS

ALIASES = {"jpg": "jpeg"}
FIELDS = ("category", "count", "seed", "format")
MAX_COUNT = 64
MAX_SEED = 2**53  # exact in every JSON reader (JavaScript numbers included)


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


def generate(model, requests: list[GenerateRequest], latent_dim: int) -> list:
    """All requests of a batch in one forward pass; returns one (count, C, H, W) tensor in [-1, 1] per request."""
    import torch

    from productstudio.models.sampling import latents_from_seeds

    if not requests:
        return []
    z = torch.cat([latents_from_seeds(r.seeds, latent_dim) for r in requests])
    y = torch.cat([torch.full((r.count,), r.category, dtype=torch.long) for r in requests])
    with torch.inference_mode():
        images = model(z, y)
    return list(torch.split(images, [r.count for r in requests]))


def encode(images, fmt: str) -> list[bytes]:
    """(N, C, H, W) in [-1, 1] -> one encoded file per image (grey or RGB)."""
    from productstudio.imaging import encode as encode_image, to_uint8_array

    return [encode_image(pixels, fmt) for pixels in to_uint8_array(images)]


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


class GenerateTask:
    """The task's contract with the handler: ``load`` once per worker, then per batch ``parse`` each request
    (``BadRequest`` for a bad one), ``run`` the valid ones together, ``respond`` to each: (media type, body)."""

    name = "generate"

    def __init__(self, model, info: dict, model_name: str, version: str):
        from productstudio.models.io import category_names

        self.model, self.info = model, info
        self.latent_dim = int(info["model"]["latent_dim"])
        self.categories = category_names(info)
        self.model_name, self.version = model_name, version

    @classmethod
    def load(cls, model_dir: Path, model_name: str, version: str, variant: str = "fp32", threads: int = 0) -> "GenerateTask":
        from productstudio.models.loader import INT8_ONNX, load

        model, info = load(model_dir, "cpu", threads=threads, kind=INT8_ONNX if variant == "int8" else None)
        return cls(model, info, model_name, version)

    @staticmethod
    def archive_files(model_dir: Path, variant: str) -> list[Path]:
        """What a .mar of this task holds beside the handler: the variant's weights and config.json."""
        from productstudio.models.io import CONFIG, WEIGHTS
        from productstudio.models.onnx_generator import INT8_FILE

        variants = {"fp32": WEIGHTS, "int8": INT8_FILE}
        if variant not in variants:
            raise ParamsError(f"variant must be one of {', '.join(variants)}, got {variant!r}")
        weights = model_dir / variants[variant]
        if not weights.exists():
            hint = " (run productstudio quantize)" if variant == "int8" else ""
            raise MissingInput(f"{model_dir}: no {weights.name}; not a {variant} generator{hint}")
        return [weights, model_dir / CONFIG]

    def parse(self, body, accept: str | None, options: dict | None = None) -> GenerateRequest:
        return parse_request(body, self.categories, accept=accept)

    def run(self, requests: list[GenerateRequest]) -> list:
        return generate(self.model, requests, self.latent_dim)

    def respond(self, request: GenerateRequest, images) -> tuple[str, object]:
        from productstudio.editing.provenance import GENERATED, Provenance, with_provenance

        category = self.categories[request.category]
        files = [with_provenance(data, Provenance(GENERATED, model_name=self.model_name, model_version=self.version,
                                                  extra={"category": category, "seed": str(seed)}))
                 for data, seed in zip(encode(images, request.format), request.seeds)]
        if request.raw:
            return FORMATS[request.format], files[0]
        return "application/json", answer(request, files, self.categories, self.model_name, self.version)
