"""The MCP client against real server processes: the SDK test server (tests/mcp_test_server.py)
over stdio and streamable HTTP, and the third-party `mcp-server-time` from the package index.
Process checks read /proc: a process counts as gone once it has exited (zombie or reaped)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from jobrunner.errors import ConfigError
from jobrunner.tools.mcp_client import INSTALL_HINT, STDERR_LIMIT, McpConnection, group_alive
from jobrunner.tools.mcp_config import (
    SAFE_ENV,
    McpListError,
    McpServerConfig,
    McpStartError,
    ServerName,
    ToolPolicy,
    assign_model_names,
    model_tool_name,
    policy_from_annotations,
)
from tests.conftest import REPO, reaped, wait_for

SERVER = str(REPO / "tests" / "mcp_test_server.py")
SECRET = "s3cret-value-0123456789"


def alive(pid: int) -> bool:
    """Whether `pid` is a running (not exited) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def stdio(*args: str, **keys) -> McpServerConfig:
    return McpServerConfig(command=[sys.executable, SERVER, *args], **keys)


def connect(config: McpServerConfig, root: Path, **keys) -> McpConnection:
    environ = {**os.environ, "TEST_SECRET": SECRET, "JOBRUNNER_LEAK_CHECK": "must-not-pass"}
    return McpConnection("test", config, root, environ=environ, **keys)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[McpConnection]:
    """One stdio server for the tests that leave it usable."""
    root = tmp_path_factory.mktemp("mcp-root")
    asked: list[dict] = []
    conn = connect(stdio(env={"GREETING": "hello"}, secrets_env=["TEST_SECRET"], timeout="10s"),
                   root, on_elicitation=asked.append)
    conn.asked = asked  # type: ignore[attr-defined]
    conn.list_tools()
    yield conn
    conn.close()


@pytest.fixture
def http_url() -> Iterator[str]:
    """The test server over streamable HTTP on a free port of 127.0.0.1."""
    proc = subprocess.Popen([sys.executable, SERVER, "--http"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    with reaped(proc):
        line = proc.stdout.readline()
        assert line.startswith("URL "), line
        yield line.split()[1]


# --- declaration ------------------------------------------------------------------------

def test_a_server_is_a_command_or_a_url_and_says_which_key_is_wrong():
    assert McpServerConfig(command=["srv"], timeout="90s").timeout == 90
    assert McpServerConfig(url="https://example.com/mcp", timeout=5).timeout == 5
    cases = [
        ({}, "exactly one of `command`"),
        ({"command": ["a"], "url": "http://h/mcp"}, "exactly one of `command`"),
        ({"command": []}, "non-empty list"),
        ({"url": "ftp://h"}, "http:// or https://"),
        ({"url": "http://h/mcp", "env": {"A": "b"}}, "`env` and `secrets_env` are for"),
        ({"command": ["a"], "headers_env": {"Authorization": "TOKEN"}}, "for a `url` server"),
        ({"command": ["a"], "secrets_env": ["bad-name"]}, "not an environment variable"),
        ({"url": "http://h/mcp", "headers_env": {"Bad Header": "T"}}, "not an HTTP header"),
        ({"command": ["a"], "env": {"K": "v"}, "secrets_env": ["K"]}, "both in `env`"),
        ({"command": ["a"], "timeout": "soon"}, "is not a duration"),
        ({"command": ["a"], "timeout": 0}, "more than 0"),
        ({"command": ["a"], "start_timeout": "0s"}, "more than 0"),
        ({"command": ["a"], "cwd": "/"}, "Extra inputs are not permitted"),
    ]
    for keys, message in cases:
        with pytest.raises(ValidationError) as caught:
            McpServerConfig(**keys)
        assert message in str(caught.value), (keys, str(caught.value))


def test_server_names_keep_model_names_unambiguous():
    class Table(BaseModel):
        servers: dict[ServerName, McpServerConfig]

    Table(servers={"files": {"command": ["x"]}, "my-srv_2": {"command": ["x"]}})
    for bad in ("a__b", "_a", "a_", "has space", "x" * 33, ""):
        with pytest.raises(ValidationError):
            Table(servers={bad: {"command": ["x"]}})


def test_model_names_are_sanitized_bounded_and_collisions_are_errors():
    assert model_tool_name("files", "read.file v2") == "files__read_file_v2"
    long = model_tool_name("files", "t" * 100)
    assert len(long) == 64 and long != model_tool_name("files", "t" * 99)
    assert assign_model_names("s", ["a", "b"]) == {"a": "s__a", "b": "s__b"}
    with pytest.raises(McpListError, match="'a.b' and tool 'a_b' would both be 's__a_b'"):
        assign_model_names("s", ["a_b", "a.b"])
    with pytest.raises(McpListError, match="another tool"):
        assign_model_names("s", ["read"], taken={"s__read"})


# --- policy -----------------------------------------------------------------------------

def test_policy_from_annotations_assumes_the_worst_when_a_hint_is_absent():
    assert policy_from_annotations(None) == ToolPolicy("high", True, False, True)
    assert policy_from_annotations({}) == ToolPolicy("high", True, False, True)
    assert policy_from_annotations({"readOnlyHint": True}) == ToolPolicy("low", False, True, True)
    assert policy_from_annotations({"readOnlyHint": True, "openWorldHint": False}) == \
        ToolPolicy("low", False, True, False)
    assert policy_from_annotations({"destructiveHint": True}) == \
        ToolPolicy("high", True, False, True)
    assert policy_from_annotations({"destructiveHint": False}) == \
        ToolPolicy("medium", True, False, True)
    assert policy_from_annotations({"destructive_hint": True, "idempotent_hint": True}) == \
        ToolPolicy("high", True, True, True)


def test_listed_annotations_map_to_policy(shared):
    policies = {t.name: t.policy for t in shared.list_tools()}
    assert policies["t_readonly"] == ToolPolicy("low", False, True, True)  # open world: absent
    assert policies["t_destructive"] == ToolPolicy("high", True, False, True)
    assert policies["t_additive"] == ToolPolicy("medium", True, False, True)
    assert policies["t_idempotent"] == ToolPolicy("medium", True, True, True)
    assert policies["t_openworld"] == ToolPolicy("low", False, True, True)
    assert policies["t_closedworld"] == ToolPolicy("low", False, True, False)
    assert policies["t_none"] == ToolPolicy("high", True, False, True)


# --- stdio: listing and calls -------------------------------------------------------------

def test_stdio_lists_tools_for_the_model(shared):
    tools = {t.name: t for t in shared.list_tools()}
    assert {"echo", "add", "fail", "hang", "crash", "ask", "t_none"} <= set(tools)
    echo = tools["echo"]
    assert echo.model_name == "test__echo" and echo.description == "Return the text unchanged."
    assert echo.definition()["input_schema"]["properties"]["text"]["type"] == "string"
    assert echo.annotations == {"read_only_hint": True, "open_world_hint": False}
    assert tools["t_none"].annotations is None


def test_tools_list_is_read_through_every_page(tmp_path, shared):
    with connect(stdio("--page-size", "4"), tmp_path) as paged:
        names = [t.name for t in paged.list_tools()]
    assert names == [t.name for t in shared.list_tools()] and len(names) > 8


def test_a_name_taken_elsewhere_stops_the_listing(shared):
    with pytest.raises(McpListError, match="would both be 'test__echo'"):
        shared.list_tools(taken={"test__echo"})


def test_calls_map_to_structured_results(shared):
    echo = shared.call("echo", {"text": "hi"})
    assert echo.ok and echo.data == {"result": "hi"} and echo.error is None
    added = shared.call("add", {"a": 2, "b": 3})
    assert added.ok and added.data == {"sum": 5}
    failed = shared.call("fail", {"message": "disk is full"})
    assert not failed.ok and not failed.raised and not failed.timed_out
    assert failed.error.endswith("disk is full (MCP server 'test', tool 'fail')")


def test_arguments_are_checked_against_the_schema_before_the_call(shared):
    bad = shared.call("echo", {"text": 5})
    assert not bad.ok and bad.invalid_arguments
    assert "text: 5 is not of type 'string'" in bad.error and '"required":["text"]' in bad.error
    missing = shared.call("add", {"a": 1})
    assert missing.invalid_arguments and "'b' is a required property" in missing.error
    unknown = shared.call("nope", {})
    assert unknown.invalid_arguments and "test has no tool 'nope'" in unknown.error
    assert "rejected arguments" not in shared.stderr_text()  # the server never saw them


def test_the_server_gets_a_scrubbed_environment_and_the_project_root(shared):
    result = shared.call("environment", {})
    env, cwd = result.data["env"], result.data["cwd"]
    assert cwd == str(shared.root)
    assert set(env) <= {*SAFE_ENV, "GREETING", "TEST_SECRET"}
    assert env["GREETING"] == "hello" and "JOBRUNNER_LEAK_CHECK" not in env
    # The secret reached the server, and comes back redacted.
    assert env["TEST_SECRET"] == "[REDACTED]"
    echoed = shared.call("echo", {"text": f"token {SECRET}"})
    assert echoed.data == {"result": "token [REDACTED]"}


def test_a_hanging_tool_is_bounded_and_the_server_stays_usable(shared):
    hung = shared.call("hang", {"seconds": 600}, timeout=0.5)
    assert not hung.ok and hung.timed_out
    assert hung.error == "timed out after 0.5s (MCP server 'test', tool 'hang')"
    by_deadline = shared.call("hang", {"seconds": 600}, deadline=time.monotonic() + 0.5)
    assert by_deadline.timed_out
    spent = shared.call("echo", {"text": "x"}, deadline=time.monotonic() - 1)
    assert spent.timed_out and "no time left in the run" in spent.error
    assert shared.call("echo", {"text": "still here"}).ok


def test_elicitation_is_declined_and_reported(shared):
    result = shared.call("ask", {"question": "Deploy to production?"})
    assert result.ok and result.data == {"result": "action=decline"}
    expected = {"server": "test", "mode": "form", "message": "Deploy to production?",
                "answer": "decline"}
    assert shared.asked[-1] == expected and shared.elicitations[-1] == expected


def test_sampling_is_refused(shared):
    result = shared.call("sample", {"question": "What is 2+2?"})
    assert not result.ok and "sampling capability" in result.error


def test_stderr_is_captured_bounded_and_redacted(shared):
    shared.call("write_stderr", {"text": "first line of many"})
    shared.call("write_stderr", {"text": "x" * 1000, "repeat": 200})
    shared.call("write_stderr", {"text": f"last line {SECRET}"})
    text = wait_for(lambda: (t := shared.stderr_text()) and "last line" in t and t,
                    what="the server's stderr")
    assert "first line of many" in text and "bytes of stderr dropped" in text
    assert "last line [REDACTED]" in text and SECRET not in text
    assert len(text.encode()) < STDERR_LIMIT + 200
    assert "jobrunner-mcp-group" not in text  # the guard's marker is not the server's output


# --- stdio: failures ------------------------------------------------------------------------

def test_a_crashing_server_fails_the_call_and_every_later_one(tmp_path):
    with connect(stdio(), tmp_path) as conn:
        crashed = conn.call("crash", {"code": 3})
        assert not crashed.ok and crashed.raised
        assert crashed.error.startswith("the server closed the connection mid-call")
        assert crashed.error.endswith("(MCP server 'test', tool 'crash')")
        assert "crashing with code 3" in crashed.error  # the last line of its stderr
        later = conn.call("echo", {"text": "x"})
        assert not later.ok and "the server is gone" in later.error


def test_a_server_that_cannot_start_is_a_start_error(tmp_path):
    missing = connect(McpServerConfig(command=["no-such-mcp-server-xyz"]), tmp_path)
    with pytest.raises(McpStartError, match="command not found: 'no-such-mcp-server-xyz'"):
        missing.list_tools()
    result = missing.call("anything", {})
    assert not result.ok and "(MCP server 'test', tool 'anything')" in result.error
    assert "command not found" in result.error


def test_a_server_that_exits_at_once_says_why(tmp_path):
    script = "import sys; sys.stderr.write('config file missing\\n'); sys.exit(2)"
    conn = connect(McpServerConfig(command=[sys.executable, "-c", script]), tmp_path)
    with pytest.raises(McpStartError, match="config file missing"):
        conn.list_tools()
    later = conn.call("echo", {"text": "x"})  # the same reason, not a second start
    assert not later.ok and "config file missing" in later.error


def test_a_server_that_never_answers_is_bounded_and_killed(tmp_path):
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    conn = connect(McpServerConfig(command=[sys.executable, "-c", script], start_timeout=2),
                   tmp_path)
    with pytest.raises(McpStartError, match="no answer to the handshake within 2s"):
        conn.start()
    assert conn.pgid is not None and not group_alive(conn.pgid)


def test_a_missing_secret_is_a_config_error(tmp_path):
    conn = McpConnection("test", stdio(secrets_env=["NOT_SET_ANYWHERE"]), tmp_path, environ={})
    with pytest.raises(ConfigError, match="mcp.test.secrets_env: NOT_SET_ANYWHERE is not set"):
        conn.start()
    web = McpServerConfig(url="http://127.0.0.1:9/mcp", headers_env={"Authorization": "NOPE"})
    with pytest.raises(ConfigError, match="headers_env.Authorization: NOPE is not set"):
        McpConnection("web", web, tmp_path, environ={}).start()


@pytest.mark.parametrize(("kind", "message"), [
    ("missing-schema", "tools/list failed: ValidationError"),
    ("bad-schema", "tool 'echo': invalid input schema"),
    ("hang", "no answer to tools/list within 1s"),
])
def test_a_failed_or_malformed_tools_list_is_a_list_error(tmp_path, kind, message):
    with connect(stdio("--malformed", kind, timeout=1), tmp_path) as conn:
        conn.start()  # within start_timeout: a loaded machine may take more than 1s
        with pytest.raises(McpListError, match=message):
            conn.list_tools()


# --- process lifetime -----------------------------------------------------------------------

def test_close_leaves_no_process_behind(tmp_path):
    conn = connect(stdio(), tmp_path)
    spawned = conn.call("spawn_grandchild", {}).data
    assert spawned["pgid"] == spawned["server_pid"] == conn.pgid
    assert alive(spawned["server_pid"]) and alive(spawned["pid"])
    conn.close()
    assert not alive(spawned["server_pid"])
    assert not alive(spawned["pid"])  # it ignores SIGTERM: only the group SIGKILL ends it
    assert not group_alive(conn.pgid)  # the watchdog too
    assert not conn.call("echo", {"text": "x"}).ok


def test_close_after_a_crash_still_kills_what_the_server_left(tmp_path):
    conn = connect(stdio(), tmp_path)
    grandchild = conn.call("spawn_grandchild", {}).data["pid"]
    assert conn.call("crash", {}).raised
    assert alive(grandchild)  # the SDK does not kill the tree of a server that exited
    conn.close()
    assert not alive(grandchild) and not group_alive(conn.pgid)


HOLDER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    {before}
    from jobrunner.tools.mcp_client import McpConnection
    from jobrunner.tools.mcp_config import McpServerConfig
    conn = McpConnection("test", McpServerConfig(command=[sys.executable, sys.argv[1]]),
                         Path("."))
    spawned = conn.call("spawn_grandchild", {{}}).data
    print(json.dumps({{**spawned, "pgid": conn.pgid}}), flush=True)
    {then}
""")


def hold(tmp_path: Path, before: str = "", then: str = "time.sleep(600)") -> subprocess.Popen:
    """A jobrunner-like parent process holding a connection to the test server."""
    return subprocess.Popen([sys.executable, "-c", HOLDER.format(before=before, then=then),
                             SERVER], cwd=tmp_path, stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("then", ["time.sleep(600)",
                                  'conn.call("hang", {"seconds": 600}, timeout=600)'])
def test_kill_9_of_the_parent_takes_the_server_and_its_children(tmp_path, then):
    with reaped(hold(tmp_path, then=then)) as parent:
        spawned = json.loads(parent.stdout.readline())
        assert alive(spawned["server_pid"]) and alive(spawned["pid"])
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        wait_for(lambda: not group_alive(spawned["pgid"]), timeout=10,
                 what="the server's process group to die with its parent")
    assert not alive(spawned["server_pid"]) and not alive(spawned["pid"])


def test_interpreter_exit_closes_connections_left_open(tmp_path):
    # This handler is registered before jobrunner's own, so it runs after it (atexit is
    # last-in, first-out) and sees what jobrunner's exit left behind.
    before = textwrap.dedent("""
        import atexit, importlib

        def report():
            client = importlib.import_module("jobrunner.tools.mcp_client")
            print("group alive at exit:", client.group_alive(conn.pgid))

        atexit.register(report)  # before jobrunner.tools.mcp_client is imported
    """)
    with reaped(hold(tmp_path, before=before, then="pass")) as parent:
        spawned = json.loads(parent.stdout.readline())
        rest = parent.stdout.read()
        assert parent.wait() == 0
    assert "group alive at exit: False" in rest
    assert not alive(spawned["pid"])


# --- streamable HTTP ---------------------------------------------------------------------------

def test_http_lists_calls_and_sends_headers_from_the_environment(tmp_path, http_url):
    config = McpServerConfig(url=http_url, headers_env={"X-Api-Token": "TEST_SECRET"},
                             timeout=10)
    with connect(config, tmp_path) as conn:
        assert "echo" in {t.name for t in conn.list_tools()}
        assert conn.call("echo", {"text": "over http"}).data == {"result": "over http"}
        headers = conn.call("request_headers", {}).data
        assert headers["x-api-token"] == "[REDACTED]"  # sent, and redacted on the way back
        failed = conn.call("fail", {"message": "nope"})
        assert not failed.ok and "nope" in failed.error
        assert conn.call("hang", {"seconds": 600}, timeout=0.5).timed_out
        assert conn.call("ask", {"question": "ok?"}).data == {"result": "action=decline"}
        crashed = conn.call("crash", {})
        assert not crashed.ok and crashed.raised
        assert conn.stderr_text() == ""


def test_http_server_not_listening_is_a_start_error(tmp_path, http_url):
    config = McpServerConfig(url=http_url.replace("/mcp", "/not-mcp"), timeout=5)
    with pytest.raises(McpStartError, match="handshake failed"):
        connect(config, tmp_path).list_tools()


# --- the third-party reference server -------------------------------------------------------

def test_mcp_server_time_from_the_package_index(tmp_path):
    program = Path(sys.executable).parent / "mcp-server-time"
    config = McpServerConfig(command=[str(program), "--local-timezone", "UTC"], timeout=20)
    with connect(config, tmp_path) as conn:
        tools = {t.name: t for t in conn.list_tools()}
        assert set(tools) == {"get_current_time", "convert_time"}
        for tool in tools.values():
            assert tool.policy == ToolPolicy("low", False, True, False)
        now = conn.call("get_current_time", {"timezone": "Europe/Paris"})
        assert now.ok and now.data["timezone"] == "Europe/Paris"
        converted = conn.call("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                               "target_timezone": "Asia/Tokyo"})
        assert converted.ok and converted.data["target"]["datetime"].endswith("21:00:00+09:00")
        bad = conn.call("get_current_time", {"timezone": "Mars/Olympus"})
        assert not bad.ok and "Invalid timezone" in bad.error


# --- packaging ------------------------------------------------------------------------------

@pytest.mark.parametrize(("module", "heavy"), [
    ("jobrunner.tools.mcp_client", ("mcp", "anyio", "jsonschema")),
    # What settings import to read [mcp.NAME] tables, and every run to resolve its tools:
    # not even asyncio.
    ("jobrunner.tools.mcp_config", ("mcp", "anyio", "jsonschema", "asyncio")),
    ("jobrunner.config.settings", ("mcp", "anyio", "jsonschema", "asyncio")),
    ("jobrunner.tools.mcp_tools", ("mcp", "anyio", "jsonschema", "asyncio")),
])
def test_mcp_is_imported_only_when_a_server_starts(module, heavy):
    probe = f"import sys, {module}; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_without_the_mcp_package_starting_says_what_to_install(tmp_path):
    probe = textwrap.dedent(f"""
        import sys
        sys.modules["mcp"] = None  # as if the extra were not installed
        from pathlib import Path
        from jobrunner.errors import ConfigError
        from jobrunner.tools.mcp_client import McpConnection
        from jobrunner.tools.mcp_config import McpServerConfig
        try:
            McpConnection("t", McpServerConfig(command=[sys.executable, {SERVER!r}]),
                          Path(".")).list_tools()
        except ConfigError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=tmp_path)
    assert INSTALL_HINT in out.stdout, out.stderr
