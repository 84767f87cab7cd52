"""POST a photo to a served task on a running TorchServe and read the answer, whatever its status."""

import urllib.error
import urllib.request


def post_photo(handle, body: bytes, headers: dict | None = None) -> tuple[int, str | None, bytes]:
    """(status, content type, body) of a POST of ``body`` (a JPEG by default) with the inference key."""
    headers = {"Content-Type": "image/jpeg", "Authorization": f"Bearer {handle.inference_key}", **(headers or {})}
    request = urllib.request.Request(handle.predict_url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type"), error.read()


def status_of_an_oversized_post(handle, content_length: int) -> int:
    """The status TorchServe answers to a POST announcing ``content_length`` bytes. Its frontend refuses on the
    Content-Length alone and closes the connection, so sending the body races that close (a reset while still
    writing); asking first (Expect: 100-continue) reads the answer instead."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(handle.predict_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.putrequest("POST", url.path)
        for key, value in {"Content-Type": "image/jpeg", "Content-Length": str(content_length),
                           "Expect": "100-continue", "Authorization": f"Bearer {handle.inference_key}"}.items():
            connection.putheader(key, value)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def start_served(mar, state_dir, max_request_size: int):
    """Real TorchServe serving ``mar`` on free 127.0.0.1 ports, one worker; returns its handle (stop it with
    ``server.stop(state_dir)``)."""
    from productstudio.config import ServeSettings
    from productstudio.serving import server
    from productstudio.serving.server import free_ports

    names = ("inference_port", "management_port", "metrics_port", "grpc_inference_port", "grpc_management_port")
    settings = ServeSettings(**dict(zip(names, free_ports(len(names)))), workers=1, max_request_size=max_request_size,
                             response_timeout_s=120)
    return server.start(settings, mar, state_dir, wait_s=240)
