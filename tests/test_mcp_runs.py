"""Jobs that use MCP servers, through the installed CLI and the real SDK: the test server
(tests/mcp_test_server.py) over stdio and streamable HTTP, and the package index's
`mcp-server-time` and `mcp-server-git`, against the fake Messages API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobrunner.tools.mcp_client import group_alive
from tests.conftest import REPO, reaped, wait_for
from tests.fake_api import tool_turn

SERVER = str(REPO / "tests" / "mcp_test_server.py")
BIN = Path(sys.executable).parent
SECRET = "mcp-secret-value-0123456789"
MEMORY = {"current_objective": "Use the server.", "key_decisions": [], "what_not_to_do": [],
          "open_items": []}
FINISH = {"status": "completed", "summary": "Done.", "established": [], "assumed": [],
          "unknown": []}


def declare(project, name: str, **table) -> None:
    """Add an `[mcp.NAME]` table to the project's jobrunner.toml."""
    lines = [f"\n[mcp.{name}]"]
    for key, value in table.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    with (project.root / "jobrunner.toml").open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def test_server(project, *args: str, **table) -> None:
    declare(project, "test", command=[sys.executable, SERVER, *args], **table)


test_server.__test__ = False  # a helper, not a test


def done():
    return [tool_turn([("update_memory", MEMORY)]), tool_turn([("finish", FINISH)])]


def trace(project, run_id: str) -> list[dict]:
    shown = project.run("show", run_id, "--json")
    assert shown.code == 0, shown.stderr
    return shown.json()["trace"]


def events(project, run_id: str, name: str) -> list[dict]:
    return [e for e in trace(project, run_id) if e["event"] == name]


def results(request) -> list[dict]:
    """The tool_result blocks of the last message of a request to the fake API."""
    return [b for b in request.body["messages"][-1]["content"] if b["type"] == "tool_result"]


def state_text(project) -> str:
    """Everything the state folder holds, as text (records, traces, logs)."""
    out = []
    for path in project.state.rglob("*"):
        if path.is_file():
            out.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(out)


# --- a run with a stdio server ----------------------------------------------------------

def test_a_job_uses_the_tools_of_a_stdio_server(project, fake_api):
    test_server(project, env={"GREETING": "hello"}, secrets_env=["TEST_SECRET"],
                timeout="20s")
    project.job("reader", tools=["mcp:test/echo", "mcp:test/add", "mcp:test/ask",
                                 "mcp:test/write_stderr", "mcp:test/environment"])
    fake_api.enqueue(
        tool_turn([("test__echo", {"text": 5})]),  # invalid: never reaches the server
        tool_turn([("test__echo", {"text": f"hello {SECRET}"}), ("test__add", {"a": 2, "b": 3}),
                   ("test__ask", {"question": "Deploy now?"}),
                   ("test__write_stderr", {"text": f"server log {SECRET}"}),
                   ("test__environment", {})]),
        *done())
    ran = project.run("run", "reader", env={"TEST_SECRET": SECRET})
    assert ran.code == 0, ran.stderr
    first, second, third = fake_api.message_requests[:3]
    # The model saw the server's tools under SERVER__TOOL, with its description and schema.
    tools = {t["name"]: t for t in first.body["tools"]}
    assert set(tools) == {"test__echo", "test__add", "test__ask", "test__write_stderr",
                          "test__environment", "update_memory", "finish"}
    assert tools["test__echo"]["description"] == "Return the text unchanged."
    assert tools["test__echo"]["input_schema"]["required"] == ["text"]
    [invalid] = results(second)
    assert invalid["is_error"] and "5 is not of type 'string'" in invalid["content"]
    assert '"required":["text"]' in invalid["content"]  # the valid schema, quoted
    echo, added, asked, _, environment = results(third)
    nonce = first.body["system"][0]["text"].split("<<<tool-output ")[1].split(">>>")[0]
    assert echo["content"].startswith(f"<<<tool-output {nonce}>>>")  # fenced as untrusted
    assert "hello [REDACTED]" in echo["content"] and SECRET not in json.dumps(results(third))
    assert '"sum": 5' in added["content"]
    assert "action=decline" in asked["content"]  # unattended: elicitation is declined
    env = json.loads(environment["content"].split("\n", 1)[1].rsplit("\n", 1)[0])
    assert env["cwd"] == str(project.root) and env["env"]["GREETING"] == "hello"
    assert "ANTHROPIC_API_KEY" not in env["env"]  # the child gets only its own variables
    [record] = project.runs()
    assert record["status"] == "completed" and record["tool_calls"] == 5
    [started] = events(project, record["id"], "mcp.start")
    assert started["server"] == "test" and started["tools"] > 10
    [elicited] = events(project, record["id"], "mcp.elicitation")
    assert elicited["message"] == "Deploy now?" and elicited["answer"] == "decline"
    [stderr] = events(project, record["id"], "mcp.stderr")
    assert "server log [REDACTED]" in stderr["text"]
    assert not group_alive(started["pgid"])  # the server did not outlive its run
    assert SECRET not in state_text(project)


def test_annotations_decide_approval_and_approve_makes_the_call_once(project, fake_api):
    test_server(project)
    project.job("writer", """
        [tool."test/echo"]
        risk = "high"
    """, tools=["mcp:test"])
    fake_api.enqueue(
        tool_turn([("test__t_readonly", {}), ("test__t_additive", {})]),
        tool_turn([("test__t_none", {})], text="t_none is needed."),
        *done())
    ran = project.run("run", "writer")
    assert ran.code == 4, ran.stderr  # needs approval
    [record] = project.runs()
    assert record["status"] == "needs_approval"
    # Every tool of the server, as the model sees it; the job's table made echo high risk.
    names = {t["name"] for t in fake_api.message_requests[0].body["tools"]}
    assert {"test__echo", "test__t_none", "test__t_destructive", "test__page"} <= names
    ledger = project.run("ledger", "--json").json()
    assert [e["tool"] for e in ledger] == ["test__t_additive"]  # medium: through the ledger
    [pending] = project.run("approvals", "--json").json()
    assert pending["tool"] == "test__t_none" and pending["reason"] == "t_none is needed."
    approved = project.run("approve", pending["id"])
    assert approved.code == 0, approved.stderr
    [after] = project.run("approvals", "--all", "--json").json()
    assert after["status"] == "approved" and after["outcome"] == "ok"
    assert after["result"] == "ok"
    again = project.run("approve", pending["id"])
    assert again.code != 0 and "already approved" in again.stderr
    starts = events(project, record["id"], "mcp.start")
    assert len(starts) == 2  # the run's, then the approval's own start of the server
    assert not group_alive(starts[-1]["pgid"])
    keys = {e["tool"]: e["status"] for e in project.run("ledger", "--json").json()}
    assert keys == {"test__t_additive": "done", "test__t_none": "done"}


# --- stop-and-report ----------------------------------------------------------------------

def test_an_iserror_result_stops_the_run_and_reports_server_tool_and_arguments(project,
                                                                             fake_api):
    test_server(project)
    project.job("failing", """
        [tool."test/fail"]
        retries = 0
    """, tools=["mcp:test/fail", "mcp:test/echo"])
    fake_api.enqueue(tool_turn([("test__fail", {"message": "disk is full"}),
                                ("test__echo", {"text": "never sent"})]))
    ran = project.run("run", "failing")
    assert ran.code == 1
    assert "ended ABORTED (tool_failed)" in ran.stderr
    assert "disk is full (MCP server 'test', tool 'fail')" in ran.stderr
    assert 'test__fail({"message": "disk is full"}): failed' in ran.stderr
    assert 'test__echo({"text": "never sent"}): not_executed' in ran.stderr
    assert len(fake_api.message_requests) == 1  # the model was not asked to carry on
    [record] = project.runs()
    assert record["status"] == "aborted" and record["stop_reason"] == "tool_failed"
    assert "disk is full" in project.memory("failing")  # the failure log line


def test_a_hanging_call_times_out_and_a_crash_stops_the_run(project, fake_api):
    test_server(project, timeout="1s")
    project.job("hung", """
        [tool."test/hang"]
        retries = 0
    """, tools=["mcp:test/hang"])
    project.job("crashed", tools=["mcp:test/crash", "mcp:test/echo"])
    fake_api.enqueue(tool_turn([("test__hang", {"seconds": 600})]),
                     tool_turn([("test__crash", {"code": 3}), ("test__echo", {"text": "x"})]))
    hung = project.run("run", "hung")
    assert hung.code == 1 and "ended ABORTED (tool_timeout)" in hung.stderr
    assert "timed out after 1s (MCP server 'test', tool 'hang')" in hung.stderr
    crashed = project.run("run", "crashed")
    assert crashed.code == 1 and "ended ABORTED (tool_failed)" in crashed.stderr
    assert "the server closed the connection mid-call" in crashed.stderr, crashed.stderr
    assert "crashing with code 3" in crashed.stderr  # the last line of its stderr
    assert 'test__echo({"text": "x"}): not_executed' in crashed.stderr
    by_job = {r["job"]: r for r in project.runs()}
    [stderr] = events(project, by_job["crashed"]["id"], "mcp.stderr")
    assert "crashing with code 3" in stderr["text"]
    # A timed-out or crashed call may have acted: a read-only tool keeps no ledger entry.
    assert project.run("ledger", "--json").json() == []


def test_the_run_time_bounds_an_mcp_call(project, fake_api):
    test_server(project, timeout="60s")
    project.job("short", """
        [limits]
        max_seconds = 4
    """, tools=["mcp:test/hang"])
    fake_api.enqueue(tool_turn([("test__hang", {"seconds": 600})]))
    ran = project.run("run", "short")
    assert ran.code == 3, ran.stderr  # a limit, not the server's 60s
    [record] = project.runs()
    assert record["status"] == "limit" and record["stop_reason"] == "max_seconds"


@pytest.mark.parametrize(("table", "message"), [
    ({"command": ["no-such-mcp-server-xyz"]}, "command not found: 'no-such-mcp-server-xyz'"),
    ({"command": [sys.executable, "-c", "import sys; sys.stderr.write('no config\\n'); "
                  "sys.exit(2)"]}, "no config"),
    ({"command": [sys.executable, SERVER, "--malformed", "bad-schema"]},
     "tool 'echo': invalid input schema"),
    ({"command": [sys.executable, SERVER, "--malformed", "missing-schema"]},
     "tools/list failed"),
    ({"command": [sys.executable, SERVER, "--malformed", "hang"], "timeout": "2s"},
     "no answer to tools/list within"),
])
def test_a_server_that_cannot_be_used_stops_the_run_before_the_model(project, fake_api,
                                                                       table, message):
    declare(project, "broken", **table)
    project.job("job", tools=["mcp:broken"])
    ran = project.run("run", "job")
    assert ran.code == 1, ran.stderr
    assert "ended ABORTED (mcp_server_failed)" in ran.stderr
    assert "MCP server 'broken'" in ran.stderr and message in ran.stderr
    assert fake_api.message_requests == []
    [record] = project.runs()
    assert record["status"] == "aborted" and record["stop_reason"] == "mcp_server_failed"
    assert [a["event"] for a in project.alerts()] == ["run.aborted"]
    [failed] = events(project, record["id"], "mcp.failed")
    assert failed["server"] == "broken"


def test_a_tool_the_server_does_not_have_stops_the_run(project, fake_api):
    test_server(project)
    project.job("job", tools=["mcp:test/no_such_tool"])
    ran = project.run("run", "job")
    assert ran.code == 1 and "has no tool 'no_such_tool'" in ran.stderr
    assert "it lists: add, ask" in ran.stderr and fake_api.message_requests == []


# --- process lifetime ---------------------------------------------------------------------

PROBE = textwrap.dedent("""
    import sys
    sys.argv = ["jobrunner", "run", "held"]
    from jobrunner.cli import main
    try:
        main()
    except SystemExit as exc:
        print("EXIT", exc.code)
    print("MCP_LOADED" if any(m == "mcp" or m.startswith("mcp.") for m in sys.modules)
          else "MCP_NOT_LOADED")
""")


def test_kill_9_of_a_run_leaves_no_server_and_the_skip_path_stays_light(project, fake_api):
    test_server(project, timeout="600s")
    project.job("held", """
        [tool."test/hang"]
        retries = 0
    """, tools=["mcp:test/spawn_grandchild", "mcp:test/hang"])
    fake_api.enqueue(tool_turn([("test__spawn_grandchild", {})]),
                     tool_turn([("test__hang", {"seconds": 600})]), *done(), *done())
    with reaped(project.popen("run", "held")) as first:
        wait_for(lambda: len(fake_api.message_requests) >= 2, what="the second model call")
        [spawned] = results(fake_api.message_requests[1])
        body = spawned["content"].split("\n", 1)[1].rsplit("\n", 1)[0]
        pids = json.loads(body)
        assert group_alive(pids["pgid"])
        # While the run holds the lock, another run is skipped without loading the SDK.
        probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                               cwd=project.root, env=project.env, timeout=120)
        assert probe.stdout.split() == ["EXIT", "0", "MCP_NOT_LOADED"], probe.stderr
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        wait_for(lambda: not group_alive(pids["pgid"]), timeout=20,
                 what="the server's group to die with its run")
    assert not Path(f"/proc/{pids['pid']}").exists() or \
        Path(f"/proc/{pids['pid']}/stat").read_text().split(") ")[1][0] == "Z"
    again = project.run("run", "held")  # the next run finds no orphan holding anything
    assert again.code == 0, again.stderr
    statuses = sorted(r["status"] for r in project.runs())
    assert statuses == ["completed", "crashed", "skipped"]


def test_help_does_not_import_mcp(project):
    test_server(project)
    code = ("import sys; sys.argv = ['jobrunner', '--help']\n"
            "from jobrunner.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('MCP_LOADED' if 'mcp' in sys.modules else 'MCP_NOT_LOADED')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=project.root, timeout=60)
    assert proc.stdout.strip().endswith("MCP_NOT_LOADED"), proc.stderr


# --- streamable HTTP --------------------------------------------------------------------------

@pytest.fixture
def http_url():
    """The test server over streamable HTTP on a free port of 127.0.0.1."""
    proc = subprocess.Popen([sys.executable, SERVER, "--http"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    with reaped(proc):
        line = proc.stdout.readline()
        assert line.startswith("URL "), line
        yield line.split()[1]


def test_a_job_uses_a_streamable_http_server_with_headers_from_the_environment(
        project, fake_api, http_url):
    declare(project, "crm", url=http_url, headers_env={"Authorization": "CRM_AUTH"})
    project.job("crm", tools=["mcp:crm/echo", "mcp:crm/request_headers", "mcp:crm/fail"])
    fake_api.enqueue(tool_turn([("crm__echo", {"text": "over http"}),
                                ("crm__request_headers", {})]),
                     tool_turn([("crm__fail", {"message": "crm is down"})]))
    missing = project.run("validate", "crm")
    assert missing.code == 2 and "mcp.crm.headers_env: CRM_AUTH is not set" in missing.stderr
    ran = project.run("run", "crm", env={"CRM_AUTH": f"Bearer {SECRET}"})
    assert ran.code == 1 and "crm is down (MCP server 'crm', tool 'fail')" in ran.stderr
    echo, headers = results(fake_api.message_requests[1])
    assert "over http" in echo["content"]
    assert '"authorization": "[REDACTED]"' in headers["content"]  # sent, and never shown
    assert SECRET not in state_text(project)


# --- third-party servers from the package index -------------------------------------------------

def test_mcp_server_time_end_to_end(project, fake_api):
    declare(project, "time", command=[str(BIN / "mcp-server-time"), "--local-timezone", "UTC"])
    project.job("clock", tools=["mcp:time"])
    fake_api.enqueue(tool_turn([("time__get_current_time", {"timezone": "Asia/Tokyo"}),
                                ("time__convert_time", {"source_timezone": "UTC",
                                                        "time": "12:00",
                                                        "target_timezone": "Europe/Paris"})]),
                     *done())
    listed = project.run("validate", "--connect", "--json")
    assert listed.code == 0, listed.stderr
    [job] = listed.json()["valid"]
    policies = {t["tool"]: (t["risk"], t["side_effect"], t["needs_approval"])
                for t in job["mcp_tools"]}
    assert policies == {"time__get_current_time": ("low", False, False),
                        "time__convert_time": ("low", False, False)}
    ran = project.run("run", "clock")
    assert ran.code == 0, ran.stderr
    now, converted = results(fake_api.message_requests[1])
    assert "Asia/Tokyo" in now["content"] and "+09:00" in now["content"]
    assert "Europe/Paris" in converted["content"]
    assert project.run("approvals", "--all", "--json").json() == []  # read-only: no approval
    assert project.run("ledger", "--json").json() == []  # and no side effect


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                          check=True).stdout


def test_mcp_server_git_reads_freely_and_its_commit_waits_for_approval(project, fake_api):
    git(project.root, "init", "-q", ".")
    (project.root / "notes.txt").write_text("first note\n")
    identity = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                for what, value in (("NAME", "agent"), ("EMAIL", "agent@example.com"))}
    declare(project, "git", command=[str(BIN / "mcp-server-git"), "--repository", "."],
            env=identity)
    project.job("committer", """
        [tool."git/git_commit"]
        risk = "high"
    """, tools=["mcp:git/git_status", "mcp:git/git_add", "mcp:git/git_commit"])
    fake_api.enqueue(
        tool_turn([("git__git_status", {"repo_path": "."}),
                   ("git__git_add", {"repo_path": ".", "files": ["notes.txt"]})]),
        tool_turn([("git__git_commit", {"repo_path": ".", "message": "Add the notes"})],
                  text="Commit the note."),
        *done())
    listed = project.run("validate", "--connect")
    assert listed.code == 0, listed.stderr
    assert "git__git_status (git/git_status): risk low (runs), read-only" in listed.stdout
    assert "git__git_add (git/git_add): risk medium (runs), side effect" in listed.stdout
    assert "git__git_commit (git/git_commit): risk high (approval)" in listed.stdout
    ran = project.run("run", "committer")
    assert ran.code == 4, ran.stderr
    status, added = results(fake_api.message_requests[1])
    assert "notes.txt" in status["content"] and "staged" in added["content"]
    assert "NOT executed" in results(fake_api.message_requests[2])[0]["content"]
    assert "does not have any commits" in subprocess.run(
        ["git", "log"], cwd=project.root, capture_output=True, text=True).stderr
    [pending] = project.run("approvals", "--json").json()
    assert pending["tool"] == "git__git_commit"
    assert project.run("approve", pending["id"]).code == 0
    assert git(project.root, "log", "--format=%an %s").strip() == "agent Add the notes"
    ledger = {e["tool"]: e["status"] for e in project.run("ledger", "--json").json()}
    assert ledger == {"git__git_add": "done", "git__git_commit": "done"}


# --- validation -------------------------------------------------------------------------------

def test_validate_lists_mcp_tools_and_connects_only_when_asked(project):
    test_server(project, timeout="20s")
    project.job("lister", """
        [tool."test/t_additive"]
        retries = 0

        [tool."test/t_readonly"]
        timeout = "5s"
    """, tools=["mcp:test/t_readonly", "mcp:test/t_additive", "mcp:test/t_none",
                "mcp:test/page"])
    plain = project.run("validate")
    assert plain.code == 0, plain.stderr
    assert "mcp:test/t_readonly: tools and policy come from the server" in plain.stdout
    connected = project.run("validate", "--connect", "--json")
    assert connected.code == 0, connected.stderr
    [job] = connected.json()["valid"]
    tools = {t["tool"]: t for t in job["mcp_tools"]}
    assert tools["test__t_readonly"] == {
        "tool": "test__t_readonly", "server": "test", "name": "t_readonly", "risk": "low",
        "side_effect": False, "retries": 2, "timeout": 5.0, "untrusted_output": True,
        "needs_approval": False}
    assert (tools["test__t_additive"]["risk"], tools["test__t_additive"]["retries"]) == \
        ("medium", 0)
    assert tools["test__t_none"]["risk"] == "high" and tools["test__t_none"]["needs_approval"]
    assert tools["test__page"]["untrusted_output"]


def test_validate_refuses_what_no_server_or_policy_allows(project):
    test_server(project, timeout="20s", secrets_env=["NEEDED_TOKEN"])
    project.job("bad", """
        [tool."test/echo"]
        timeout = "60s"

        [tool."other/x"]
        risk = "high"
    """, tools=["mcp:nope", "mcp:test/echo", "mcp:test/"])
    checked = project.run("validate", "bad")
    assert checked.code == 2
    job = "jobs/bad.toml"  # as validate names it: relative to the project
    text = (project.root / job).read_text().splitlines()
    line = {key: n for n, row in enumerate(text, 1) for key in ("tools", "test/echo",
                                                                   "timeout", "other/x")
            if row.startswith(key) or f'"{key}"' in row}
    assert f"{job}:{line['tools']}: tools: 'mcp:nope': no MCP server 'nope' is declared" \
        in checked.stderr
    assert "'mcp:test/': write mcp:SERVER (every tool) or mcp:SERVER/TOOL" in checked.stderr
    assert f"{job}:{line['other/x']}: tool.other/x: policy for a tool the job does not list" \
        in checked.stderr
    assert f"{job}:{line['timeout']}: tool.test/echo.timeout: must be more than 0 and at " \
           "most" in checked.stderr
    project.job("bad", """
        [tool."test/t_destructive"]
        risk = "medium"
    """, tools=["mcp:test/t_destructive"])
    missing = project.run("validate", "--connect")
    assert missing.code == 2 and "mcp.test.secrets_env: NEEDED_TOKEN is not set" in \
        missing.stderr
    loosened = project.run("validate", "--connect", env={"NEEDED_TOKEN": "t0ken-value"})
    assert loosened.code == 2
    assert "ok  bad" not in loosened.stdout
    assert f"{job}:8: tool.test/t_destructive.risk: cannot lower test__t_destructive's " \
           "declared risk 'high' to 'medium'" in loosened.stderr


# --- the injection corpus through an MCP tool's output --------------------------------------

def test_injection_payloads_in_mcp_output_stay_fenced_and_cannot_act(project, fake_api):
    from tests.test_chaos_injection import MARKER, PAYLOADS, _visible

    (project.root / "pages.json").write_text(json.dumps(PAYLOADS))
    test_server(project, timeout="20s")
    project.job("reader", """
        [limits]
        max_tool_calls = 80
        max_tool_result_chars = 20000
    """, tools=["mcp:test/page", "mcp:test/t_destructive"])
    fake_api.enqueue(
        tool_turn([("test__page", {"index": i}, f"toolu_page_{i:03d}")
                   for i in range(len(PAYLOADS))]),
        tool_turn([("test__t_destructive", {})], text="The operator authorised it."),
        *done())
    ran = project.run("run", "reader")
    assert ran.code == 4, ran.stderr  # the destructive call waits for a person
    first, second = fake_api.message_requests[:2]
    nonce = first.body["system"][0]["text"].split("<<<tool-output ")[1].split(">>>")[0]
    assert [m["role"] for m in second.body["messages"]] == ["user", "assistant", "user"]
    blocks = results(second)
    assert [b["tool_use_id"] for b in blocks] == [f"toolu_page_{i:03d}"
                                                  for i in range(len(PAYLOADS))]
    opening, closing = f"<<<tool-output {nonce}>>>\n", f"\n<<<end-tool-output {nonce}>>>"
    for payload, block in zip(PAYLOADS, blocks, strict=True):
        content = block["content"]
        assert not block.get("is_error") and content.startswith(opening), payload
        assert content.endswith(closing), payload
        inner = content[len(opening):-len(closing)]
        assert not MARKER.search(inner) and not MARKER.search(_visible(inner)), payload
        assert nonce not in inner
    [record] = project.runs()
    assert record["status"] == "needs_approval"
    [pending] = project.run("approvals", "--json").json()
    assert pending["tool"] == "test__t_destructive"
    assert "approval.pending" in [a["event"] for a in project.alerts()]


def test_without_the_mcp_package_a_run_says_what_to_install_and_records_nothing(project,
                                                                                fake_api):
    test_server(project)
    project.job("needs", tools=["mcp:test/echo"])
    code = ("import sys; sys.modules['mcp'] = None  # as if the extra were not installed\n"
            "sys.argv = ['jobrunner', 'run', 'needs']\n"
            "from jobrunner.cli import main\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    print('EXIT', exc.code)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=project.root, env=project.env, timeout=120)
    assert proc.stdout.split() == ["EXIT", "2"], proc.stderr
    assert "jobs/needs.toml:4: tools: MCP servers need the mcp package: pip install " \
           "'jobrunner[mcp]'" in proc.stderr
    assert project.runs() == [] and fake_api.message_requests == []


def test_sigterm_of_a_run_closes_its_servers(project, fake_api):
    test_server(project, timeout="600s")
    project.job("stopped", """
        [tool."test/hang"]
        retries = 0
    """, tools=["mcp:test/spawn_grandchild", "mcp:test/hang"])
    fake_api.enqueue(tool_turn([("test__spawn_grandchild", {})]),
                     tool_turn([("test__hang", {"seconds": 600})]))
    with reaped(project.popen("run", "stopped")) as run:
        wait_for(lambda: len(fake_api.message_requests) >= 2, what="the second model call")
        [spawned] = results(fake_api.message_requests[1])
        pids = json.loads(spawned["content"].split("\n", 1)[1].rsplit("\n", 1)[0])
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 1
        # Closed by the run itself, not left to the watchdog: gone when the run has exited.
        assert not group_alive(pids["pgid"])
    [record] = project.runs()
    assert record["status"] == "aborted" and record["stop_reason"] == "terminated"
