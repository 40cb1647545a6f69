"""`GET /river/api/share`, `%river share` and `river share` (issue #20): after tasks have
run, each user's decayed usage, share and queue priority, lightest first."""

from __future__ import annotations

import json
import re
from pathlib import Path

from river_magics import Client
from tests.cluster import running_cluster
from tests.integration.test_notebook_experience import execute, notebook_of, text_of
from tests.integration.test_shell_cli import river


def test_share_shows_each_users_usage_after_tasks_ran(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "config").mkdir()
    with running_cluster(tmp_path / "c", ("solo", "--cpus", "0,1")) as cluster:
        tina = cluster.make_users("tina")["tina"]
        viewer = cluster.make_users("vera", role="viewer")["vera"]
        with Client(cluster.url, cluster.token) as me, Client(cluster.url, tina) as other:
            name = me.me()["name"]
            assert me.share()["users"] == []  # nothing has run yet
            heavy = me.submit(command=["sleep", "2"], cores=2)
            light = other.submit(command=["true"], cores=1)
            assert heavy.wait(30)["state"] == "completed"
            assert light.wait(30)["state"] == "completed"
            with Client(cluster.url, viewer) as onlooker:  # names and figures, for everyone
                share = onlooker.share()
        users = {row["user"]: row for row in share["users"]}
        assert set(users) == {name, "tina"}, share
        assert users[name]["core_seconds"] >= 2 * 1.5  # two cores for about two seconds
        assert users[name]["priority"] == 2 and users["tina"]["priority"] == 1
        assert abs(sum(row["share"] for row in share["users"]) - 1) < 1e-9
        assert share["enabled"] and share["half_life"] == 7 * 86400

        notebook = notebook_of(
            ("load", "%load_ext river_magics\n%river connect"), ("share", "%river share")
        )
        execute(notebook, cluster)
        shown = text_of(notebook, "share")
        row = next(line for line in shown.splitlines() if re.match(rf"\s*2\s+{name}\s", line))
        assert re.search(r"\d+\.\d%", row), shown
        assert "usage halves every 7d" in shown, shown

        result = river(cluster, tmp_path / "config", "share", "--json")
        assert result.returncode == 0, result.stderr
        assert {row["user"] for row in json.loads(result.stdout)["users"]} == {name, "tina"}
