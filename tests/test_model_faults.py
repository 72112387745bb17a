"""Model API failures: jobrunner's own retry policy, attempt by attempt, through the real
SDK against injected faults; and the errors that are not retried, explained plainly."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.fake_api import WELL_FORMED_MESSAGE, fault
from tests.session_helpers import limits
from tests.turns import ending

FAULTS = {
    "429_retry_after": fault(status=429, headers={"retry-after-ms": "50"}),
    "500": fault(status=500),
    "529": fault(status=529),
    "timeout": fault(delay=5),
    "dropped": fault(drop=True),
    "malformed": fault(malformed=True),
}
KINDS = {"429_retry_after": "rate_limit", "500": "server", "529": "overloaded",
         "timeout": "timeout", "dropped": "connection", "malformed": "malformed"}


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_is_retried_then_the_run_completes(project, fake_api, name):
    project.job("job", limits(model_timeout="1s", max_model_retries=2))
    fake_api.enqueue(FAULTS[name], *ending())
    ran = project.run("run", "job")
    assert ran.code == 0, ran.stderr
    [record] = project.runs()
    assert record["status"] == "completed" and record["steps"] == 2
    events = project.trace(record["id"])
    requests = [e for e in events if e["event"] == "model.request"]
    assert [(e["step"], e["attempt"]) for e in requests] == [(1, 1), (1, 2), (2, 1)]
    [error] = [e for e in events if e["event"] == "model.error"]
    assert error["kind"] == KINDS[name] and error["retryable"] is True
    [retry] = [e for e in events if e["event"] == "model.retry"]
    if name == "429_retry_after":
        assert retry["delay_s"] == 0.05  # the server's retry-after-ms, honoured as given
    else:
        assert 0 < retry["delay_s"] <= 0.5  # first backoff step, with jitter


def test_retries_are_bounded_then_the_run_aborts_with_a_plain_report(project, fake_api):
    project.job("job", limits(max_model_retries=2))
    fake_api.enqueue(fault(status=529), fault(status=529), fault(status=529), *ending())
    ran = project.run("run", "job")
    assert ran.code == 1
    assert "ended ABORTED (model_api_error:overloaded)" in ran.stderr
    assert "HTTP 529 overloaded" in ran.stderr and "gave up after 3 attempts" in ran.stderr
    assert len(fake_api.message_requests) == 3
    assert [a["event"] for a in project.alerts()] == ["run.aborted"]


def test_retry_after_past_the_run_time_is_not_waited_for(project, fake_api):
    project.job("job", limits(max_seconds="60s"))
    fake_api.enqueue(fault(status=429, headers={"retry-after": "600"}), *ending())
    ran = project.run("run", "job")
    assert ran.code == 3
    assert "ended LIMIT (max_seconds)" in ran.stderr
    assert "would pass the run's time limit" in ran.stderr
    assert len(fake_api.message_requests) == 1


def test_model_call_timeout_is_cut_to_the_run_time_left(project, fake_api):
    # model_timeout is 300 s by default; the run has 8 s, so the call gives up with the run.
    project.job("job", limits(max_seconds="8s"))
    fake_api.enqueue(fault(delay=30), *ending())
    ran = project.run("run", "job", timeout=60)
    assert ran.code == 3 and "ended LIMIT (max_seconds)" in ran.stderr
    [record] = project.runs()
    [request] = [e for e in project.trace(record["id"]) if e["event"] == "model.request"]
    assert request["timeout"] <= 8


@pytest.mark.parametrize("status,advice", [
    (400, "check the job's model name"),
    (401, "check ANTHROPIC_API_KEY"),
    (403, "may not use this model"),
    (404, "check `model` in the job file"),
    (413, "the request is too large"),
])
def test_client_errors_are_not_retried_and_say_what_to_do(project, fake_api, status, advice):
    project.job("job")
    fake_api.enqueue(fault(status=status), *ending())
    ran = project.run("run", "job")
    assert ran.code == 1
    assert f"HTTP {status}" in ran.stderr and advice in ran.stderr
    assert len(fake_api.message_requests) == 1
    assert project.runs()[0]["stop_reason"].startswith("model_api_error:")


TRICKLES = {
    "slow_body": fault(trickle=10),  # the reply at 10 bytes a second: ~30 s in all
    "headers_then_stall": fault(trickle=0),
    "slow_headers": fault(trickle=2, trickle_headers=True),
}


@pytest.mark.parametrize("name", list(TRICKLES))
def test_a_trickling_server_cannot_hold_the_run_past_its_time(project, fake_api, name):
    # Each read gets a byte in time, so only a wall-clock bound ends the call.
    project.job("job", limits(max_seconds="6s", model_timeout="3s"))
    fake_api.enqueue(*[TRICKLES[name]] * 6, *ending())
    ran = project.run("run", "job", timeout=90)
    assert ran.code == 3 and "ended LIMIT (max_seconds)" in ran.stderr, ran.stderr
    [record] = project.runs()
    assert (record["status"], record["stop_reason"]) == ("limit", "max_seconds")
    took = (datetime.fromisoformat(record["ended_at"])
            - datetime.fromisoformat(record["started_at"])).total_seconds()
    assert took < 6 + 4, took
    assert "free" in project.run("locks").stdout
    events = project.trace(record["id"])
    requests = [e for e in events if e["event"] == "model.request"]
    errors = [e for e in events if e["event"] == "model.error"]
    assert requests and [e["attempt"] for e in errors] == [e["attempt"] for e in requests]
    assert {e["kind"] for e in errors} == {"timeout"}
    assert not any(e["event"] == "model.response" for e in events)


def _reply(**changes):
    """The well-formed reply with fields replaced (or removed, given `...`)."""
    body = {**WELL_FORMED_MESSAGE, **changes}
    return {k: v for k, v in body.items() if v is not ...}


SHAPES = {
    "content_not_a_list": (_reply(content="hello"), "content: expected a list"),
    "block_without_type": (_reply(content=[{"text": "hi"}]), "content.0.type: missing"),
    "usage_null": (_reply(usage=None), "usage: expected an object"),
    "no_stop_reason": (_reply(stop_reason=...), "stop_reason: expected a string"),
    "tool_use_without_input": (_reply(content=[{"type": "tool_use", "id": "toolu_1",
                                                "name": "finish"}]),
                               "content.0.input: expected an object"),
    "not_an_object": ([WELL_FORMED_MESSAGE], "expected a JSON object"),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_a_reply_of_the_wrong_shape_is_retried(project, fake_api, name):
    body, problem = SHAPES[name]
    project.job("job", limits(max_model_retries=2))
    fake_api.enqueue(fault(body=body), *ending())
    ran = project.run("run", "job")
    assert ran.code == 0, ran.stderr
    [record] = project.runs()
    assert record["status"] == "completed" and record["steps"] == 2
    [error] = [e for e in project.trace(record["id"]) if e["event"] == "model.error"]
    assert error["kind"] == "malformed" and error["retryable"] is True
    assert problem in error["message"]


def test_replies_of_the_wrong_shape_every_time_abort_the_run(project, fake_api):
    project.job("job", limits(max_model_retries=2))
    fake_api.enqueue(*[fault(body=_reply(usage=None))] * 3, *ending())
    ran = project.run("run", "job")
    assert ran.code == 1
    assert "ended ABORTED (model_api_error:malformed)" in ran.stderr, ran.stderr
    assert "usage: expected an object" in ran.stderr and "gave up after 3 attempts" in ran.stderr
    assert len(fake_api.message_requests) == 3
    assert project.runs()[0]["stop_reason"] == "model_api_error:malformed"
