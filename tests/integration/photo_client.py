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
