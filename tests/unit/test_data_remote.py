"""The S3 remote's settings (shared vs secret), reading why a pull failed, and retrain --if-changed pulling a
missing dataset before it compares (the real pull against an S3 server: tests/integration/test_dvc_s3.py)."""

from types import SimpleNamespace

import pytest

from productstudio.data.remote import add_s3_remote, pull_failure, remote_of, s3_remote_settings
from productstudio.errors import ParamsError, ServiceError
from productstudio.registry import retrain


def test_s3_settings_keep_credentials_apart():
    shared, secret = s3_remote_settings("s3://bucket/dvc", "http://127.0.0.1:9000", "eu-west-1", "key", "secret")
    assert shared == {"url": "s3://bucket/dvc", "endpointurl": "http://127.0.0.1:9000", "region": "eu-west-1"}
    assert secret == {"access_key_id": "key", "secret_access_key": "secret"}
    assert s3_remote_settings("s3://bucket") == ({"url": "s3://bucket"}, {})  # AWS's own endpoint, credentials from the environment


@pytest.mark.parametrize("args,message", [
    (("bucket/dvc",), "expected s3://<bucket>"),
    (("s3://",), "expected s3://<bucket>"),
    (("s3://bucket", "127.0.0.1:9000"), "expected http://<host>:<port>"),
    (("s3://bucket", None, None, "key"), "give both the access key id and the secret access key, or neither"),
])
def test_s3_settings_refuse_what_dvc_cannot_use(args, message):
    with pytest.raises(ParamsError, match=message):
        s3_remote_settings(*args)


def test_add_s3_remote_writes_secrets_only_to_config_local(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc/config").write_text("[core]\n    remote = local\n['remote \"local\"']\n    url = ../.dvc-remote\n")
    add_s3_remote("s3", "s3://bucket/dvc", endpoint_url="http://127.0.0.1:9000", access_key_id="key", secret_access_key="secret",
                  repo=tmp_path)
    shared, local = (tmp_path / ".dvc/config").read_text(), (tmp_path / ".dvc/config.local").read_text()
    assert "endpointurl = http://127.0.0.1:9000" in shared and "remote = s3" in shared and "key" not in shared
    assert "secret_access_key = secret" in local and "url" not in local
    assert remote_of(tmp_path) == ("s3", "s3://bucket/dvc") and remote_of(tmp_path, "local")[0] == "local"

    # Again without credentials and not as the default: the old ones go (DVC reads the AWS environment then).
    add_s3_remote("s3", "s3://bucket/dvc", default=False, repo=tmp_path)
    assert "secret" not in (tmp_path / ".dvc/config.local").read_text()
    assert "endpointurl" not in (tmp_path / ".dvc/config").read_text()
    with pytest.raises(ServiceError, match="DVC remote 'nope' is not configured"):
        remote_of(tmp_path, "nope")


def test_pull_failure_says_the_cause_in_one_line():
    # What dvc 3 prints (seen against moto): the first ERROR is the cause, later ones its consequences.
    no_credentials = ("ERROR: failed to connect to s3 (store/dvc/files/md5) - Unable to locate credentials\n"
                      "ERROR: failed to pull data from the cloud - 1 files failed to download\n")
    missing = ("WARNING: Some of the cache files do not exist neither locally nor on remote. Missing cache files:\n"
               "md5: 5dc03e6faf20782f9fec311d0acffc1f.dir\n"
               "ERROR: failed to pull data from the cloud - Checkout failed for following targets:\nd\nIs your cache up to date?\n")
    assert pull_failure(no_credentials, 1) == "failed to connect to s3 (store/dvc/files/md5) - Unable to locate credentials"
    assert pull_failure(missing, 1) == "this data version is not on the remote (push it with 'dvc push' where it was made)"
    assert pull_failure("", 1) == "dvc exited with code 1 (its messages are above)"


def _registry(monkeypatch, registered: bool):
    """retrain's view of the registry: version 3 with data 'd...' (or none); the data is there once pulled."""
    state = {"pulled": False}

    def what_changed(params_path, processed_dir):
        current = {"data.version": "d" * 64 if state["pulled"] else None, "params.hash": "p" * 64}
        if not registered:
            return "no registered version of 'g' yet", None, current
        return (None if state["pulled"] else "data/processed/manifest.json is missing"), SimpleNamespace(version="3"), current

    monkeypatch.setattr(retrain, "what_changed", what_changed)
    return lambda processed: state.update(pulled=True)


def test_retrain_if_changed_pulls_a_missing_dataset_before_comparing(monkeypatch):
    never = lambda: pytest.fail("retrained although the registered data version was on the remote")  # noqa: E731
    pulled = []
    pull = _registry(monkeypatch, registered=True)
    result = retrain.retrain_if_changed("params.yaml", "data/processed", repro=never, pull=lambda p: pulled.append(p) or pull(p))
    assert not result.ran and result.message.startswith("nothing changed since version 3 (data dddddddddddd")
    assert [str(p) for p in pulled] == ["data/processed"]

    # --no-pull: as before, a missing dataset means retrain.
    _registry(monkeypatch, registered=True)
    calls = []
    result = retrain.retrain_if_changed(repro=lambda: calls.append("repro"), pull=None)
    assert result.ran and result.message == "retrained: data/processed/manifest.json is missing" and calls == ["repro"]

    # Nothing registered: nothing to compare with, so no pull (dvc repro builds the data).
    _registry(monkeypatch, registered=False)
    calls.clear()
    assert retrain.retrain_if_changed(repro=lambda: calls.append("repro"), pull=lambda p: pytest.fail("pulled")).ran


def test_a_failed_pull_stops_retrain_if_changed(monkeypatch):
    _registry(monkeypatch, registered=True)

    def unreachable(processed):
        raise ServiceError("could not pull data/processed from DVC remote 's3' (s3://bucket/dvc): Unable to locate credentials")

    with pytest.raises(ServiceError, match="DVC remote 's3'"):
        retrain.retrain_if_changed(repro=lambda: pytest.fail("retrained after a failed pull"), pull=unreachable)
