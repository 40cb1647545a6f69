"""Browser login through JupyterHub's OAuth (River registered as a Hub service).

`/river/hub/login` starts the Hub's OAuth (state cookie and PKCE from jupyterhub's
HubOAuth); the Hub sends the browser back to `/river/hub/oauth_callback`, which trades the
code for a token, asks the Hub whose it is, and sets River's own login cookie for that
user's River account (river_server/hub.py). The Hub token itself is not kept: River's
session is bound to the Hub account and lasts c.RiverHost.hub_session_lifetime, after which
the browser goes round the Hub again (silently while it is logged in there) and the role is
read afresh. Registered only when c.RiverHost.hub_api_url is set.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated
from jupyter_server.base.handlers import JupyterHandler
from tornado import web
from tornado.httputil import url_concat

from river_server.hub import HUB_BINDING, HubIdentity, HubIdentityError

LOGIN_ROUTE = r"/river/hub/login"
CALLBACK_ROUTE = r"/river/hub/oauth_callback"


class HubHandler(JupyterHandler):
    @property
    def hub(self) -> HubIdentity:
        return self.settings["river_hub"]

    def safe_next(self, next_url: str | None) -> str:
        """A page of this server only: an open redirect would hand the new session's
        first click to another site."""
        if next_url and next_url.startswith(self.base_url) and not next_url.startswith("//"):
            return next_url
        return self.base_url

    def refuse(self, status: int, message: str) -> None:
        """A short page that says what went wrong and how to try again."""
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(f"River: {message}\n")


class HubLoginHandler(HubHandler):
    """Start the Hub's OAuth for this browser."""

    @allow_unauthenticated
    def get(self) -> None:
        oauth = self.hub.oauth
        verifier, challenge, method = oauth.generate_pkce_code_challenge()
        state = oauth.set_state_cookie(
            self, next_url=self.safe_next(self.get_argument("next", None)), code_verifier=verifier
        )
        self.redirect(
            url_concat(
                oauth.login_url,
                {"state": state, "code_challenge": challenge, "code_challenge_method": method},
            )
        )


class HubCallbackHandler(HubHandler):
    """Finish the Hub's OAuth: the Hub user becomes (or is) a River user, logged in here."""

    @allow_unauthenticated
    async def get(self) -> None:
        oauth = self.hub.oauth
        error = self.get_argument("error", "")
        if error:
            self.refuse(400, f"the JupyterHub refused the login: "
                             f"{self.get_argument('error_description', error)}")
            return
        code = self.get_argument("code", "")
        state = self.get_argument("state", "")
        if not code or not state:
            self.refuse(400, "this page finishes a JupyterHub login and needs the Hub's code "
                             "and state; start again at /river/hub/login")
            return
        cookie_state = self.get_secure_cookie(oauth.get_state_cookie_name(state))
        oauth.clear_oauth_state_cookies(self)
        if cookie_state is None or cookie_state.decode("ascii", "replace") != state:
            self.refuse(403, "the login's state does not match this browser's (an old or "
                             "foreign link); start again at /river/hub/login")
            return
        next_url = self.safe_next(oauth.get_next_url(state))
        verifier = oauth.get_code_verifier(state)
        oauth.clear_oauth_state(state)
        try:
            token = await oauth.token_for_code(code, sync=False, code_verifier=verifier)
            model = await oauth.user_for_token(token, use_cache=False, sync=False)
        except web.HTTPError as exc:
            self.log.error("River: finishing a JupyterHub login failed: %s", exc)
            self.refuse(502, "the JupyterHub did not finish the login; try again")
            return
        if not self.hub.has_access(model):
            self.refuse(403, f"the JupyterHub user may not use this service (they need the "
                             f"scope {self.hub.settings.access_scope})")
            return
        try:
            user = await self.hub.user_for_model(model, binding=HUB_BINDING)
        except HubIdentityError as exc:
            self.refuse(exc.status, exc.message)
            return
        self.identity_provider.set_login_cookie(self, user)
        self.log.info("River user %s logged in through JupyterHub", user.username)
        self.redirect(next_url)


def handlers() -> list[tuple[str, Any]]:
    # Not `/user/<name>/`: Hub servers are forwarded on a listener of their own
    # (river_server/hub_servers.py), never on River's origin.
    return [(LOGIN_ROUTE, HubLoginHandler), (CALLBACK_ROUTE, HubCallbackHandler)]
