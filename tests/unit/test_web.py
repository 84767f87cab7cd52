"""The studio page's work without a server: upload checks, names, the edit choice, job folders and the ZIP layout.
(The page itself, in Chromium against real served models: tests/integration/test_studio_page.py.)"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from productstudio.errors import BadRequest
from productstudio.web import jobs
from tests.integration.hostile import png_bytes


def encoded(fmt: str, size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt,extension", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")])
def test_a_photo_passes_with_its_extension(fmt, extension):
    assert jobs.check_upload(encoded(fmt), 10_000_000, 10_000) == extension


@pytest.mark.parametrize("data,limit,pixels,status,phrase", [
    (b"", 1000, 10_000, 400, "empty"),
    (b"x" * 2000, 1000, 10_000, 413, "over the limit"),
    (b"plain text, not a photo", 1000, 10_000, 400, "not an image"),
    (png_bytes(100_000, 100_000), 10_000, 10_000, 413, "decompression bomb"),
    (None, 10_000_000, 100, 413, "decompression bomb"),  # 40x30 = 1,200 pixels > 100
    (encoded("GIF"), 10_000_000, 10_000, 415, "unsupported image type GIF"),
    (encoded("BMP"), 10_000_000, 10_000, 415, "unsupported image type BMP"),
])
def test_bad_uploads_are_refused_with_a_status_and_one_line(data, limit, pixels, status, phrase):
    with pytest.raises(BadRequest) as refused:
        jobs.check_upload(encoded("PNG") if data is None else data, limit, pixels)
    assert refused.value.status == status and phrase in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("name,stem", [("my shirt (1).jpg", "my-shirt-1"), ("../../etc/passwd", "passwd"),
                                       ("..\\..\\evil.png", "evil"), ("", "photo"), ("é.jpg", "photo")])
def test_file_names_become_safe_stems(name, stem):
    assert jobs.safe_stem(name) == stem


def test_the_edit_choice_keeps_the_served_order_and_refuses_nonsense():
    presets = ["amazon-main", "transparent-png"]
    choice = jobs.EditChoice.parse("look, restore", "transparent-png", presets)
    assert choice == jobs.EditChoice(("restore", "look"), ("transparent-png",))
    for steps, chosen, phrase in (("sharpen", "", "unknown operation"), ("look,paint", "", "one restyle"),
                                  ("", "ebay", "unknown preset"), ("", "", "at least one")):
        with pytest.raises(BadRequest, match=phrase):
            jobs.EditChoice.parse(steps, chosen, presets)


def test_jobs_and_their_files_stay_inside_the_scratch_folder(tmp_path):
    workspace = jobs.Workspace(tmp_path / "web")
    job = workspace.new_job("edit", steps=[], presets=["amazon-main"])
    (job.dir / "0").mkdir()
    (job.dir / "0" / "amazon-main.jpg").write_bytes(b"jpeg")
    (tmp_path / "web" / "token").write_text("secret")
    assert job.file("0/amazon-main.jpg").read_bytes() == b"jpeg"
    for relative in ("../../token", "/etc/passwd", "job.json", "0"):
        with pytest.raises(BadRequest) as missing:
            job.file(relative)
        assert missing.value.status == 404
    for job_id in ("../x", "ZZZZZZZZZZZZZZZZ", "0" * 16):
        with pytest.raises(BadRequest):
            workspace.job(job_id)
    with pytest.raises(BadRequest, match="not a generate job"):
        workspace.job(job.id, "generate")


def test_the_edit_zip_has_one_folder_per_preset_and_reports_refused_photos(tmp_path):
    workspace = jobs.Workspace(tmp_path)
    job = workspace.new_job("edit", steps=["restore"], presets=["amazon-main", "transparent-png"])
    items = []
    for index, name in enumerate(("shirt.jpg", "shirt.png")):  # two photos with the same stem
        (job.dir / str(index)).mkdir()
        for file in ("amazon-main.jpg", "transparent-png.png", "restore.png"):
            (job.dir / str(index) / file).write_bytes(f"{index}/{file}".encode())
        items.append({"index": index, "name": name, "stem": "shirt", "error": None,
                      "steps": [{"operation": "restore", "file": f"{index}/restore.png"}],
                      "exports": [{"preset": "amazon-main", "passed": True, "file": f"{index}/amazon-main.jpg"},
                                  {"preset": "transparent-png", "passed": True, "file": f"{index}/transparent-png.png"}],
                      "result": f"{index}/amazon-main.jpg"})
    items.append({"index": 2, "name": "notes.jpg", "stem": "notes", "error": "not an image", "steps": [], "exports": []})
    job.save({**job.record(), "items": items})
    with zipfile.ZipFile(io.BytesIO(jobs.edit_zip(job))) as archive:
        assert sorted(archive.namelist()) == ["amazon-main/shirt-1.jpg", "amazon-main/shirt.jpg", "report.json",
                                              "transparent-png/shirt-1.png", "transparent-png/shirt.png"]
        assert archive.read("amazon-main/shirt-1.jpg") == b"1/amazon-main.jpg"
        report = json.loads(archive.read("report.json"))
    assert report["choice"] == {"steps": ["restore"], "presets": ["amazon-main", "transparent-png"]}
    assert [p["error"] for p in report["photos"]] == [None, None, "not an image"]


def test_without_presets_the_zip_holds_the_edited_photos(tmp_path):
    job = jobs.Workspace(tmp_path).new_job("edit", steps=["enhance"], presets=[])
    (job.dir / "0").mkdir()
    (job.dir / "0" / "enhance.png").write_bytes(b"png")
    job.save({**job.record(), "items": [{"index": 0, "name": "a.jpg", "stem": "a", "error": None, "exports": [],
                                         "steps": [{"operation": "enhance", "file": "0/enhance.png"}],
                                         "result": "0/enhance.png"}]})
    with zipfile.ZipFile(io.BytesIO(jobs.edit_zip(job))) as archive:
        assert sorted(archive.namelist()) == ["edited/a.png", "report.json"]


def test_a_big_lossless_step_result_is_passed_on_as_a_jpeg():
    png = encoded("PNG", (64, 64))
    assert jobs._as_upload(png, len(png)) == (png, "image/png")
    data, kind = jobs._as_upload(png, len(png) - 1)
    assert kind == "image/jpeg" and Image.open(io.BytesIO(data)).format == "JPEG"


def test_an_expired_key_is_renewed_once_and_the_request_sent_again():
    """TorchServe refuses an expired key with a 400 naming it; the page renews the key and asks again, once."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from productstudio.web.backends import TOKEN_REFUSED, Endpoint, call

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802  (http.server's name)
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["Authorization"])
            ok = self.headers["Authorization"] == "Bearer fresh"
            body = b'{"ok": true}' if ok else json.dumps({"code": 400, "message": f"{TOKEN_REFUSED}. Token expired"}).encode()
            self.send_response(200 if ok else 400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        keys = {"current": "expired"}
        endpoint = Endpoint(f"http://127.0.0.1:{server.server_port}/predictions/m", "test", lambda: keys["current"],
                            lambda: keys.update(current="fresh"))
        assert call(endpoint, b"{}").status == 200 and seen == ["Bearer expired", "Bearer fresh"]
        keys["current"], seen[:] = "expired", []
        stuck = Endpoint(endpoint.predict_url, "test", lambda: "expired", lambda: "expired")  # renewing did not help
        answer = call(stuck, b"{}")
        assert answer.status == 400 and TOKEN_REFUSED in answer.reason() and len(seen) == 2
    finally:
        server.shutdown()
