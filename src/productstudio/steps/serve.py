"""Step 'serve': start, stop or check TorchServe on 127.0.0.1 with token authorization on."""

from __future__ import annotations

from pathlib import Path

from productstudio import paths
from productstudio.steps.package import serve_model_name
from productstudio.steps.step import Arg, Step


def run(action: str, params: Path, state: Path, mar: Path | None, enable_model_api: bool) -> dict:
    from productstudio.serving import server

    if action == "stop":
        return {"action": action, "state": state, "stopped": server.stop(state)}
    if action == "renew-keys":
        handle = server.running_handle(state)
        server.renew_keys(handle)
        return {"action": action, "key_file": handle.key_file, "expiry": server.key_expiry(handle)}
    if action == "status":
        return {"action": action, "status": server.status(state)}
    from productstudio.config import load_params  # only 'start' reads params.yaml

    from productstudio.serving.archive import archive_task

    settings = load_params(params)
    serve = settings.serve.model_copy(update={"enable_model_api": True}) if enable_model_api else settings.serve
    name = mar.stem if mar else serve_model_name(settings)  # torch-model-archiver names the file after the model
    mar = mar or state / "model-store" / f"{name}.mar"
    if archive_task(mar) in ("edit", "restore"):  # photo uploads: the body limit is the edit section's upload limit
        serve = serve.model_copy(update={"max_request_size": settings.edit.max_upload_bytes})
    handle = server.start(serve, mar, state, name)
    return {"action": action, "handle": handle, "settings": serve, "state": state}


def format(result: dict) -> str:
    action = result["action"]
    if action == "stop":
        return "TorchServe stopped" if result["stopped"] else f"no TorchServe running from {result['state']}"
    if action == "renew-keys":
        expiry = result["expiry"]
        return (f"new inference and management keys in {result['key_file']} (expire: inference {expiry.get('inference')}, "
                f"management {expiry.get('management')})")
    if action == "status":
        return "\n".join(f"{key}: {value}" for key, value in result["status"].items())
    handle, settings = result["handle"], result["settings"]
    return "\n".join([
        f"TorchServe serves {handle.model}: {handle.predict_url} (management {handle.management_url}, "
        f"metrics {handle.metrics_url}), batches of up to {settings.batch_size} within {settings.max_batch_delay_ms} ms",
        f"token authorization is on: keys in {handle.key_file} (inference, management; they expire after "
        f"{settings.token_expiration_min} min, 'productstudio serve renew-keys' renews them). Example:",
        f"  {handle.curl_example()}",
        f"logs in {handle.state_dir / 'logs'}; stop with: productstudio serve stop --state {result['state']}",
    ])


def exit_code(result: dict) -> int:
    return 3 if result["action"] == "status" and not result["status"].get("running") else 0


STEP = Step(
    name="serve",
    help="start, stop or check TorchServe (127.0.0.1, token authorization on, settings from params.yaml 'serve')",
    description="start: write STATE/config.properties (APIs on 127.0.0.1 at serve.*_port, dynamic batching "
    "serve.batch_size / serve.max_batch_delay_ms, serve.max_request_size, allowed_urls limited to the model "
    "store, model registration off) and run TorchServe in the background until the model is ready. The "
    "tokens are in STATE/key_file.json; send 'Authorization: Bearer <inference key>'.",
    run=run,
    format=format,
    exit_code=exit_code,
    args=(
        Arg("action", "renew-keys: new inference and management keys (they expire after serve.token_expiration_min)",
            type=str, choices=("start", "stop", "status", "renew-keys")),
        Arg("--params", "params file (read by start)", paths.PARAMS),
        Arg("--state", "config, keys, logs, model store", paths.SERVE_STATE),
        Arg("--mar", "archive to serve (default: STATE/model-store/<model name>.mar)"),
        Arg("--enable-model-api", "allow model registration over the management API", action="store_true"),
    ),
)
