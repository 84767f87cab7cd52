"""What the studio page does with the served models, free of HTTP: check an upload, run a photo through the chosen
edit operations, generate and regenerate images, and keep every result in a job folder under the page's scratch
folder (nothing a user sends is written anywhere else), zipped on request.

Job folder layout (``<scratch>/jobs/<id>/``)::

    job.json                      kind ("generate" | "edit"), what was asked, one entry per image or photo
    generate: <n>.png             image n of the grid (replaced when regenerated)
    edit:     <n>/source.<ext>    the upload, as sent (validated first)
              <n>/<step>.png      each operation's result (watermark-removal, restore, enhance, look, paint)
              <n>/<preset>.<ext>  each marketplace export that passed its checks

The ZIP of an edit job is laid out per marketplace preset: ``<preset>/<photo>.<ext>`` (``edited/<photo>.png`` when
no preset was chosen) and ``report.json`` with every photo's checks.
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path

from productstudio.errors import BadRequest
from productstudio.web.backends import Answer, Endpoint, call

UPLOAD_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}  # what the edit task decodes and browsers show
# The served edit operations that give one photo back, in this order (watermark letters are sharpest before
# anything else touches the photo, as 'edit restore --watermarks' does).
STEPS = ("watermark-removal", "restore", "enhance", "look", "paint")
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
JOB_ID = re.compile(r"^[0-9a-f]{16}$")


def check_upload(data: bytes, max_bytes: int, max_pixels: int) -> str:
    """The upload's file extension once it is a usable photo; ``BadRequest`` (400, 413 or 415) with a one-line reason
    otherwise. Size and declared pixel count are checked before any pixel is decoded."""
    from productstudio.data.images import BadImage, open_image

    if not data:
        raise BadRequest("the file is empty")
    if len(data) > max_bytes:
        raise BadRequest(f"the file is {len(data) / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:.1f} MB", 413)
    try:
        with open_image(data, max_pixels) as image:
            kind = image.format
    except BadImage as error:
        raise BadRequest(str(error), 413 if str(error).startswith("decompression bomb") else 400) from None
    if kind not in UPLOAD_FORMATS:
        raise BadRequest(f"unsupported image type {kind}: send JPEG, PNG or WebP", 415)
    return UPLOAD_FORMATS[kind]


def safe_stem(filename: str) -> str:
    """A file name's stem reduced to letters, digits, '-' and '_' (it names files inside the job and the ZIP)."""
    stem = Path(filename.replace("\\", "/")).stem
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")[:60] or "photo"


class Job:
    """One job folder: generated images or edited photos, with ``job.json`` saying what each is."""

    def __init__(self, directory: Path):
        self.dir = directory

    @property
    def id(self) -> str:
        return self.dir.name

    def record(self) -> dict:
        return json.loads((self.dir / "job.json").read_text())

    def save(self, record: dict) -> None:
        (self.dir / "job.json").write_text(json.dumps(record, indent=2))

    def file(self, relative: str) -> Path:
        """A file inside the job (``BadRequest`` 404 for anything else, '..' included)."""
        path = (self.dir / relative).resolve()
        if not path.is_relative_to(self.dir.resolve()) or not path.is_file() or path.name == "job.json":
            raise BadRequest(f"no file {relative!r} in job {self.id}", 404)
        return path


class Workspace:
    """The page's scratch folder: one folder per job."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)

    def new_job(self, kind: str, **asked) -> Job:
        job = Job(self.root / "jobs" / secrets.token_hex(8))
        job.dir.mkdir()
        job.save({"kind": kind, **asked, "items": []})
        return job

    def job(self, job_id: str, kind: str | None = None) -> Job:
        path = self.root / "jobs" / job_id
        if not JOB_ID.match(job_id) or not (path / "job.json").is_file():
            raise BadRequest(f"no job {job_id[:20]!r} (it may have been cleared)", 404)
        job = Job(path)
        if kind and job.record()["kind"] != kind:
            raise BadRequest(f"job {job_id} is not a {kind} job", 409)
        return job


# --- generate -----------------------------------------------------------------------------------------------------

def _generate_answer(endpoint: Endpoint, category: str, count: int, seed: int | None) -> dict:
    body = {"category": category, "count": count, **({} if seed is None else {"seed": seed})}
    answer = call(endpoint, json.dumps(body).encode(), {"Content-Type": "application/json"})
    if not answer.ok:
        raise BadRequest(f"the generator refused: {answer.reason()}", answer.status if answer.status < 500 else 502)
    return json.loads(answer.body)


def generate(workspace: Workspace, endpoint: Endpoint, category: str, count: int, seed: int | None) -> dict:
    """A new generate job with ``count`` images of ``category``; returns its record."""
    answer = _generate_answer(endpoint, category, count, seed)
    job = workspace.new_job("generate", category=answer["category"], format=answer["format"])
    items = []
    for index, (image_seed, data) in enumerate(zip(answer["seeds"], answer["images"])):
        (job.dir / f"{index}.{answer['format']}").write_bytes(base64.b64decode(data))
        items.append({"index": index, "seed": image_seed, "file": f"{index}.{answer['format']}",
                      "model": answer["model"], "version": answer["version"]})
    record = {**job.record(), "items": items}
    job.save(record)
    return {"job": job.id, **record}


def regenerate(job: Job, endpoint: Endpoint, index: int) -> dict:
    """Image ``index`` of a generate job drawn again from a fresh seed; returns its new entry."""
    record = job.record()
    if not 0 <= index < len(record["items"]):
        raise BadRequest(f"job {job.id} has no image {index}", 404)
    answer = _generate_answer(endpoint, record["category"]["name"], 1, None)
    item = {"index": index, "seed": answer["seeds"][0], "file": record["items"][index]["file"],
            "model": answer["model"], "version": answer["version"]}
    (job.dir / item["file"]).write_bytes(base64.b64decode(answer["images"][0]))
    record["items"][index] = item
    job.save(record)
    return item


def generate_zip(job: Job) -> bytes:
    record = job.record()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for item in record["items"]:
            suffix = Path(item["file"]).suffix
            archive.writestr(f"{record['category']['name']}-seed{item['seed']}{suffix}", job.file(item["file"]).read_bytes())
        archive.writestr("generation.json", json.dumps(record, indent=2))
    return buffer.getvalue()


# --- edit ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EditChoice:
    """What to do with each photo: operations from ``STEPS`` (in that order), then the marketplace presets."""
    steps: tuple[str, ...]
    presets: tuple[str, ...]

    @classmethod
    def parse(cls, steps: str, presets: str, known_presets: list[str]) -> "EditChoice":
        chosen = tuple(s for s in (x.strip() for x in steps.split(",")) if s)
        unknown = [s for s in chosen if s not in STEPS]
        if unknown:
            raise BadRequest(f"unknown operation {unknown[0][:30]!r} (known: {', '.join(STEPS)})")
        if "look" in chosen and "paint" in chosen:
            raise BadRequest("choose one restyle: the catalogue look or a painterly style")
        wanted = tuple(p for p in (x.strip() for x in presets.split(",")) if p)
        unknown = [p for p in wanted if p not in known_presets]
        if unknown:
            raise BadRequest(f"unknown preset {unknown[0][:30]!r} (known: {', '.join(known_presets)})")
        if not chosen and not wanted:
            raise BadRequest("choose at least one operation or one marketplace preset")
        return cls(tuple(s for s in STEPS if s in chosen), wanted)


def _refusal(answer: Answer, doing: str) -> BadRequest:
    status = answer.status if 400 <= answer.status < 500 else 502
    return BadRequest(f"{doing}: {answer.reason()}", status)


def _as_upload(png: bytes, max_bytes: int) -> tuple[bytes, str]:
    """An operation's PNG as the next operation's upload: re-encoded as a JPEG (quality 95) only when the lossless
    PNG of a big photo would pass the upload limit."""
    if len(png) <= max_bytes:
        return png, "image/png"
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, "JPEG", quality=95)
    return buffer.getvalue(), "image/jpeg"


def edit_photo(job: Job, endpoint: Endpoint, name: str, data: bytes, choice: EditChoice, max_bytes: int,
               max_pixels: int) -> dict:
    """Check one upload, run it through the chosen operations and presets, keep every result in the job; returns
    the photo's entry (``error`` set, and nothing kept, when the upload or an operation is refused)."""
    record = job.record()
    index = len(record["items"])
    entry = {"index": index, "name": name[:200], "stem": safe_stem(name), "error": None, "steps": [], "exports": []}
    try:
        extension = check_upload(data, max_bytes, max_pixels)
        folder = job.dir / str(index)
        folder.mkdir()
        entry["source"] = f"{index}/source.{extension}"
        (job.dir / entry["source"]).write_bytes(data)
        body, content_type = data, f"image/{'jpeg' if extension == 'jpg' else extension}"
        for step in choice.steps:
            answer = call(endpoint, body, {"Content-Type": content_type, "X-Operation": step})
            if not answer.ok:
                raise _refusal(answer, step)
            (folder / f"{step}.png").write_bytes(answer.body)
            entry["steps"].append({"operation": step, "file": f"{index}/{step}.png"})
            body, content_type = _as_upload(answer.body, max_bytes)
        entry["result"] = entry["steps"][-1]["file"] if entry["steps"] else entry["source"]
        if choice.presets:
            entry["exports"], entry["result"] = _export(folder, index, endpoint, body, content_type, choice.presets,
                                                        entry["result"])
    except BadRequest as error:
        entry.update(error=str(error), status=error.status)
    record["items"].append(entry)
    job.save(record)
    return entry


def _export(folder: Path, index: int, endpoint: Endpoint, body: bytes, content_type: str, presets: tuple[str, ...],
            fallback: str) -> tuple[list[dict], str]:
    """The marketplace exports of one photo with each one's checks; the first passing export becomes the result."""
    answer = call(endpoint, body, {"Content-Type": content_type, "X-Operation": "studio", "X-Preset": ",".join(presets),
                                   "Accept": "application/json"})
    if not answer.ok:
        raise _refusal(answer, "studio export")
    report = json.loads(answer.body)
    exports, result = [], None
    for export in report["exports"]:
        entry = {key: export.get(key) for key in ("preset", "passed", "reason", "checks", "upscale")}
        if export.get("image"):
            data = base64.b64decode(export["image"])
            entry["file"] = f"{index}/{export['preset']}.{_extension(data)}"
            (folder / Path(entry["file"]).name).write_bytes(data)
            result = result or entry["file"]
        exports.append(entry)
    return exports, result or fallback


def _extension(data: bytes) -> str:
    if data[:4] == b"\x89PNG":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "jpg"


def edit_zip(job: Job) -> bytes:
    """The job's results laid out per marketplace preset, with ``report.json`` (every photo, refused ones too)."""
    record = job.record()
    buffer = io.BytesIO()
    names: set[str] = set()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for item in record["items"]:
            if item["error"]:
                continue
            stem = item["stem"] if item["stem"] not in names else f"{item['stem']}-{item['index']}"
            names.add(stem)
            files = [(e["preset"], e["file"]) for e in item["exports"] if e.get("file")] or [("edited", item["result"])]
            for folder, relative in files:
                archive.writestr(f"{folder}/{stem}{Path(relative).suffix}", job.file(relative).read_bytes())
        report = [{key: item.get(key) for key in ("name", "error", "steps", "exports")} for item in record["items"]]
        archive.writestr("report.json", json.dumps({"choice": {k: record.get(k) for k in ("steps", "presets")},
                                                    "photos": report}, indent=2))
    return buffer.getvalue()
