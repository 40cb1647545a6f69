"""Default-deny access to every route of the host's Jupyter server.

Jupyter's own handlers (and those of any server extension: JupyterLab's extension manager,
settings, workspaces, build, LSP, ...) decide for themselves whether to consult the
authorizer, and many only check that someone is logged in. So the decision is taken here,
once, for every handler of the whole server (docs/security.md, design.md §8):

- `install(web_app, base_url, log)` replaces `web_app.get_handler_delegate`, the one call
  through which tornado instantiates *every* handler class (JupyterHandlers, static files,
  redirects, websockets, the 404 fallback). The first time it meets a handler class that
  is not yet guarded it walks all routing rules and replaces each rule's handler class by a
  guarded subclass that knows its `RouteRule`; a class that belongs to no rule (tornado's
  default handler) is guarded with no rule.
- A guarded handler's `prepare` runs the policy before the handler's own: admins pass, the
  rows of `POLICY` say what others may do, and a route with no row is admins-only.
  River's own routes (/river/api, /river/proxy) check roles and ownership themselves.

Rows match the route's regex exactly as registered (without the server's base_url) *and*
the handler class, so another extension's handler on a known path gets no rule.
"""

from __future__ import annotations

import enum
import inspect
import json
from collections.abc import Iterator
from dataclasses import dataclass
from logging import Logger
from typing import Any

from jupyter_server.base.handlers import JupyterHandler
from tornado import web
from tornado.httputil import url_concat
from tornado.routing import PathMatches, Rule

from river_server.auth import RiverAuthorizer, RiverUser

DENIED_HEADER = "X-River-Route-Policy"
READ = frozenset({"GET", "HEAD"})
ALL_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Access(enum.Enum):
    PUBLIC = "anyone, logged in or not"
    LOGGED_IN = "any River user"
    VPS_TERMINAL = "the owner of the VPS the terminal was made into"
    RIVER = "River's own API, which checks roles itself"


@dataclass(frozen=True)
class RouteRule:
    pattern: str  # the route's regex as registered, without base_url and the trailing $
    handler: str  # module.qualname of the handler class registered for it
    access: Access
    methods: frozenset[str] = READ


_JS = "jupyter_server"
_LAB = "jupyterlab_server"


def _rule(pattern: str, handler: str, access: Access = Access.LOGGED_IN, methods=READ) -> RouteRule:  # noqa: ANN001
    return RouteRule(pattern, handler, access, frozenset(methods))


# What non-admins may do outside River's own routes: log in and out, and read what
# JupyterLab needs to render. Everything else (kernels, terminals, files, contents, sessions,
# config, events, LSP, extension/plugin/build/settings/workspace writes, shutdown, ...) is
# for admins, as is any route without a row here.
POLICY: tuple[RouteRule, ...] = (
    _rule("/login", "river_server.auth.RiverLoginHandler", Access.PUBLIC, {"GET", "POST"}),
    _rule("/logout", f"{_JS}.auth.logout.LogoutHandler", Access.PUBLIC, {"GET"}),
    # Packaged front-end code and icons: public, as in any Jupyter server.
    _rule("/static/(.*)", f"{_JS}.base.handlers.FileFindHandler", Access.PUBLIC),
    _rule("/static/lab/(.*)", f"{_JS}.base.handlers.FileFindHandler", Access.PUBLIC),
    _rule(r"/(robots\.txt)", f"{_JS}.base.handlers.FileFindHandler", Access.PUBLIC),
    _rule(r"/(favicon\.ico)", f"{_JS}.base.handlers.FileFindHandler", Access.PUBLIC),
    _rule(
        r"/(robots\.txt|favicon\.ico)",
        f"{_JS}.base.handlers.PublicStaticFileHandler",
        Access.PUBLIC,
    ),
    # The lab page and what it loads to render.
    _rule("/?", f"{_JS}.base.handlers.RedirectWithParams"),
    _rule("/.*/", f"{_JS}.base.handlers.TrailingSlashHandler"),
    _rule(
        r"/(?P<mode>lab|doc)(?P<workspace>/workspaces/[a-zA-Z0-9\-\_]+)?(?P<tree>/tree/.*)?",
        f"{_LAB}.handlers.LabHandler",
    ),
    _rule("/lab/.*", f"{_LAB}.handlers.NotFoundHandler"),
    _rule("(.*)", f"{_JS}.base.handlers.Template404"),  # the catch-all: answers 404
    _rule("/lab/extensions/(.*)", f"{_JS}.base.handlers.FileFindHandler"),
    _rule("/lab/api/settings/?", f"{_LAB}.settings_handler.SettingsHandler"),
    _rule("/lab/api/settings/(?P<schema_name>.+)", f"{_LAB}.settings_handler.SettingsHandler"),
    _rule("/lab/api/translations/?", f"{_LAB}.translations_handler.TranslationsHandler"),
    _rule(
        "/lab/api/translations/(?P<locale>.*)", f"{_LAB}.translations_handler.TranslationsHandler"
    ),
    _rule("/lab/api/workspaces/?", f"{_LAB}.workspaces_handler.WorkspacesHandler"),
    _rule("/lab/api/workspaces/(?P<space_name>.+)", f"{_LAB}.workspaces_handler.WorkspacesHandler"),
    _rule("/lab/api/themes/(.*)", f"{_LAB}.themes_handler.ThemesHandler"),
    _rule("/lab/api/listings/(.*)", f"{_LAB}.listings_handler.ListingsHandler"),
    # Read-only lists (River starts the lab with the read-only extension manager).
    _rule("/lab/api/extensions", "jupyterlab.handlers.extension_manager_handler.ExtensionHandler"),
    _rule("/lab/api/plugins", "jupyterlab.handlers.plugin_manager_handler.PluginHandler"),
    _rule("/api/me", f"{_JS}.services.api.handlers.IdentityHandler"),
    _rule("/api/kernelspecs", f"{_JS}.services.kernelspecs.handlers.MainKernelSpecHandler"),
    _rule(
        r"/api/kernelspecs/(?P<kernel_name>[\w\.\-%]+)",
        f"{_JS}.services.kernelspecs.handlers.KernelSpecHandler",
    ),
    _rule(
        r"/kernelspecs/(?P<kernel_name>[\w\.\-%]+)/(?P<path>.*)",
        f"{_JS}.kernelspecs.handlers.KernelSpecResourceHandler",
    ),
    # The terminals the host made into a user's VPS (docs/vps.md): their owner only.
    _rule(
        r"/api/terminals/(\w+)",
        "jupyter_server_terminals.api_handlers.TerminalHandler",
        Access.VPS_TERMINAL,
        {"GET", "DELETE"},
    ),
    _rule(
        r"/terminals/websocket/(\w+)",
        "jupyter_server_terminals.handlers.TermSocket",
        Access.VPS_TERMINAL,
        {"GET"},
    ),
)

_BY_ROUTE = {(rule.pattern, rule.handler): rule for rule in POLICY}


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def route_pattern(rule: Rule, base_url: str) -> str | None:
    """A rule's path regex as registered, without base_url and the `$` tornado appends."""
    if not isinstance(rule.matcher, PathMatches):
        return None
    pattern = rule.matcher.regex.pattern.removesuffix("$")
    prefix = base_url.rstrip("/")
    if prefix and pattern.startswith(prefix + "/"):
        pattern = pattern[len(prefix) :]
    return pattern


def rule_for(pattern: str | None, handler: type) -> RouteRule | None:
    """The policy row for a route, or None (admins only)."""
    if pattern is None:
        return None
    name = class_path(handler)
    if name.startswith("river_server.") and pattern.startswith("/river/"):
        return RouteRule(pattern, name, Access.RIVER, ALL_METHODS)
    return _BY_ROUTE.get((pattern, name))


# ---- the decision -------------------------------------------------------------------------


async def _resolve_user(handler: web.RequestHandler) -> Any:
    """The caller, through the server's identity provider. A JupyterHandler keeps it, so its
    own prepare does not look it up again; other handlers (redirects, plain tornado ones)
    are identified through a throwaway JupyterHandler on the same request."""
    if isinstance(handler, JupyterHandler):
        probe = handler
    else:
        probe = JupyterHandler(handler.application, handler.request)
        # the probe took over the connection's close callback: give it back
        handler.request.connection.set_close_callback(handler.on_connection_close)
    user = probe.identity_provider.get_user(probe)
    if inspect.isawaitable(user):
        user = await user
    if probe is handler:
        handler.current_user = handler._jupyter_current_user = user
    return user


def _refuse(handler: web.RequestHandler, status: int, message: str) -> None:
    """Answer the refusal with tornado's own methods: handlers override finish() and
    write_error() in ways (async, other signatures) that do not fit here."""
    base = web.RequestHandler
    base.clear(handler)
    base.set_status(handler, status)
    base.set_header(handler, DENIED_HEADER, "denied")
    base.set_header(handler, "Content-Type", "application/json; charset=UTF-8")
    base.finish(handler, json.dumps({"message": message, "reason": "route policy"}))


def _what(handler: web.RequestHandler) -> str:
    return f"{handler.request.method} {handler.request.path}"


async def admit(handler: web.RequestHandler, rule: RouteRule | None) -> bool:
    """Apply the policy; False when the request was answered with a refusal."""
    method = handler.request.method or ""
    if rule is not None and (
        rule.access is Access.RIVER or (rule.access is Access.PUBLIC and method in rule.methods)
    ):
        return True
    user = await _resolve_user(handler)
    if user is None:
        if method in READ:  # a page: to the login form (it may be an admin's browser)
            handler.current_user = None
            try:
                login = handler.get_login_url()
            except (web.HTTPError, KeyError):  # API handlers refuse to redirect
                pass
            else:
                handler.redirect(url_concat(login, {"next": handler.request.uri}))
                return False
        _refuse(handler, 403, f"{_what(handler)}: log in to River first (or send a token)")
        return False
    role = getattr(user, "role", None) if isinstance(user, RiverUser) else None
    if role == "admin":
        return True
    if rule is not None and method in rule.methods and role is not None:
        if rule.access in (Access.LOGGED_IN, Access.PUBLIC):
            return True
        if rule.access is Access.VPS_TERMINAL and RiverAuthorizer._owns_vps_terminal(handler, user):
            return True
    allowed = sorted(rule.methods) if rule is not None else []
    hint = (
        f"only {', '.join(allowed)} for {rule.access.value}"
        if allowed
        else "this route of the host's Jupyter server is for River admins"
    )
    _refuse(
        handler,
        403,
        f"{_what(handler)} is refused: {hint}. Non-admins use River through /river/api "
        "and may only read what JupyterLab needs to render (docs/security.md).",
    )
    return False


# ---- wiring it into the server ------------------------------------------------------------


def guard(cls: type[web.RequestHandler], rule: RouteRule | None) -> type[web.RequestHandler]:
    """A subclass of `cls` whose prepare applies the policy first."""

    def check_xsrf_cookie(self: web.RequestHandler) -> None:
        # tornado checks XSRF before prepare for plain handlers: check it after the policy,
        # so a refusal is the policy's (with its message), then as before.
        if getattr(self, "_river_admitted", False):
            super(guarded, self).check_xsrf_cookie()

    async def prepare(self: web.RequestHandler, *args: Any, **kwargs: Any) -> None:
        if not await admit(self, rule):
            return
        self._river_admitted = True
        unsafe = self.request.method not in ("GET", "HEAD", "OPTIONS")
        if unsafe and not isinstance(self, JupyterHandler) and self.settings.get("xsrf_cookies"):
            self.check_xsrf_cookie()  # JupyterHandler.prepare checks it itself
        result = super(guarded, self).prepare(*args, **kwargs)
        if inspect.isawaitable(result):
            await result

    guarded = type(
        cls.__name__,
        (cls,),
        {
            "prepare": prepare,
            "check_xsrf_cookie": check_xsrf_cookie,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "river_route_rule": rule,
            "river_guarded_class": cls,
        },
    )
    return guarded


_UNROUTED: dict[type, type] = {}


def _guard_unrouted(cls: type[web.RequestHandler]) -> type[web.RequestHandler]:
    """A handler class no rule names (tornado's default 404 handler): admins only."""
    if cls not in _UNROUTED:
        _UNROUTED[cls] = guard(cls, None)
    return _UNROUTED[cls]


class UnguardableHandler(web.RequestHandler):
    """Stands in for a route target River cannot wrap (not a handler class): refused."""

    def prepare(self) -> None:
        _refuse(self, 403, f"{_what(self)}: River cannot apply its route policy to this route")


def iter_rules(router: Any) -> Iterator[Rule]:
    """Every rule of a tornado router, nested routers included, in routing order."""
    for rule in getattr(router, "rules", []):
        if hasattr(rule.target, "rules"):
            yield from iter_rules(rule.target)
        else:
            yield rule


def is_guarded(target: Any) -> bool:
    return inspect.isclass(target) and "river_guarded_class" in target.__dict__


def guard_all(web_app: web.Application, base_url: str, log: Logger | None = None) -> int:
    """Guard every rule not guarded yet; the number guarded now."""
    count = 0
    for rule in iter_rules(web_app.default_router):
        target = rule.target
        if is_guarded(target):
            continue
        if inspect.isclass(target) and issubclass(target, web.RequestHandler):
            rule.target = guard(target, rule_for(route_pattern(rule, base_url), target))
        else:
            if log:
                log.error("River route policy: refusing route %s (target %r)", rule.matcher, target)
            rule.target = guard(UnguardableHandler, None)
        count += 1
    return count


def install(web_app: web.Application, base_url: str, log: Logger | None = None) -> None:
    """Route every request of `web_app` through the policy (see the module docstring)."""
    original = web_app.get_handler_delegate
    if getattr(original, "river_route_policy", False):
        return

    def get_handler_delegate(request, target_class, *args, **kwargs):  # noqa: ANN001, ANN202
        if not is_guarded(target_class):
            if guard_all(web_app, base_url, log):
                # rules changed (first request, or a route added since): route again
                return web_app.find_handler(request)
            target_class = _guard_unrouted(target_class)
        return original(request, target_class, *args, **kwargs)

    get_handler_delegate.river_route_policy = True  # type: ignore[attr-defined]
    web_app.get_handler_delegate = get_handler_delegate  # type: ignore[method-assign]


def routes(
    web_app: web.Application, base_url: str
) -> list[tuple[str | None, type, RouteRule | None]]:
    """(pattern, original handler class, policy row) of every rule, in routing order, after
    guarding them all: what the route-walk test calls."""
    guard_all(web_app, base_url)
    found = []
    for rule in iter_rules(web_app.default_router):
        target = rule.target
        found.append(
            (route_pattern(rule, base_url), target.river_guarded_class, target.river_route_rule)
        )
    return found
