"""The studio page: one HTML page (``static/``) and a small JSON API in front of the served models and the registry.

FastAPI because it is already in the stack (MLflow's server brings it) and serves a plain page
that Chromium drives in the tests; Gradio would add a large frontend of its own for three simple views.

    app = create_app(PageConfig(...))          # uvicorn.run(app, host="127.0.0.1", port=8075)

Every route but ``/login`` needs the page's token: the ``studio_token`` cookie that ``/login?token=...`` sets
(HttpOnly, SameSite=Strict), or ``Authorization: Bearer <token>``. An upload is refused on its Content-Length and
again while it is read, before a byte is kept, then checked for its type and declared pixel count before decoding.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from productstudio.errors import BadRequest, MissingInput, ServiceError, UserError
from productstudio.web import jobs
from productstudio.web.backends import Endpoint, categories

STATIC = Path(__file__).parent / "static"
COOKIE = "studio_token"
MEDIA = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}


@dataclass
class PageConfig:
    token: str
    workspace: jobs.Workspace
    generator: Callable[[], Endpoint]  # resolved per request: a canary may start or be rolled back meanwhile
    editor: Callable[[], Endpoint]
    edit_offer: dict  # serving.tasks.edit.archive_offer of the served edit archive
    model_name: str  # the registered generator (the Models view)
    canary_state: Path
    max_upload_bytes: int
    max_pixels: int
    lock: threading.Lock = field(default_factory=threading.Lock)  # one edit job's record at a time


def _error(error: UserError):
    status = getattr(error, "status", None) or (503 if isinstance(error, ServiceError) else 409 if isinstance(error, MissingInput) else 400)
    return JSONResponse({"error": str(error)}, status_code=status)


def create_app(config: PageConfig):
    app = FastAPI(title="Product Studio", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if request.url.path == "/login":
            return await call_next(request)
        given = request.cookies.get(COOKIE) or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not given or not secrets.compare_digest(given, config.token):
            if request.url.path == "/":
                return Response("Product Studio: open the URL that 'productstudio web' printed (it carries the token).\n",
                                status_code=401, media_type="text/plain")
            return JSONResponse({"error": "missing or wrong token: open the URL that 'productstudio web' printed"}, 401)
        return await call_next(request)

    @app.exception_handler(UserError)
    async def user_error(_request, error: UserError):
        return _error(error)

    @app.get("/login")
    def login(token: str = ""):
        if not secrets.compare_digest(token, config.token):
            return Response("wrong token\n", status_code=401, media_type="text/plain")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.get("/")
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}")
    def static(name: str):
        path = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()} or name == "index.html":
            raise BadRequest(f"no static file {name[:40]!r}", 404)
        return FileResponse(path, media_type={"js": "text/javascript", "css": "text/css"}.get(path.suffix[1:]))

    @app.get("/api/info")
    def info():
        generator = config.generator()
        return {"generator": {"via": generator.via, "categories": categories(generator)},
                "editor": {"via": config.editor().via, **config.edit_offer},
                "limits": {"max_upload_bytes": config.max_upload_bytes, "max_pixels": config.max_pixels}}

    # --- generate ---
    @app.post("/api/generate")
    async def generate(request: Request):
        body = await _json(request)
        count, seed = body.get("count", 4), body.get("seed")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 64:
            raise BadRequest("count must be a whole number from 1 to 64")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise BadRequest("seed must be a whole number of 0 or more, or left empty for a random one")
        return await run_in_threadpool(jobs.generate, config.workspace, config.generator(), str(body.get("category", "")),
                                       count, seed)

    @app.post("/api/generate/{job_id}/{index}")
    def regenerate(job_id: str, index: int):
        return jobs.regenerate(config.workspace.job(job_id, "generate"), config.generator(), index)

    # --- edit ---
    @app.post("/api/edit")
    async def new_edit_job(request: Request):
        body = await _json(request)
        choice = jobs.EditChoice.parse(str(body.get("steps", "")), str(body.get("presets", "")),
                                       config.edit_offer["presets"])
        offered = set(config.edit_offer["operations"])
        missing = [s for s in choice.steps if s not in offered]
        if missing:
            raise BadRequest(f"the served edit model offers no {missing[0]!r} (it offers: "
                             f"{', '.join(config.edit_offer['operations'])})")
        job = config.workspace.new_job("edit", steps=list(choice.steps), presets=list(choice.presets))
        return {"job": job.id, **job.record()}

    @app.post("/api/edit/{job_id}")
    async def edit_photo(job_id: str, request: Request):
        job = config.workspace.job(job_id, "edit")
        from urllib.parse import unquote

        name = unquote(request.headers.get("x-filename", "photo"))
        data = await _limited_body(request, config.max_upload_bytes)
        record = job.record()
        choice = jobs.EditChoice(tuple(record["steps"]), tuple(record["presets"]))
        def run():
            with config.lock:
                if data is None:  # over the limit: reported like any refused photo, nothing kept
                    return _refused(job, name, f"the file is over the limit of {config.max_upload_bytes / 1e6:.1f} MB", 413)
                return jobs.edit_photo(job, config.editor(), name, data, choice, config.max_upload_bytes,
                                       config.max_pixels)
        entry = await run_in_threadpool(run)
        # a refused photo is a 4xx carrying its entry (the job records it too, for the ZIP's report)
        return JSONResponse(entry, status_code=entry["status"]) if entry["error"] else entry

    @app.get("/api/jobs/{job_id}/files/{relative:path}")
    def job_file(job_id: str, relative: str):
        path = config.workspace.job(job_id).file(relative)
        return FileResponse(path, media_type=MEDIA.get(path.suffix, "application/octet-stream"))

    @app.get("/api/jobs/{job_id}/zip")
    def job_zip(job_id: str):
        job = config.workspace.job(job_id)
        kind = job.record()["kind"]
        data = jobs.generate_zip(job) if kind == "generate" else jobs.edit_zip(job)
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="product-studio-{kind}-{job.id}.zip"'})

    # --- models ---
    @app.get("/api/models")
    def models():
        from productstudio.registry.model_registry import versions_overview

        from productstudio import tracking

        try:
            versions = versions_overview(config.model_name)
        except Exception as error:  # noqa: BLE001  (an MLflow server that does not answer is one line)
            down = tracking.server_error(error)
            if down is None:
                raise
            raise down from None
        decided = [v for v in versions if v["decision"]]
        return {"model": config.model_name, "tracking_uri": tracking.tracking_uri(), "versions": versions,
                "last_decision": max(decided, key=lambda v: v["decided_at"] or "") if decided else None,
                "canary": _canary_status(config.canary_state)}

    @app.post("/api/canary/rollback")
    async def rollback(request: Request):
        from productstudio.deploy.local_canary import rollback as roll_back

        body = await _json(request)
        if body.get("confirm") is not True:
            raise BadRequest("a rollback needs confirmation ({\"confirm\": true})")
        reason = str(body.get("reason") or "rolled back from the studio page")[:200]
        record = await run_in_threadpool(roll_back, config.canary_state, reason)
        return {"rolled_back": True, "champion": record["champion"], "percent": record["percent"]}

    return app


def _refused(job: jobs.Job, name: str, reason: str, status: int) -> dict:
    record = job.record()
    entry = {"index": len(record["items"]), "name": name[:200], "stem": jobs.safe_stem(name), "error": reason,
             "status": status, "steps": [], "exports": []}
    record["items"].append(entry)
    job.save(record)
    return entry


def _canary_status(state: Path) -> dict | None:
    from productstudio.deploy.local_canary import deploy_status

    try:
        status = deploy_status(state)
    except MissingInput:
        return None
    return {key: status.get(key) for key in ("url", "stable_version", "canary_version", "percent", "running",
                                            "started_at", "alerts", "sides")}


async def _json(request) -> dict:
    raw = await request.body()
    if len(raw) > 100_000:
        raise BadRequest("the request is too large", 413)
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise BadRequest("the request is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request must be a JSON object")
    return body


async def _limited_body(request, limit: int) -> bytes | None:
    """The request's body, or None once it is known to pass ``limit`` bytes (from Content-Length, or while
    reading): nothing over the limit is kept. Up to 4x the limit is read and dropped so that a plain client gets
    the 413 rather than a reset connection; a bigger declared body is answered at once."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > 4 * limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > 4 * limit:
            return None
        if size <= limit:
            chunks.append(chunk)
    return b"".join(chunks) if size <= limit else None
