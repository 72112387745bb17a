"""The model API fault matrix, all at once: nine jobs run concurrently against one fake
server, each meeting a different fault. Transient faults are retried and the run completes;
permanent ones end it at once with a plain explanation; a hang ends at the time limit.
Every bad ending is recorded, reported on stderr and alerted."""

from __future__ import annotations

import json
import re
import threading
from collections import deque

from tests.fake_api import fault, text_turn
from tests.turns import ending

OK = ending()

# job: (faults served first, then the two good turns), expected status, reason, requests
MATRIX = {
    "rate-limited": ([fault(429, headers={"retry-after": "1"})], "completed", "finish", 3),
    "overloaded": ([fault(529), fault(529)], "completed", "finish", 4),
    "server-error": ([fault(500)], "completed", "finish", 3),
    "dropped": ([fault(drop=True)], "completed", "finish", 3),
    "malformed": ([fault(malformed=True)], "completed", "finish", 3),
    "bad-key": ([fault(401)], "aborted", "model_api_error:auth", 1),
    "bad-request": ([fault(400, message="messages: invalid")], "aborted",
                    "model_api_error:invalid_request", 1),
    "overloaded-forever": ([fault(529)] * 3, "aborted", "model_api_error:overloaded", 3),
    "hanging": ([fault(delay=60)], "limit", "max_seconds", 1),
}
EXIT = {"completed": 0, "aborted": 1, "limit": 3}


def test_fault_matrix_under_concurrency(project, fake_api):
    scripts = {name: deque([*faults, *OK]) for name, (faults, *_) in MATRIX.items()}
    seen: dict[str, int] = dict.fromkeys(MATRIX, 0)
    lock = threading.Lock()

    def respond(body):
        name = re.search(r"Job: ([a-z0-9_-]+)", json.dumps(body["system"]))[1]
        with lock:
            seen[name] += 1
            script = scripts[name]
            return script.popleft() if script else text_turn("script exhausted")

    fake_api.responder = respond
    for name in MATRIX:
        limits = "max_model_retries = 2\n"
        if name == "hanging":
            # The run's time also pays the SDK import, slow with nine processes starting at
            # once on a busy machine; the call must still reach the server to hang there.
            limits += "max_seconds = 30\n"
        project.job(name, "[limits]\n" + limits)
    procs = {name: project.popen("run", name) for name in MATRIX}
    outputs = {name: proc.communicate(timeout=120) for name, proc in procs.items()}

    records = {r["job"]: r for r in project.runs()}
    alerts = {a["job"]: a["event"] for a in project.alerts()}
    for name, (_, status, reason, requests) in MATRIX.items():
        _, stderr = outputs[name]
        record = records[name]
        assert (record["status"], record["stop_reason"]) == (status, reason), \
            (name, record["report"])
        assert procs[name].returncode == EXIT[status], (name, stderr)
        assert seen[name] == requests, (name, seen[name])
        if status == "completed":
            assert stderr == "" and name not in alerts
        else:
            assert f"ended {status.upper()} ({reason})" in stderr, (name, stderr)
            assert alerts[name] == f"run.{status}", name
    assert "ANTHROPIC_API_KEY" in outputs["bad-key"][1]  # says how to fix it
