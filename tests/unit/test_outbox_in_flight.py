"""Lines a task writes while the runner is posting a batch reach the host (none are dropped).

Regression: output appended to the outbox message a POST was already carrying was removed
with that message on acknowledgement, so a task's last lines (and `--pull` results) could
vanish.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from river_runner.agent import RunnerAgent, RunnerConfig


class _Backend:
    name = "process"


class _Host:
    """Stands in for the host's events route; a task prints while each POST is in flight."""

    def __init__(self, agent: RunnerAgent) -> None:
        self.agent = agent
        self.received: list[dict[str, Any]] = []

    async def post(self, path: str, json: dict[str, Any], headers: Any = None) -> Any:
        self.received.extend(copy.deepcopy(json["messages"]))  # the body as sent
        if len(self.received) == 1:  # the line printed during the first POST
            self.agent._on_output_for(7, "stdout", "written during the post", None, None)
        await asyncio.sleep(0)
        return SimpleNamespace(status_code=200, json=lambda: {}, text="", headers={})

    async def aclose(self) -> None:
        pass


def test_lines_added_while_a_batch_is_in_flight_are_sent(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        config = RunnerConfig(
            host_url="http://host", join_token="t", data_dir=tmp_path, results_in_memory=False
        )
        agent = RunnerAgent(config, _Backend(), None)  # type: ignore[arg-type]
        host = _Host(agent)
        agent._http = host  # type: ignore[assignment]
        agent.registered.set()
        loop = asyncio.ensure_future(agent._outbox_loop())
        agent._on_output_for(7, "stdout", "first", None, None)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not agent._outbox and len(host.received) >= 2:
                break
        agent._stopping = True
        loop.cancel()
        return [line["text"] for message in host.received for line in message["lines"]]

    assert asyncio.run(scenario()) == ["first", "written during the post"]
