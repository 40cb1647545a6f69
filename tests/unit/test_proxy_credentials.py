"""What of a request reaches an app behind the proxy (river_server/proxy_credentials.py)."""

from __future__ import annotations

from river_server.proxy_credentials import cookie_values, forwarded_cookies, forwarded_query

LOGIN = "username-127-0-0-1-8888"


def test_river_cookies_are_dropped_and_the_apps_kept_in_order() -> None:
    header = f'app=1; _xsrf=app-own; {LOGIN}="2|signed"; other=x=y; _xsrf=river'
    assert forwarded_cookies(header, LOGIN, "_xsrf") == "app=1; _xsrf=app-own; other=x=y"
    assert forwarded_cookies(f"{LOGIN}=v; _xsrf=river", LOGIN, "_xsrf") is None
    assert cookie_values(header, "_xsrf") == ["app-own", "river"]


def test_a_cookie_python_cannot_parse_does_not_hide_the_rest() -> None:
    header = f"bad cookie,=[x]; {LOGIN}=secret; _xsrf=river"
    kept = forwarded_cookies(header, LOGIN, "_xsrf")
    assert kept is not None and "secret" not in kept and "river" not in kept


def test_only_river_tokens_leave_the_query() -> None:
    river = {"rvt_abc", "server token"}
    query = "token=rvt_abc&x=1&token=app-own&token=server+token&y=%20"
    assert forwarded_query(query, river.__contains__) == "x=1&token=app-own&y=%20"
    assert forwarded_query("token=rvt_abc", river.__contains__) == ""
    assert forwarded_query("", river.__contains__) == ""
