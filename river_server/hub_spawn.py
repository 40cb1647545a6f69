"""Each Hub user's single-user server gets River as that user, with no setup.

Runs inside the JupyterHub process (jupyterhub_config.py), so it imports only the standard
library. The server's own Hub API token ($JUPYTERHUB_API_TOKEN, made by the Hub for this
one spawn and owned by this one user) is what River accepts as that user once it carries
River's access scope (river_server/hub.py); so no River secret is minted, stored or
renewed here, and the token ends with the server, as the Hub decides.

The Hub makes that token *before* `pre_spawn_hook` runs, so its scopes come from
`Spawner.server_token_scopes`, set here to the Hub's default `server` role plus
`access:services!service=<name>`. The hook then copies the token into RIVER_TOKEN beside
RIVER_URL, and adds RIVER_OFF_ARG to the server's arguments. It builds a new environment
dict (and argument list) on every spawn rather than changing the one
it finds: that dict may be the configured one that every user's spawner shares, and one
user's token must never be left where another user's spawn reads it.

Usage (jupyterhub_config.py; docs/jupyterhub.md):

    from river_server.hub_spawn import configure_spawner
    configure_spawner(c, river_url="http://10.0.0.1:8888/")
"""

from __future__ import annotations

from typing import Any

# jupyter-river enables its host extension for every Jupyter server where it is installed
# (its jupyter_server_config.d file), and a user's server has it installed for `%river`: the
# server would start a second River host (its own database, scheduler, SSH port) as that
# user. A command-line value wins over the config files (jupyter_server adds an extension
# found there only when the name is not set yet), so this one flag turns it off.
RIVER_OFF_ARG = "--ServerApp.jpserver_extensions=river_server=False"


def with_river_off(args: list[str]) -> list[str]:
    """`args` plus RIVER_OFF_ARG (once), as a new list: the configured list may be shared by
    every user's spawner."""
    return list(args) if RIVER_OFF_ARG in args else [*args, RIVER_OFF_ARG]


# The scopes of JupyterHub's default `server` role (what a server token has without
# configuration): post activity, let the Hub's proxy reach the server.
SERVER_ROLE_SCOPES = ("users:activity!user", "access:servers!server")


class RiverSpawnHook:
    """A `c.Spawner.pre_spawn_hook` that gives the server RIVER_URL and RIVER_TOKEN and turns
    River's host extension off in it, and a `c.Spawner.server_token_scopes` callable that
    lets that token reach River."""

    def __init__(self, river_url: str, service_name: str = "river") -> None:
        self.river_url = river_url.rstrip("/")
        self.service_name = service_name

    @property
    def access_scope(self) -> str:
        return f"access:services!service={self.service_name}"

    def server_token_scopes(self, spawner: Any) -> list[str]:
        return [*SERVER_ROLE_SCOPES, self.access_scope]

    def __call__(self, spawner: Any) -> None:
        spawner.args = with_river_off(list(spawner.args or []))
        token = getattr(spawner, "api_token", None)
        if not token:
            spawner.log.warning(
                "River: %s has no server token yet; RIVER_TOKEN not set", spawner._log_name
            )
            return
        spawner.environment = {
            **dict(spawner.environment or {}),
            "RIVER_URL": self.river_url,
            "RIVER_TOKEN": token,
        }


def configure_spawner(config: Any, river_url: str, service_name: str = "river") -> RiverSpawnHook:
    """Set the hook and the token scopes on `c.Spawner` (any spawner class inherits them)."""
    hook = RiverSpawnHook(river_url, service_name)
    config.Spawner.pre_spawn_hook = hook
    config.Spawner.server_token_scopes = hook.server_token_scopes
    return hook
