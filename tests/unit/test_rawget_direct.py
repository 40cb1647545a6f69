"""When the client's download takes the raw socket (river_magics/rawget.py `direct`).

A proxy named in the environment keeps httpx's path (it knows CONNECT and proxy auth);
NO_PROXY hosts, and no proxy at all, take the raw socket.
"""

from __future__ import annotations

import pytest

from river_magics.rawget import direct

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_no_proxy_in_the_environment_means_the_raw_socket() -> None:
    assert direct("http://127.0.0.1:8888/river/api/tasks/1/pulled")
    assert direct("https://river.example:8443/river/api/data/ab")


@pytest.mark.parametrize("var", ["HTTP_PROXY", "ALL_PROXY", "http_proxy"])
def test_a_proxy_for_the_scheme_keeps_the_httpx_path(
    monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    monkeypatch.setenv(var, "http://127.0.0.1:3128")
    assert not direct("http://river.example:8888/river/api/tasks/1/pulled")


def test_a_proxy_for_the_other_scheme_does_not_matter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    assert direct("http://river.example:8888/x")
    assert not direct("https://river.example:8443/x")


def test_no_proxy_hosts_take_the_raw_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,.lab.internal")
    assert direct("http://127.0.0.1:8888/x")
    assert direct("http://node1.lab.internal:8888/x")
    assert not direct("http://river.example:8888/x")


def test_what_is_not_http_is_not_direct() -> None:
    assert not direct("ftp://127.0.0.1/x")
    assert not direct("http:///no-host")
