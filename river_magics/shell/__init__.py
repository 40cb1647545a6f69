"""The user commands of the `river` shell command (river login, submit, run, tasks, ...).

Each is an entry point of the `river.commands` group (pyproject.toml) and also listed in
river_runner/cli.py's built-in table, so they work before the distribution's metadata is
regenerated (an editable install made before they existed). See docs/cli.md.
"""

from __future__ import annotations

from .commands import COMMANDS

login_command = COMMANDS["login"]
submit_command = COMMANDS["submit"]
run_command = COMMANDS["run"]
tasks_command = COMMANDS["tasks"]
status_command = COMMANDS["status"]
logs_command = COMMANDS["logs"]
kill_command = COMMANDS["kill"]
nodes_command = COMMANDS["nodes"]
share_command = COMMANDS["share"]
vps_command = COMMANDS["vps"]
env_command = COMMANDS["env"]
forward_command = COMMANDS["forward"]
attach_command = COMMANDS["attach"]

__all__ = [f"{name}_command" for name in COMMANDS]
