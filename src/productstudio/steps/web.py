"""Command 'web': the studio page for merchants on 127.0.0.1, in front of the served generator (or the canary) and
the served edit task; it starts the TorchServe instances it needs that are not running yet and stops them on exit."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from productstudio import paths
from productstudio.steps.step import Arg, Step

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Here rather than in paths.py, a dependency of every DVC stage: the page is no stage.
WEB_SCRATCH = Path(".scratch/web")  # the page's uploads and results
WEB_EDIT_STATE = WEB_SCRATCH / "serve-edit"  # the edit task's TorchServe the page starts


def _generator_endpoint(params, state: Path, canary: Path, started: list) -> None:
    """Make sure a generator answers: the canary's proxy or a TorchServe from ``state``; else package the registry's
    champion (the main job's generator when there is none) and serve it from ``state`` on serve.*_port."""
    from productstudio.errors import BadRequest
    from productstudio.serving import server
    from productstudio.steps import package
    from productstudio.web.backends import from_canary

    if from_canary(canary) or server.load_handle(state) and server.status(state).get("running"):
        return
    store = state / "model-store"
    common = dict(task="generate", alias=None, variant=None, int8=None, name=None, store=store)
    try:
        mar = package.run(params, generator=None, **common)["mar"]
    except BadRequest as error:  # no registered model or no champion yet: the main job's generator
        print(f"productstudio web: serving {paths.GENERATOR} ({error})", file=sys.stderr)
        mar = package.run(params, generator=paths.GENERATOR, **common)["mar"]
    server.start(params.serve, mar, state, Path(mar).stem)
    started.append(state)


def _edit_endpoint(params, state: Path, look: Path | None, style_image: Path | None, started: list) -> None:
    """Make sure the edit task answers from ``state``; else archive it (with the trained restorer and detector when
    the main job made them, the look and style when given) and serve it on free 127.0.0.1 ports."""
    from productstudio.serving import server
    from productstudio.steps import package

    if server.load_handle(state) and server.status(state).get("running"):
        return
    restorer = paths.EDIT_RESTORER if (paths.EDIT_RESTORER / "restorer.safetensors").is_file() else None
    detector = paths.EDIT_DETECTOR if restorer and (paths.EDIT_DETECTOR / "detector.safetensors").is_file() else None
    mar = package.run(params, "edit", None, None, None, None, None, state / "model-store", restorer=restorer,
                      detector=detector, look=look, style_image=style_image)["mar"]
    names = ("inference_port", "management_port", "metrics_port", "grpc_inference_port", "grpc_management_port")
    settings = params.serve.model_copy(update={**dict(zip(names, server.free_ports(len(names)))),
                                               "max_request_size": params.edit.max_upload_bytes})
    server.start(settings, mar, state, Path(mar).stem)
    started.append(state)


def run(params, host: str, port: int, generate_state: Path, edit_state: Path, canary_state: Path, scratch: Path,
        look: Path | None, style_image: Path | None) -> dict:
    import uvicorn

    from productstudio.serving import server
    from productstudio.serving.tasks.edit import archive_offer
    from productstudio.web.app import PageConfig, create_app
    from productstudio.web.backends import from_canary, from_state
    from productstudio.web.jobs import Workspace

    started: list[Path] = []
    try:
        _generator_endpoint(params, generate_state, canary_state, started)
        _edit_endpoint(params, edit_state, look, style_image, started)
        token = secrets.token_urlsafe(24)
        workspace = Workspace(scratch)
        token_file = workspace.root / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        config = PageConfig(token=token, workspace=workspace,
                            generator=lambda: from_canary(canary_state) or from_state(generate_state),
                            editor=lambda: from_state(edit_state), edit_offer=archive_offer(server.served_archive(edit_state)),
                            model_name=params.register.model_name, canary_state=canary_state,
                            max_upload_bytes=params.edit.max_upload_bytes, max_pixels=params.edit.max_pixels)
        shown = f"[{host}]" if ":" in host else host
        print(f"Product Studio page: http://{shown}:{port}/login?token={token}\n"
              f"  (the token is also in {token_file}; results stay in {workspace.root / 'jobs'}; Ctrl-C stops it"
              f"{' and the TorchServe it started' if started else ''})", flush=True)
        if host not in LOOPBACK:
            print(f"  warning: bound to {host}, reachable from other machines: anyone with the URL can use the page",
                  file=sys.stderr, flush=True)
        uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
    finally:
        for state in started:
            server.stop(state)
    return {"stopped": [str(s) for s in started]}


def format(result: dict) -> str:
    return "studio page stopped" + (f"; stopped TorchServe from {', '.join(result['stopped'])}" if result["stopped"] else "")


STEP = Step(
    name="web",
    help="the studio page for merchants: generate, edit and export product images in a browser (127.0.0.1)",
    description="Starts a web page on HOST:PORT (default 127.0.0.1:8075) and prints its URL with an access token "
    "(always required). Generate: images per category from the served generator (through the canary's proxy when "
    "one runs from --canary-state, else TorchServe from --generate-state), regenerate one, download one or all. "
    "Edit: drop photos, choose restore / enhance / restyle and marketplace formats, compare before and after, see "
    "each format's checks, download a ZIP with one folder per format. Models: the registry's versions, champion and "
    "challenger, the last promotion decision, the canary's split and sides, and a rollback button. A generator or "
    "edit TorchServe that is not running is packaged and started (the registry's champion, else models/train/"
    "generator; the edit task with models/restorer when present) and stopped on exit. Uploads are limited by "
    "edit.max_upload_bytes and edit.max_pixels before decoding; everything uploaded stays under --scratch.",
    run=run,
    format=format,
    params=("serve", "register.model_name", "edit"),
    args=(
        Arg("--host", "address to bind (anything but loopback makes the page reachable from other machines)",
            "127.0.0.1", str),
        Arg("--port", "port of the page", 8075, int),
        Arg("--generate-state", "state folder of the generator's TorchServe (productstudio serve start)", paths.SERVE_STATE),
        Arg("--edit-state", "state folder of the edit task's TorchServe", WEB_EDIT_STATE),
        Arg("--canary-state", "a canary deployment (productstudio deploy canary): generate through its proxy while it runs",
            paths.DEPLOY_STATE),
        Arg("--scratch", "where uploads and results are kept", WEB_SCRATCH),
        Arg("--look", "when the edit task is started here: offer this catalogue look (look.json from 'edit style')"),
        Arg("--style-image", "when the edit task is started here: offer this painterly style (a picture)"),
    ),
)
