"""Several host URLs (a leader and its standbys): how runners and clients read and follow
them (river_runner.protocol.HostList; docs/database.md, "A standby host")."""

from __future__ import annotations

import pytest

from river_magics import Client
from river_runner.protocol import HostList, split_host_urls


def test_host_urls_are_split_trimmed_and_deduplicated() -> None:
    assert split_host_urls(" http://a:8888/ , http://b:8888,,http://a:8888") == [
        "http://a:8888",
        "http://b:8888",
    ]
    assert split_host_urls(["http://a", " "]) == ["http://a"]
    assert split_host_urls(None) == []


def test_following_goes_to_a_named_leader_only_if_it_is_ours() -> None:
    hosts = HostList(["http://a", "http://b", "http://c"])
    assert hosts.current == "http://a" and hosts.several
    assert hosts.follow("http://c/") == "http://c"  # a standby named one of ours
    assert hosts.follow("http://elsewhere:1") == "http://a"  # not ours: the next in turn
    assert hosts.follow(None) == "http://b"
    assert hosts.next() == "http://c"
    with pytest.raises(ValueError):
        HostList([])


def test_the_client_takes_several_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVER_URL", "head1:8888/lab, http://head2:8888/?token=t")
    client = Client()
    assert client.hosts.urls == ["http://head1:8888", "http://head2:8888"]
    assert client.url == "http://head1:8888" and client._token == "t"
    listed = Client(url=["http://a:1", "http://b:2"], token="x")
    listed.hosts.next()
    assert listed.clone().url == "http://b:2"
