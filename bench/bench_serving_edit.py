"""Benchmark: the served edit task (photo in, checked studio export out) under load, against the same work in-process.

Serves the edit archive (u2netp cut-out, text check, composition, compliance, provenance) with TorchServe on free
127.0.0.1 ports with the params.yaml ``serve`` settings (workers, threads; batch size 1: an edit is one photo) and
sends a 1024 x 1024 JPEG product photo (a clothing test photo, centre-cropped and resized) from N client threads
(default 1 and 8), each posting back to back: megapixels/s, p50/p99 latency, errors.

The reference is the raw edit in this machine's processes: the handler's own path (decode, cut-out, compose,
check, encode) called in a loop by as many processes as the server has workers, each on ``serve.threads``
threads, timed before and after each load level (the faster kept, so the ratio errs low). The served path adds
HTTP, TorchServe's queue and the client threads on the same 2 cores.

    python bench/bench_serving_edit.py                         # 20 s per level
    python bench/bench_serving_edit.py --seconds 10 --concurrency 8
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
SIDE = 1024


def photo_1024(source: Path) -> bytes:
    """A real product photo as a 1024 x 1024 JPEG (quality 90): fitted with Lanczos and centred on its own
    background colour (the median of its border), so the product is whole, as a merchant would upload it."""
    import numpy as np
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        scale = SIDE / max(image.size)
        fitted = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    pixels = np.asarray(fitted)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    square = Image.new("RGB", (SIDE, SIDE), tuple(int(v) for v in np.median(border, axis=0)))
    square.paste(fitted, ((SIDE - fitted.width) // 2, (SIDE - fitted.height) // 2))
    buffer = io.BytesIO()
    square.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


_TASK = None


def _init(params: str, threads: int) -> None:
    global _TASK
    from productstudio.config import load_params
    from productstudio.editing.studio import StudioEditor
    from productstudio.models.pretrained import weights_root
    from productstudio.serving.tasks.edit import EditTask

    edit = load_params(params).edit
    _TASK = EditTask(StudioEditor.load(edit, threads=threads, weights_root=weights_root()), "bench", "1")


def _edit_loop(body: bytes, seconds: float) -> int:
    """Edits done in ``seconds`` by this process, through the handler's own calls (parse, run, respond)."""
    def one() -> None:
        request = _TASK.parse(body, None, {})
        _TASK.respond(request, _TASK.run([request])[0])

    one()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        one()
        done += 1
    return done


def raw_megapixels_per_s(pool: ProcessPoolExecutor, processes: int, body: bytes, seconds: float) -> float:
    counts = list(pool.map(_edit_loop, [body] * processes, [seconds] * processes))
    return sum(counts) / seconds * SIDE * SIDE / 1e6


def served_level(handle, body: bytes, users: int, seconds: float) -> dict:
    url = urlsplit(handle.predict_url)
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                conn.request("POST", url.path, body=body, headers={"Content-Type": "image/jpeg",
                                                                     "Authorization": f"Bearer {handle.inference_key}"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError as error:
                ok, response = False, error
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
            with lock:
                (latencies if ok else errors).append(time.perf_counter() - start if ok else str(getattr(response, "status", response)))
        conn.close()

    started = time.monotonic()
    with ThreadPoolExecutor(users) as pool:
        for future in [pool.submit(client) for _ in range(users)]:
            future.result()
    elapsed = time.monotonic() - started
    ordered = sorted(latencies)

    def pct(q: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000, 1) if ordered else None

    return {"concurrency": users, "seconds": round(elapsed, 1), "requests": len(latencies) + len(errors),
            "errors": len(errors), "error_examples": errors[:3], "photos_per_s": len(latencies) / elapsed,
            "megapixels_per_s": len(latencies) / elapsed * SIDE * SIDE / 1e6, "p50_ms": pct(50), "p99_ms": pct(99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=REPO.parent / "shared/data/clothing-dataset-small/test/t-shirt",
                        help="a photo, or a folder whose first .jpg is used")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=int, default=20, help="load per level (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serving_edit.json")
    args = parser.parse_args()

    from productstudio.config import ServeSettings, load_params, section_dict
    from productstudio.models.pretrained import weights_root
    from productstudio.serving import server
    from productstudio.serving.archive import build_archive

    params = load_params(args.params)
    source = args.photo if args.photo.is_file() else sorted(args.photo.glob("*.jpg"))[0]
    body = photo_1024(source)
    names = ("inference_port", "management_port", "metrics_port", "grpc_inference_port", "grpc_management_port")
    settings = ServeSettings(**{**params.serve.model_dump(), **dict(zip(names, server.free_ports(len(names)))),
                                "batch_size": 1, "max_request_size": params.edit.max_upload_bytes, "response_timeout_s": 300})
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-edit-", dir=REPO / ".scratch" if (REPO / ".scratch").is_dir() else None))
    mar = build_archive(weights_root(), workdir / "store", "studio-edit", task="edit", provenance={"edit": section_dict(params.edit)})
    levels = []
    with ProcessPoolExecutor(settings.workers, initializer=_init, initargs=(str(args.params), settings.threads)) as pool:
        handle = server.start(settings, mar, workdir / "state", wait_s=300)
        try:
            served_level(handle, body, 1, 3)  # warm-up
            for users in args.concurrency:
                before = raw_megapixels_per_s(pool, settings.workers, body, 5)
                level = served_level(handle, body, users, args.seconds)
                after = raw_megapixels_per_s(pool, settings.workers, body, 5)
                raw = max(before, after)
                level.update(raw_megapixels_per_s=raw, raw_before_after=[before, after], ratio_to_raw=level["megapixels_per_s"] / raw)
                levels.append(level)
                print(f"concurrency {users}: {level['megapixels_per_s']:.2f} MP/s served, raw {raw:.2f} MP/s", flush=True)
        finally:
            server.stop(workdir / "state")

    print(f"\nTorchServe edit task, {settings.workers} worker(s) x {settings.threads} thread(s); one {SIDE}x{SIDE} JPEG "
          f"({len(body) // 1024} KB, {source.name}) per request, default presets; {args.seconds} s per level; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'users':>5} {'requests':>9} {'errors':>6} {'photos/s':>9} {'MP/s':>6} {'p50 ms':>8} {'p99 ms':>8} {'raw MP/s':>9} {'ratio':>6}")
    for lv in levels:
        print(f"{lv['concurrency']:>5} {lv['requests']:>9} {lv['errors']:>6} {lv['photos_per_s']:>9.2f} {lv['megapixels_per_s']:>6.2f} "
              f"{lv['p50_ms'] or 0:>8.0f} {lv['p99_ms'] or 0:>8.0f} {lv['raw_megapixels_per_s']:>9.2f} {lv['ratio_to_raw']:>6.2f}")
    result = {"benchmark": "serving_edit", "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "photo": {"source": str(source), "side": SIDE, "bytes": len(body)}, "presets": list(params.edit.presets),
              "settings": {"workers": settings.workers, "threads": settings.threads, "batch_size": 1},
              "levels": levels, "load_average": os.getloadavg(), "cpus": os.cpu_count(),
              "machine": platform.processor() or platform.machine(),
              "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(lv["errors"] == 0 for lv in levels) else 1


if __name__ == "__main__":
    sys.exit(main())
