"""Streamed model calls (`limits.model_idle_timeout`): a reply that stops arriving is cut
by the idle bound, its partial text kept, and the call retried under the retry policy;
the whole-call wall-clock bound still holds. Real SDK, real HTTP, the installed command."""

from __future__ import annotations

from tests.fake_api import fault
from tests.session_helpers import limits
from tests.turns import ending


def test_a_stalled_stream_is_cut_and_retried_then_the_run_completes(project, fake_api):
    # model_timeout is a minute: only the idle bound can end the stalled call this soon.
    project.job("job", limits(model_idle_timeout="1s", model_timeout="60s"))
    fake_api.enqueue(fault(stall_after=4), *ending())
    ran = project.run("run", "job")
    assert ran.code == 0, ran.stderr
    [record] = project.runs()
    assert (record["status"], record["steps"]) == ("completed", 2)
    assert all(r.body.get("stream") is True for r in fake_api.message_requests)
    events = project.trace(record["id"])
    [error] = [e for e in events if e["event"] == "model.error"]
    assert error["kind"] == "idle_timeout" and error["retryable"] is True
    assert error["partial_text"] == "Monday brought 1,204 signups"  # the first delta, kept
    assert [e["event"] for e in events if e["event"] == "model.retry"] == ["model.retry"]
    # The streamed tool calls were assembled whole: the memory and finish went through.
    assert "Report the day's numbers." in project.memory("job")


def test_a_stream_that_keeps_stalling_ends_the_run_with_its_partial_text(project, fake_api):
    project.job("job", limits(model_idle_timeout="1s", model_timeout="60s",
                              max_model_retries=1))
    fake_api.enqueue(fault(stall_after=4), fault(stall_after=4), *ending())
    ran = project.run("run", "job")
    assert ran.code == 1
    assert "ended ABORTED (model_api_error:idle_timeout)" in ran.stderr
    assert "the reply stalled" in ran.stderr and "gave up after 2 attempts" in ran.stderr
    assert "cut-off reply: Monday brought 1,204 signups" in ran.stderr
    [record] = project.runs()
    assert "cut-off reply: Monday brought 1,204 signups" in record["report"]
    assert len(fake_api.message_requests) == 2
    [alert] = project.alerts()
    assert alert["event"] == "run.aborted"
    assert "Monday brought 1,204 signups" in alert["details"]["report"]


def test_pings_alone_do_not_keep_a_stalled_stream_alive(project, fake_api):
    project.job("job", limits(model_idle_timeout="1s", model_timeout="60s"))
    fake_api.enqueue(fault(stall_after=4, ping_every=0.2), *ending())
    ran = project.run("run", "job")
    assert ran.code == 0, ran.stderr
    [record] = project.runs()
    [error] = [e for e in project.trace(record["id"]) if e["event"] == "model.error"]
    assert error["kind"] == "idle_timeout" and "only pings" in error["message"]


def test_streaming_keeps_the_whole_call_bound(project, fake_api):
    # A byte every 0.1 s never trips the 2 s idle bound; the wall-clock bound still ends
    # each call, and the run's time ends the run.
    project.job("job", limits(model_idle_timeout="2s", model_timeout="3s", max_seconds="6s"))
    fake_api.enqueue(*[fault(trickle=10)] * 6, *ending())
    ran = project.run("run", "job", timeout=90)
    assert ran.code == 3 and "ended LIMIT (max_seconds)" in ran.stderr, ran.stderr
    [record] = project.runs()
    errors = [e for e in project.trace(record["id"]) if e["event"] == "model.error"]
    assert errors and {e["kind"] for e in errors} == {"timeout"}
    assert "free" in project.run("locks").stdout


def test_without_the_idle_bound_replies_are_not_streamed(project, fake_api):
    project.job("job")
    fake_api.enqueue(*ending())
    assert project.run("run", "job").code == 0
    assert all("stream" not in r.body for r in fake_api.message_requests)
