"""A Hub user's server runs with River's host extension off, with no configuration.

jupyter-river's config file enables `river_server` in every Jupyter server where it is
installed, a user's server included (it has jupyter-river for `%river`); there it would
start a second River host as that user. Both ways River spawns servers add the flag
(river_server/hub_spawn.py), and jupyter_server itself is asked what the flag does.
The real spawns are in tests/hub/test_hub_service.py and tests/hub/test_river_spawner.py.
"""

from __future__ import annotations

from jupyter_server.serverapp import ServerApp
from jupyterhub.spawner import SimpleLocalProcessSpawner

from river_server.hub_spawn import RIVER_OFF_ARG, RiverSpawnHook
from river_server.hub_spawner import RiverSpawner


def test_the_flag_turns_river_off_whatever_the_config_files_enable() -> None:
    app = ServerApp()
    app.parse_command_line([RIVER_OFF_ARG, "--ServerApp.jpserver_extensions=notebook_shim=True"])
    app.find_server_extensions()  # the jupyter_server_config.d files, river_server's included
    assert app.jpserver_extensions["river_server"] is False
    assert app.jpserver_extensions["notebook_shim"] is True  # other flags still count


def test_river_spawner_servers_get_the_flag() -> None:
    spawner = RiverSpawner(args=["--debug"])
    assert spawner.get_args() == ["--debug", RIVER_OFF_ARG]


def test_the_spawn_hook_adds_the_flag_once_and_leaves_the_configured_list_alone() -> None:
    configured = ["--ServerApp.jpserver_extensions=jupyter_server_proxy=False"]
    spawner = SimpleLocalProcessSpawner(args=configured)
    spawner.api_token = "a-server-token"
    hook = RiverSpawnHook("http://127.0.0.1:8888/")
    hook(spawner)
    hook(spawner)  # a second spawn of the same user's server
    assert spawner.get_args().count(RIVER_OFF_ARG) == 1
    assert configured == ["--ServerApp.jpserver_extensions=jupyter_server_proxy=False"]
    assert spawner.environment["RIVER_TOKEN"] == "a-server-token"
