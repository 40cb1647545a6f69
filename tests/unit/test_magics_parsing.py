"""`%river` argument parsing, usage errors, SSE parsing and display text: no server needed.

Bad input must give a one-line UsageError before any request is made; the tests point the
client at a closed port, so a request that slipped through would show up as "cannot reach".
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from river_magics import Client, RiverConnectionError, RiverError
from river_magics.arguments import HelpShown, build_parser, parse_line
from river_magics.display import (
    compress_ids,
    format_duration,
    nodes_bundle,
    status_text,
    tasks_bundle,
)
from river_magics.events import KEEPALIVE, parse_sse
from river_runner.spec import SpecError


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def ip(monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    """An IPython shell with the extension loaded and a fresh magic (no client yet)."""
    monkeypatch.setenv("RIVER_URL", _closed_port_url())
    monkeypatch.delenv("RIVER_TOKEN", raising=False)
    shell = InteractiveShell.instance()
    shell.extension_manager.load_extension("river_magics")
    from river_magics import load_ipython_extension

    load_ipython_extension(shell)  # re-register: each test gets a magic with no client
    yield shell


def line(ip: InteractiveShell, text: str) -> object:
    return ip.run_line_magic("river", text)


def cell(ip: InteractiveShell, text: str, body: str) -> object:
    return ip.run_cell_magic("river", text, body)


# -- usage errors through the magic ---------------------------------------------------------


def test_bad_memory_is_a_usage_error_naming_memory(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match=r"memory.*12Q"):
        cell(ip, "submit -m 12Q", "print(1)")
    with pytest.raises(UsageError, match="memory"):
        line(ip, "run -m lots -- echo hi")


def test_bad_target_is_a_usage_error(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="target"):
        cell(ip, "submit -t 'bad node'", "print(1)")
    with pytest.raises(UsageError, match="NUMA"):
        line(ip, "run -t gpu1:x -- echo")
    with pytest.raises(UsageError, match="GPU list"):
        line(ip, "run -t gpu1::a -- echo")


def test_gpu_count_contradicting_target(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="contradicts"):
        cell(ip, "submit -t n1::0,1 --gpus 3", "print(1)")


def test_negative_or_non_numeric_counts(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="cores"):
        line(ip, "run -c -2 -- echo")
    with pytest.raises(UsageError, match="gpus"):
        line(ip, "run --gpus many -- echo")


def test_unknown_subcommand(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="invalid choice: 'frobnicate'"):
        line(ip, "frobnicate")


@pytest.mark.parametrize("command", ["logs", "status", "kill", "pause", "resume"])
def test_id_is_required(ip: InteractiveShell, command: str) -> None:
    with pytest.raises(UsageError, match="required: ID"):
        line(ip, command)


def test_an_empty_id_is_refused_before_any_request(ip: InteractiveShell) -> None:
    """IDs may be prefixes or names now (resolved by the host's list, see
    tests/integration/test_shell_cli.py); only an empty one is refused here, before any
    request (this test's host does not answer)."""
    with pytest.raises(UsageError, match="give a task ID, a unique prefix of one, or a task name"):
        line(ip, "logs ''")


def test_env_must_be_key_value(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="KEY=VALUE"):
        cell(ip, "submit --env NOVALUE", "print(1)")


def test_run_needs_a_command(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="needs a command"):
        line(ip, "run")
    with pytest.raises(UsageError, match="needs a command"):
        line(ip, "run -c 2 --")


def test_run_rejects_words_before_separator(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="before `--`"):
        line(ip, "run echo -- hi")


def test_unbalanced_quotes(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="cannot split"):
        line(ip, "run -- echo 'oops")


def test_submit_needs_a_cell(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="%%river submit"):
        line(ip, "submit -c 1")


def test_only_submit_takes_a_cell(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="only `%%river submit` takes a cell"):
        cell(ip, "nodes", "print(1)")


def test_empty_cell(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError, match="cell is empty"):
        cell(ip, "submit", "   \n")


def test_usage_errors_come_before_any_request(ip: InteractiveShell) -> None:
    """RIVER_URL points at a closed port: the message must be about the input, not the host."""
    with pytest.raises(UsageError) as info:
        cell(ip, "submit -m 12Q -c 1", "print(1)")
    assert "reach" not in str(info.value)


def test_help_prints_and_returns_none(ip: InteractiveShell, capsys: pytest.CaptureFixture) -> None:
    assert line(ip, "--help") is None
    out = capsys.readouterr().out
    assert "usage: %river" in out
    for command in ("connect", "nodes", "tasks", "logs", "run", "submit"):
        assert command in out
    assert cell(ip, "submit --help", "print(1)") is None
    out = capsys.readouterr().out
    assert "usage: %%river submit" in out and "--detach" in out


def test_empty_line_prints_help(ip: InteractiveShell, capsys: pytest.CaptureFixture) -> None:
    assert line(ip, "") is None
    assert "usage: %river" in capsys.readouterr().out


def test_run_cell_shows_usage_error_without_traceback(
    ip: InteractiveShell, capsys: pytest.CaptureFixture
) -> None:
    result = ip.run_cell("%river run -m 12Q -- echo hi")
    captured = capsys.readouterr()
    assert isinstance(result.error_in_exec, UsageError)
    assert "UsageError: argument -m/--memory" in captured.err
    assert "Traceback" not in captured.err + captured.out


# -- host problems are one-line usage errors too ---------------------------------------------


def test_no_host_configured(ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RIVER_URL")
    with pytest.raises(UsageError, match="no River host: run %river connect URL"):
        line(ip, "nodes")
    with pytest.raises(UsageError, match="no River host"):
        line(ip, "connect")


def test_unreachable_host_names_the_url(ip: InteractiveShell) -> None:
    url = _closed_port_url()
    with pytest.raises(UsageError, match=f"cannot reach River host at {url}"):
        line(ip, f"connect {url} --token T")
    with pytest.raises(UsageError, match="cannot reach River host"):
        line(ip, "tasks --all")


# -- the parser itself ----------------------------------------------------------------------


def test_run_keeps_everything_after_separator() -> None:
    args = parse_line(build_parser(), "run -c 2 -m 1G --name x -- python -c 'print(1)' --help")
    assert args.cmd == ["python", "-c", "print(1)", "--help"]
    assert (args.cores, args.memory, args.name) == (2, "1G", "x")


def test_run_without_separator_takes_the_rest() -> None:
    args = parse_line(build_parser(), "run -c 2 python -c 'print(1)'")
    assert args.cmd == ["python", "-c", "print(1)"]
    assert args.cores == 2


def test_shell_command_is_kept_as_typed() -> None:
    parser = build_parser()
    args = parse_line(parser, """run --name ' -- ' --shell -- echo "a  b" | wc -c && ls *.py""")
    assert args.shell_command == 'echo "a  b" | wc -c && ls *.py'
    assert args.name == " -- "
    assert parse_line(parser, "run --shell echo hi").shell_command == "echo hi"
    one_word = parse_line(parser, "run --shell -- 'for i in 1 2; do echo $i; done'")
    assert one_word.shell_command == "for i in 1 2; do echo $i; done"


def test_submit_options() -> None:
    args = parse_line(
        build_parser(),
        "submit -t gpu1:1::0,1 -c 4 -m 8G --name train -e A=1 --env B=x=y -w /data --detach",
    )
    assert args.target == "gpu1:1::0,1"
    assert (args.cores, args.memory, args.gpus) == (4, "8G", 0)
    assert args.env == [("A", "1"), ("B", "x=y")]
    assert (args.workdir, args.detach, args.name) == ("/data", True, "train")


def test_defaults_and_flags() -> None:
    parser = build_parser()
    args = parse_line(parser, "submit")
    assert (args.cores, args.memory, args.gpus, args.target, args.env) == (1, None, 0, None, [])
    assert parse_line(parser, "tasks --all").all is True
    assert parse_line(parser, "logs 12 -f").follow is True
    assert parse_line(parser, "logs 12").id == "12"
    assert parse_line(parser, "run --shell -- echo a | wc").shell is True
    connect = parse_line(parser, "connect http://h:8888 --token abc")
    assert (connect.url, connect.token) == ("http://h:8888", "abc")
    assert parse_line(parser, "connect").url is None


def test_parser_help_raises_help_shown(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(HelpShown):
        parse_line(build_parser(), "logs --help")
    assert "--follow" in capsys.readouterr().out


# -- client construction and local validation (no request made) -----------------------------


def test_client_needs_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RIVER_URL", raising=False)
    with pytest.raises(RiverError, match="no River host"):
        Client()


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("localhost:8888", "http://localhost:8888"),
        ("http://h:8888/", "http://h:8888"),
        ("http://h:8888/river/api", "http://h:8888"),
        ("https://h/user/a/lab?token=abc", "https://h/user/a"),
    ],
)
def test_client_url_forms(given: str, url: str) -> None:
    with Client(given, token="t") as client:
        assert client.url == url


def test_client_validates_before_sending() -> None:
    with Client(_closed_port_url()) as client:
        with pytest.raises(SpecError, match="memory"):
            client.submit(["echo"], memory="12Q")
        with pytest.raises(SpecError, match="target"):
            client.submit(["echo"], target="bad node")
        with pytest.raises(ValueError, match="exactly one"):
            client.submit(["echo"], script="print(1)")
        with pytest.raises(ValueError, match="task ID"):
            client.task("../nodes")
        with pytest.raises(RiverConnectionError, match="cannot reach"):
            client.nodes()


# -- server-sent events parsing -------------------------------------------------------------


def test_sse_parsing() -> None:
    lines = [
        "event: hello",
        'data: {"server_time": 1}',
        "",
        ": keepalive",
        "",
        "event: log",
        "id: 7",
        'data: {"task_id": "5",',
        'data:"seq": 1}',
        "",
        "retry: 100",
        "",
        "data: plain text",
        "",
        "event: task",
        'data: {"task": {"id": "5"}}',  # no blank line after: not dispatched
    ]
    assert list(parse_sse(lines)) == [
        ("hello", {"server_time": 1}),
        ("log", {"task_id": "5", "seq": 1}),
        ("message", "plain text"),
    ]
    with_keepalive = list(parse_sse(lines, keepalive=True))
    assert with_keepalive[1] == (KEEPALIVE, None)


# -- display text ---------------------------------------------------------------------------


def test_status_text() -> None:
    queued = {"id": "1", "state": "queued", "queue_position": 2, "wait_reason": "waiting for 4"}
    assert status_text(queued) == "queued (position 2): waiting for 4"
    running = {"id": "1", "state": "running", "node": "a", "cpus": [0, 1, 2, 5], "gpus": [1]}
    assert status_text(running) == "running on a (cpus 0-2,5, gpus 1)"
    done = {"state": "completed", "exit_code": 0, "started_at": 10.0, "finished_at": 11.234}
    assert status_text(done) == "completed (exit 0) in 1.23s"
    assert status_text({"state": "failed", "exit_code": 3}) == "failed (exit 3)"
    assert status_text({"state": "killed_oom"}).startswith("killed: out of memory")


def test_small_formatters() -> None:
    assert compress_ids([3, 0, 1, 2, 7, 9, 8]) == "0-3,7-9"
    assert compress_ids([]) == ""
    assert format_duration(0.5) == "0.50s"
    assert format_duration(125) == "2m05s"
    assert format_duration(3720) == "1h02m"


def test_tables_have_text_fallbacks() -> None:
    node = {
        "name": "node-a",
        "state": "online",
        "cores": 8,
        "memory": 16 * 1024**3,
        "gpus": [{"index": 0}, {"index": 1}],
        "free": {"cores": 6, "memory": 8 * 1024**3, "gpus": [1]},
        "metrics": {"cpu_percent": 12.4},
    }
    bundle = nodes_bundle([node])
    assert "node-a" in bundle["text/html"]
    text = bundle["text/plain"]
    assert "6/8" in text and "8.0G/16G" in text and "1/2" in text and "12" in text
    task = {"id": "42", "name": "<b>x</b>", "owner": "alice", "state": "queued",
            "queue_position": 1, "wait_reason": "waiting for 2 free cores"}  # fmt: skip
    tasks = tasks_bundle([task])
    assert "#1: waiting for 2 free cores" in tasks["text/plain"]
    assert "&lt;b&gt;x&lt;/b&gt;" in tasks["text/html"]
    assert "No tasks" in tasks_bundle([])["text/plain"]


def test_nodes_options_parse_and_refuse_what_a_job_cannot_take() -> None:
    args = parse_line(build_parser(), "submit --nodes 3 --gpus-per-node 2 -c 4 -m 8G")
    assert (args.nodes, args.gpus_per_node, args.cores) == (3, 2, 4)
    for bad, message in (
        ("submit --nodes 2 -t a", "leave out -t and --array"),
        ("submit --gpus-per-node 2", "add --nodes N"),
        ("submit --nodes 2 --gpus 1 --gpus-per-node 2", "not both"),
    ):
        with pytest.raises(UsageError, match=message):
            parse_line(build_parser(), bad)


def test_tasks_table_shows_a_job_as_one_row_with_its_members() -> None:
    def member(rank: int, state: str, node: str) -> dict[str, object]:
        job = {"id": "77", "rank": rank, "size": 3, "network": "overlay"}
        return {"id": str(100 + rank), "name": "train", "state": state, "node": node, "job": job}

    tasks = [
        member(2, "killed", "r3"),
        {"id": "5", "name": "solo", "state": "running", "node": "r1"},
        member(1, "failed", "r2"),
        member(0, "killed", "r1"),
    ]
    html_text = tasks_bundle(tasks)["text/html"]
    assert html_text.count("job 77 (3 of 3)") == 1
    assert "r1, r2, r3" in html_text and "solo" in html_text
    assert "failed" in html_text and ">101<" not in html_text
