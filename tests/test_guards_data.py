"""The session's edges that need the real SDK over HTTP and the installed command: prompt
caching as the API counts it, secrets that must never leave the process, a recorded run
replayed offline, a price for every model the SDK knows. The other limits and data guards
run in-process: tests/test_session_data.py."""

from __future__ import annotations

import json
from typing import get_args

from tests.conftest import TEST_KEY
from tests.fake_api import tool_turn
from tests.session_helpers import TOOLS, calls
from tests.turns import MEMORY, ending


def setup(project, name="job", body="", **keys):
    project.tool_file("ops", TOOLS)
    project.job(name, body, **keys)


def model_responses(project, run_id):
    return [e for e in project.trace(run_id) if e["event"] == "model.response"]


def test_stable_prefix_is_cached_and_later_calls_read_it(project, fake_api):
    setup(project, tools=["search"])
    fake_api.enqueue(tool_turn([("search", {"query": "a"})]), *ending())
    assert project.run("run", "job").code == 0
    first = fake_api.message_requests[0].body
    assert first["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert first["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "# Memory: " in first["system"][-1]["text"] or "(empty" in first["system"][-1]["text"]
    [record] = project.runs()
    usage = [e["usage"] for e in model_responses(project, record["id"])]
    assert usage[0]["cache_creation_input_tokens"] > 0 and usage[0]["cache_read_input_tokens"] == 0
    assert 0 < usage[1]["cache_read_input_tokens"] < usage[2]["cache_read_input_tokens"]
    assert record["cache_read_tokens"] == sum(u["cache_read_input_tokens"] for u in usage)


SECRET_TOOLS = '''
import os
from jobrunner import tool
def _all():
    return " ".join(os.environ[k] for k in ("DB_PASSWORD", "MY_TOKEN", "SMTP_PASS",
                                            "ANTHROPIC_API_KEY"))

@tool(risk="low", side_effect=False)
def connect(host: str) -> str:
    """Connect."""
    return "connected with " + _all()

@tool(risk="low", side_effect=False)
def query(sql: str) -> str:
    """Query."""
    raise RuntimeError("login refused for " + _all())
'''
SECRETS = {"DB_PASSWORD": "hunter2-db-secret", "MY_TOKEN": "tok-abcdef123456",
           "SMTP_PASS": "smtp-pass-98765"}


def test_secrets_never_leave_the_process(project, fake_api):
    settings = project.root / "jobrunner.toml"
    settings.write_text(settings.read_text() + 'env_file = ".env"\nsecrets = ["DB_PASSWORD"]\n'
                        '[smtp]\nhost = "127.0.0.1"\npassword_env = "SMTP_PASS"\n')
    env_file = project.write(".env", f"MY_TOKEN={SECRETS['MY_TOKEN']}\n")
    env_file.chmod(0o600)
    project.tool_file("db", SECRET_TOOLS)
    project.job("db", tools=["connect", "query"])
    leaked_memory = {**MEMORY, "key_decisions": [f"password is {SECRETS['DB_PASSWORD']}"]}
    fake_api.enqueue(
        tool_turn([("update_memory", leaked_memory), ("connect", {"host": "db"})]),
        tool_turn([("query", {"sql": f"select '{SECRETS['SMTP_PASS']}'"})]),
    )
    ran = project.run("run", "db", env={k: v for k, v in SECRETS.items() if k != "MY_TOKEN"})
    assert ran.code == 1 and "login refused for [REDACTED]" in ran.stderr
    values = [*SECRETS.values(), TEST_KEY]
    # What jobrunner sent the model (the model's own turns echoed back are the model's).
    sent = [[r.body["system"], [m for m in r.body["messages"] if m["role"] == "user"]]
            for r in fake_api.message_requests]
    outputs = {"stderr": ran.stderr, "stdout": ran.stdout, "model requests": json.dumps(sent)}
    for path in [*project.state.rglob("*"), *(project.root / "memory").rglob("*")]:
        if path.is_file():
            outputs[str(path)] = path.read_bytes().decode("utf-8", "replace")
    assert any(p.endswith(".jsonl") for p in outputs)  # the trace and alert log were read
    for where, text in outputs.items():
        for value in values:
            assert value not in text, f"a secret reached {where}"
    assert "[REDACTED]" in project.memory("db")


def test_replay_turns_an_incident_into_a_regression_test(project, fake_api):
    setup(project, tools=["search", "publish"])
    fake_api.enqueue(tool_turn([("search", {"query": "signups"})], text="Looking."),
                     tool_turn([("publish", {"text": "147 signups"})]), *ending())
    assert project.run("run", "job").code == 0
    [record] = project.runs()
    script = project.run("replay", record["id"][:12])
    assert script.code == 0, script.stderr
    parsed = script.json()
    assert len(parsed["turns"]) == 4 and record["id"] in parsed["description"]
    project.write("jobs/incident.replay.json", script.stdout)
    project.job("incident", model="replay:jobs/incident.replay.json", tools=["search", "publish"])
    requests = len(fake_api.message_requests)
    replayed = project.run("run", "incident")
    assert replayed.code == 0, replayed.stderr
    assert len(fake_api.message_requests) == requests  # offline
    made = [(c["tool"], c.get("query") or c.get("text")) for c in calls(project)]
    assert made[:2] == made[2:] == [("search", "signups"), ("publish", "147 signups")]
    missing = project.run("replay", "nosuchrun")
    assert missing.code == 2 and "no run 'nosuchrun'" in missing.stderr


def test_every_current_model_of_the_sdk_has_a_price():
    from anthropic.types.model import Model

    from jobrunner.models.pricing import BUILTIN_PRICES

    [ids, _] = get_args(Model)
    missing = [m for m in get_args(ids) if m not in BUILTIN_PRICES and "preview" not in m]
    assert missing == []
