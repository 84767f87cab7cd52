"""The served models the studio page talks to: a TorchServe started with ``productstudio serve`` (its state folder)
or the canary's nginx in front of two of them (``productstudio deploy canary``). The page holds no model logic: it
forwards requests to these endpoints and keeps what comes back.

    generate = from_canary(".scratch/deploy") or from_state(".scratch/serve")
    answer = call(generate, json.dumps({"category": 3, "count": 4}).encode(), {"Content-Type": "application/json"})
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from productstudio.errors import MissingInput, ServiceError
from productstudio.serving import server

TOKEN_REFUSED = "Token Authorization failed"


@dataclass(frozen=True)
class Endpoint:
    """Where one served model answers and how to authorize: ``key()`` reads the current key (TorchServe renews
    its keys), ``renew()`` asks for a fresh one after a 401 (None where the key does not expire)."""
    predict_url: str
    via: str  # said on the page: "TorchServe .scratch/serve" or "canary proxy ..."
    key: Callable[[], str]
    renew: Callable[[], str] | None = None
    state_dir: Path | None = None  # the TorchServe state (the champion's side for a canary): its archive's config


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    headers: dict

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def reason(self) -> str:
        """The served model's one-line reason for a refusal (TorchServe wraps it in JSON)."""
        text = self.body.decode("utf-8", errors="replace").strip()
        try:
            parsed = json.loads(text)
            if isinstance(parsed, dict):
                text = str(parsed.get("message") or parsed.get("error") or text)
        except ValueError:
            pass
        return " ".join(text.split())[:300] or f"HTTP {self.status}"


def from_state(state_dir: str | Path) -> Endpoint:
    """The TorchServe running from ``state_dir``; ``MissingInput`` with the command to start one when none runs."""
    handle = server.running_handle(state_dir)

    def renew() -> str:
        return server.renew_key(handle, "inference")
    return Endpoint(handle.predict_url, f"TorchServe {handle.inference_url} ({handle.model})",
                    lambda: handle.inference_key, renew, handle.state_dir)


def from_canary(state_dir: str | Path) -> Endpoint | None:
    """The canary's proxy when one runs from ``state_dir`` (None otherwise): requests split as nginx decides."""
    from productstudio.deploy.local_canary import load_deploy
    from productstudio.deploy.nginx_proxy import CanaryProxy

    state = Path(state_dir)
    try:
        status = load_deploy(state)
    except (MissingInput, OSError, ValueError):
        return None
    if CanaryProxy(state / "proxy").pid() is None:
        return None
    key_file = Path(status["key_file"])
    return Endpoint(status["predict_url"], f"canary proxy {status['url']} (v{status['stable_version']} / "
                    f"v{status['canary_version']})", lambda: key_file.read_text().strip(), None, state / "stable")


def call(endpoint: Endpoint, body: bytes, headers: dict | None = None, timeout: float = 300.0) -> Answer:
    """POST ``body`` to the endpoint with its key; a refused key (expired after serve.token_expiration_min) is
    renewed once. Never raises for an HTTP status; ``ServiceError`` when nothing answers."""
    for attempt in range(2):
        request = urllib.request.Request(endpoint.predict_url, data=body, method="POST",
                                         headers={**(headers or {}), "Authorization": f"Bearer {endpoint.key()}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Answer(response.status, response.headers.get("Content-Type", ""), response.read(),
                              dict(response.headers))
        except urllib.error.HTTPError as error:
            answer = Answer(error.code, error.headers.get("Content-Type", ""), error.read(), dict(error.headers))
            if _key_refused(answer) and endpoint.renew is not None and attempt == 0:
                endpoint.renew()
                continue
            return answer
        except OSError as error:
            raise ServiceError(f"{endpoint.via} does not answer ({error})") from None
    return answer


def _key_refused(answer: Answer) -> bool:
    """TorchServe 0.12 refuses a missing, wrong or expired key with a 400 that says so (not a 401)."""
    return answer.status in (400, 401) and TOKEN_REFUSED in answer.body.decode("utf-8", errors="replace")


def categories(endpoint: Endpoint) -> list[str]:
    """The category names of the generator served behind ``endpoint`` (from its archive's config)."""
    from productstudio.models.io import category_names

    if endpoint.state_dir is None:
        raise MissingInput(f"{endpoint.via}: no TorchServe state to read the categories from")
    return category_names(server.served_config(endpoint.state_dir))
