"""Print, as JSON, every route of a Jupyter server configured exactly like a running host.

Run as `python -m tests.security.route_lister ARGV...` with the host's own `jupyter lab`
arguments and environment: it builds the same ServerApp (every server extension loaded, as
`jupyter lab` does), without listening, guards its routes with River's route policy, and
prints each rule in routing order. The route-walk test reads the live route list this way
instead of through an endpoint on the host.
"""

from __future__ import annotations

import inspect
import json
import os
import sys

from jupyter_server.serverapp import ServerApp
from jupyterlab.labapp import LabApp
from tornado import web
from tornado.routing import PathMatches

from river_server import route_policy

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def implemented(cls: type) -> list[str]:
    return [
        m for m in METHODS if getattr(cls, m.lower()) is not getattr(web.RequestHandler, m.lower())
    ]


def main(argv: list[str]) -> None:
    ServerApp.init_httpserver = lambda self: None  # type: ignore[method-assign]  # the host has the port
    serverapp = LabApp.initialize_server(argv=argv)
    out = []
    rules = list(route_policy.iter_rules(serverapp.web_app.default_router))
    listed = route_policy.routes(serverapp.web_app, serverapp.base_url)
    for rule, (pattern, cls, policy) in zip(rules, listed, strict=True):
        out.append(
            {
                "pattern": pattern,
                "regex": rule.matcher.regex.pattern
                if isinstance(rule.matcher, PathMatches)
                else None,
                "handler": route_policy.class_path(cls),
                "access": policy.access.name if policy else None,
                "allowed": sorted(policy.methods) if policy else [],
                "implemented": implemented(cls) if inspect.isclass(cls) else [],
            }
        )
    print("ROUTES=" + json.dumps({"base_url": serverapp.base_url, "routes": out}), flush=True)
    os._exit(0)  # River's threads and the ioloop are not needed: leave at once


if __name__ == "__main__":
    main(sys.argv[1:])
