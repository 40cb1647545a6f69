"""Services receive their collaborators explicitly; only the composition root knows `River`.

river_server/services.py builds every service in dependency order and hands each the
collaborators it uses. A service that took the `River` locator again would hide the
dependency graph (and its cycles) and could no longer be built alone: the first test reads
the source of every host module and refuses `River` or a `river` parameter or attribute
outside the wiring (services.py, app.py, the request handlers and Jupyter's identity and
authorizer plugins, which get services from the app's settings). The others build services
alone, against an in-memory SQLite database, and use them.
"""

from __future__ import annotations

import ast
import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from river_runner.ids import SnowflakeGenerator
from river_runner.protocol import TaskState
from river_server import db
from river_server.blobs import BlobStore
from river_server.dbwork import DbWork
from river_server.dispatcher import Dispatcher
from river_server.environments import EnvironmentLimits, EnvironmentService
from river_server.events import EventBus
from river_server.logstore import LogStore
from river_server.nodes import NodeConnections, NodeRegistry
from river_server.overlay import OverlayService, OverlaySettings
from river_server.runner_client import RunnerClient
from river_server.tasks import TaskService

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "river_server"
# The composition root and the app that owns it.
WIRING_MODULES = {"services.py", "app.py"}
# Classes Jupyter or tornado instantiate, which find services in the app's settings.
WIRING_BASES = ("Handler", "IdentityProvider", "Authorizer")
JOIN = "join-token"
LOG = logging.getLogger("test.wiring")


def _is_wiring_class(node: ast.ClassDef) -> bool:
    names = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
    return node.name.endswith(WIRING_BASES) or any(n.endswith(WIRING_BASES) for n in names)


def locator_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for each mention of the locator outside wiring classes."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.ClassDef) and _is_wiring_class(node):
            return
        if isinstance(node, ast.Name) and node.id == "River":
            found.append((node.lineno, "names River"))
        elif isinstance(node, ast.alias) and node.name.split(".")[-1] == "River":
            found.append((getattr(node, "lineno", 0), "imports River"))
        elif isinstance(node, ast.arg) and node.arg == "river":
            found.append((node.lineno, "takes a `river` parameter"))
        elif isinstance(node, ast.Attribute) and node.attr in ("river", "River"):
            found.append((node.lineno, f"uses .{node.attr}"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_no_module_outside_the_wiring_refers_to_the_river_locator() -> None:
    offenders: dict[str, list[tuple[int, str]]] = {}
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if str(relative) in WIRING_MODULES or relative.parts[0] == "handlers":
            continue
        checked += 1
        found = locator_uses(ast.parse(path.read_text(), str(path)))
        if found:
            offenders[str(relative)] = found
    assert checked > 20, f"found too few host modules under {PACKAGE}"
    assert not offenders, (
        "services take their collaborators in their constructors, never the River locator "
        f"(river_server/services.py wires them): {offenders}"
    )


def test_the_checker_sees_a_locator() -> None:
    """The AST check itself: a service holding `river` is caught, a handler is not."""
    service = (
        "class S:\n    def __init__(self, river: River) -> None:\n        self.river = river\n"
    )
    assert {what for _, what in locator_uses(ast.parse(service))} == {
        "names River",
        "takes a `river` parameter",
        "uses .river",
    }
    handler = "class H(APIHandler):\n    def get(self):\n        self.river.tasks\n"
    assert locator_uses(ast.parse(handler)) == []


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The dispatcher's wake-ups schedule a pass on the current loop."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def sessions() -> Iterator[sessionmaker[Session]]:
    engine = db.make_engine("sqlite://")  # in memory: one connection per thread
    yield db.make_sessionmaker(engine)
    engine.dispose()


def test_node_registry_registers_a_runner_built_from_its_collaborators_only(
    tmp_path: Path, sessions: sessionmaker[Session], loop: asyncio.AbstractEventLoop
) -> None:
    connections = NodeConnections()
    bus = EventBus()
    runner_client = RunnerClient()
    work = DbWork(readers=1)  # one for all, as the composition root does: closed below
    environments = EnvironmentService(sessions, LOG, EnvironmentLimits(), tmp_path / "shared")
    engine = sessions.kw["bind"]
    overlay = OverlayService(engine, sessions, connections, OverlaySettings(), 64)
    tasks = TaskService(
        sessions,
        bus,
        LogStore(tmp_path / "logs", 1 << 20),
        BlobStore(tmp_path / "blobs", 1 << 20, 1 << 20),
        SnowflakeGenerator(),
        runner_client,
        connections,
        overlay,
        environments,
        LOG,
        require_approval=False,
        task_spec_max_bytes=1 << 20,
        max_tasks_per_user=10,
        user_mount_prefixes=(),
        work=work,
    )
    with pytest.raises(RuntimeError, match="bind_queue"):
        tasks.queue.wake()
    dispatcher = Dispatcher(
        sessions, connections, tasks, environments, runner_client, LOG, 300.0, (),
        work=work, overlay=overlay,
    )  # fmt: skip
    tasks.bind_queue(dispatcher)
    registry = NodeRegistry(
        sessions, bus, connections, tasks, dispatcher, overlay, LOG, JOIN, 5.0, 6, "boot-1",
        work=work,
    )  # fmt: skip

    answer = registry.register(
        JOIN, {"name": "n1", "url": "http://127.0.0.1:1", "inbound_secret": "s", "cpus": [0, 1]}
    )

    assert answer["boot_id"] == "boot-1" and answer["heartbeat_interval"] == 5.0
    assert isinstance(answer["credential"], str)
    assert connections.is_online("n1") and registry.is_online("n1")
    assert registry.name_for_credential(answer["credential"]) == "n1"
    with sessions() as session:
        node = session.get(db.Node, "n1")
        assert node is not None and node.state == "online"
        assert registry.to_json(node)["free"]["cores"] == 2

    task = tasks.submit("alice", {"command": ["true"], "cores": 1})
    assert task.state == TaskState.QUEUED.value
    assert dispatcher.schedule_pass() == 1  # placed on n1 (its launch runs on the loop)
    with sessions() as session:
        placed = session.get(db.Task, task.id)
        assert placed is not None and placed.node == "n1"
    loop.run_until_complete(runner_client.close())
    # The launch (to a runner that is not there) may still be on the loop or the DB
    # threads: end it, then let queued database work finish before the engine goes.
    pending = asyncio.all_tasks(loop)
    for launch in pending:
        launch.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    work.close()
