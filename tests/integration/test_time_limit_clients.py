"""`--time` from every client (issue #20): the `river` command, the magics in a real kernel
and the Python client send the limit, and a typo is a usage error before any request."""

from __future__ import annotations

import json
from pathlib import Path

from river_magics import Client
from tests.cluster import running_cluster
from tests.integration.test_notebook_experience import execute, notebook_of, text_of
from tests.integration.test_shell_cli import assert_one_line_error, river

HOST_ARGS = ["--RiverHost.time_limit_grace=2"]
SLEEPER = "import time; print('started', flush=True); time.sleep(60)"


def test_time_option_on_the_shell_the_magics_and_the_client(tmp_path: Path) -> None:
    home = tmp_path / "config"
    home.mkdir()
    (tmp_path / "c").mkdir()
    with running_cluster(
        tmp_path / "c", ("solo", "--cpus", "0,1"), extra_host_args=HOST_ARGS
    ) as cluster:
        # The shell: the limit travels, `river run` ends 124 (as timeout(1)) with the reason.
        result = river(cluster, home, "submit", "--json", "--time", "90m", "--", "true")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["time_limit"] == 5400
        ran = river(cluster, home, "run", "--time", "2s", "--", "sh", "-c", "echo up; sleep 60")
        assert ran.returncode == 124, (ran.returncode, ran.stdout, ran.stderr)
        assert "up" in ran.stdout
        assert "timeout" in ran.stderr and "time limit of 2s reached" in ran.stderr
        line = assert_one_line_error(
            river(cluster, home, "submit", "--time", "2 weeks", "--", "true"), 2
        )
        assert "--time" in line and "90m, 2h, 1d" in line
        line = assert_one_line_error(river(cluster, home, "vps", "create", "--time", "-1"), 2)
        assert "--time" in line

        # The Python client: text or seconds; a typo fails before any request.
        with Client(cluster.url, cluster.token) as client:
            handle = client.submit(command=["true"], time_limit="1h30m")
            assert handle.wait(30)["time_limit"] == 5400
            try:
                client.submit(command=["true"], time_limit="soon")
            except ValueError as exc:
                assert "90m, 2h, 1d" in str(exc)
            else:
                raise AssertionError("a bad time_limit was sent")
            before = len(client.tasks())

            # The magics in a real kernel.
            notebook = notebook_of(
                ("load", "%load_ext river_magics\n%river connect"),
                ("cell", f"%%river submit --time 2s\n{SLEEPER}"),
                ("run", "%river run --time 3s -- sh -c 'echo run-up; sleep 60'"),
                ("typo", "%river run --time 2weeks -- true"),
            )
            execute(notebook, cluster)
            cell = text_of(notebook, "cell")
            assert "started" in cell and "time limit of 2s reached" in cell, cell
            run = text_of(notebook, "run")
            assert "run-up" in run and "time limit of 3s reached" in run, run
            typo = text_of(notebook, "typo")
            assert "UsageError" in typo and "--time" in typo and "Traceback" not in typo, typo
            tasks = client.tasks()
            assert len(tasks) == before + 2  # the typo sent nothing
            assert {t["state"] for t in tasks[:2]} == {"timeout"}, tasks[:2]
