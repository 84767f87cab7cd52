"""Where DVC keeps the data: an S3 remote's settings, and pulling one output from the remote.

DVC holds the settings. The shareable ones (bucket URL, endpoint, region) go to ``.dvc/config``, which is
committed; credentials go to ``.dvc/config.local``, which DVC's own ``.dvc/.gitignore`` keeps out of git.
Without credentials in either, DVC's S3 client reads the standard AWS places (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws/credentials``), which is what CI usually wants.
The plain DVC commands do the same (README, "Data on S3"); ``add_s3_remote`` is their library form.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from productstudio.errors import ParamsError, ServiceError

MISSING_ON_REMOTE = "do not exist neither locally nor on remote"  # DVC's warning when pushed objects are absent


def s3_remote_settings(url: str, endpoint_url: str | None = None, region: str | None = None,
                       access_key_id: str | None = None, secret_access_key: str | None = None) -> tuple[dict, dict]:
    """(settings to share in .dvc/config, secrets for .dvc/config.local), checked first."""
    if not url.startswith("s3://") or not url[len("s3://"):].strip("/"):
        raise ParamsError(f"S3 remote url '{url}': expected s3://<bucket>[/<prefix>]")
    if endpoint_url and not endpoint_url.startswith(("http://", "https://")):
        raise ParamsError(f"S3 endpoint '{endpoint_url}': expected http://<host>:<port> or https://...")
    if bool(access_key_id) != bool(secret_access_key):
        raise ParamsError("S3 credentials: give both the access key id and the secret access key, or neither "
                          "(then DVC reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws)")
    shared = {"url": url}
    if endpoint_url:
        shared["endpointurl"] = endpoint_url
    if region:
        shared["region"] = region
    secret = {"access_key_id": access_key_id, "secret_access_key": secret_access_key} if access_key_id else {}
    return shared, secret


def add_s3_remote(name: str, url: str, *, endpoint_url: str | None = None, region: str | None = None,
                  access_key_id: str | None = None, secret_access_key: str | None = None, default: bool = True,
                  repo: str | Path = ".") -> None:
    """Add (or replace) the S3 remote ``name`` in ``repo``: what ``dvc remote add`` + ``dvc remote modify
    [--local]`` write, in one call; credentials only ever in .dvc/config.local."""
    from dvc.config import Config

    shared, secret = s3_remote_settings(url, endpoint_url, region, access_key_id, secret_access_key)
    config = Config(dvc_dir=str(Path(repo) / ".dvc"))
    with config.edit("repo") as conf:
        conf["remote"][name] = shared
        if default:
            conf["core"]["remote"] = name
    with config.edit("local") as conf:  # also drops stale credentials when none are given now
        local = {k: v for k, v in conf["remote"].get(name, {}).items() if k not in ("access_key_id", "secret_access_key")}
        local.update(secret)
        if local:
            conf["remote"][name] = local
        else:
            conf["remote"].pop(name, None)


def remote_of(repo: str | Path = ".", name: str | None = None) -> tuple[str, str]:
    """(name, url) of the remote ``name``, by default the repository's default remote."""
    from dvc.config import Config

    config = Config(dvc_dir=str(Path(repo) / ".dvc"))
    name = name or config["core"].get("remote")
    if not name:
        raise ServiceError("no default DVC remote: add one with 'dvc remote add -d <name> s3://<bucket>/<prefix>'")
    if name not in config["remote"]:
        raise ServiceError(f"DVC remote '{name}' is not configured (dvc remote list)")
    return name, str(config["remote"][name]["url"])


def pull_failure(stderr: str, returncode: int) -> str:
    """Why ``dvc pull`` failed, in one line, from what DVC printed."""
    if MISSING_ON_REMOTE in stderr:
        return "this data version is not on the remote (push it with 'dvc push' where it was made)"
    errors = [line[len("ERROR:"):].strip() for line in stderr.splitlines() if line.startswith("ERROR:")]
    if errors:
        return " ".join(errors[0].split())  # the first error is the cause; later ones are its consequences
    return f"dvc exited with code {returncode}" + ("" if stderr else " (its messages are above)")


def pull(targets: Sequence[str | Path], repo: str | Path = ".", remote: str | None = None) -> None:
    """``dvc pull`` only ``targets`` (outputs or stage names) from ``remote`` (default: the default remote)."""
    name, url = remote_of(repo, remote)
    what = " ".join(str(t) for t in targets)
    print(f"pulling {what} from DVC remote '{name}' ({url})", flush=True)
    # On a terminal DVC draws its progress bars there; elsewhere (CI logs, tests) it draws none, and its
    # messages are kept to say in one line why a pull failed.
    terminal = sys.stderr.isatty()
    result = subprocess.run([sys.executable, "-m", "dvc", "pull", "--remote", name, *map(str, targets)], cwd=repo,
                            text=True, stderr=None if terminal else subprocess.PIPE)
    if result.returncode == 0:
        if result.stderr:  # warnings
            sys.stderr.write(result.stderr)
        return
    raise ServiceError(f"could not pull {what} from DVC remote '{name}' ({url}): "
                       f"{pull_failure(result.stderr or '', result.returncode)}")
