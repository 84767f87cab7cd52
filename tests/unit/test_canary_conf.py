"""The nginx canary config as text (no nginx needed; tests/integration/test_canary_nginx.py runs it)."""

from __future__ import annotations

import re

import pytest

from productstudio.deploy.nginx_proxy import count_sides, parse_access_log, render_nginx_conf


def conf(percent, **kw):
    return render_nginx_conf("http://127.0.0.1:8085", "127.0.0.1:8095", percent, 8090, "/srv/canary", **kw)


def split_block(text):
    return re.search(r'split_clients "\$request_id" \$ps_side \{(.*?)\}', text, re.S).group(1).split()


def test_split_by_percent():
    assert split_block(conf(20)) == ["20%", "canary;", "*", "stable;"]
    assert split_block(conf(12.345)) == ["12.35%", "canary;", "*", "stable;"]  # nginx takes two decimals
    assert split_block(conf(0)) == ["*", "stable;"]  # rollback: no branch to the challenger at all
    assert split_block(conf(100)) == ["*", "canary;"]  # promotion


def test_listens_on_loopback_only_with_the_serving_body_limit():
    text = conf(20, max_body_bytes=65536)
    assert re.findall(r"listen (\S+);", text) == ["127.0.0.1:8090"]
    assert "client_max_body_size 65536;" in text
    assert "server 127.0.0.1:8085;" in text and "server 127.0.0.1:8095;" in text
    assert "proxy_set_header Authorization $http_authorization;" in text
    assert "add_header X-Model-Version $ps_version always;" in text
    assert "/var/" not in text and "/run/" not in text  # everything under the state directory


@pytest.mark.parametrize("kwargs, message", [
    ({"percent": 150}, "outside 0..100"),
    ({"percent": -1}, "outside 0..100"),
    ({"stable": "https://127.0.0.1:8085"}, "expected http://host:port"),
    ({"stable": "http://127.0.0.1"}, "expected http://host:port"),
    ({"stable_version": 'v1"; deny all; "'}, "not allowed in an nginx config value"),
])
def test_bad_inputs_are_refused(kwargs, message):
    args = {"stable": "http://127.0.0.1:8085", "canary": "http://127.0.0.1:8095", "percent": 20, "port": 8090,
            "state_dir": "/srv/canary", **kwargs}
    with pytest.raises(ValueError, match=message):
        render_nginx_conf(**args)


def test_access_log_counts(tmp_path):
    log = tmp_path / "access.log"
    log.write_text('{"side":"stable","status":"200","request_time":"0.010"}\n'
                   '{"side":"canary","status":"503","request_time":"0.030"}\n'
                   '{"side":"canary","status":"200","request_time":"0.010"}\n')
    counts = count_sides(parse_access_log(log))
    assert counts["stable"] == {"requests": 1, "errors": 0, "mean_seconds": pytest.approx(0.01)}
    assert counts["canary"] == {"requests": 2, "errors": 1, "mean_seconds": pytest.approx(0.02)}
    assert parse_access_log(tmp_path / "absent.log") == []


def test_committed_example_is_what_the_renderer_writes():
    from productstudio.deploy.nginx_proxy import example_conf
    from tests.conftest import REPO_ROOT

    committed = REPO_ROOT / "deploy" / "nginx" / "canary.example.conf"
    assert committed.read_text() == example_conf(), (
        f"{committed} is stale: python -c 'from productstudio.deploy.nginx_proxy import example_conf; "
        f"print(example_conf(), end=\"\")' > {committed.relative_to(REPO_ROOT)}")
