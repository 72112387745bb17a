"""The storage contract: what every state backend must do, as one set of tests.

A backend's test module subclasses `StateContract` and provides `make_state()` (a fresh,
empty state with the redactor given). The same tests then run against every backend.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

from jobrunner.clock import iso, utcnow
from jobrunner.redact import Redactor
from jobrunner.state.records import AlreadyDone, Approval, Blocked, Claimed, RunRecord

SECRET = "hunter2-Sup3rSecret"
SLOT = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)


def run(run_id: str, job: str = "job", status: str = "running", **extra) -> RunRecord:
    return RunRecord(id=run_id, job=job, agent=job, status=status, trigger="manual",
                     started_at=extra.pop("started_at", iso(utcnow()) or ""), **extra)


def approval(approval_id: str, key: str = "job:tool:k", **extra) -> Approval:
    now = utcnow()
    values = dict(id=approval_id, job="job", run_id="r1", tool="publish",
                  args=json.dumps({"text": "hello"}), reason="asked", ledger_key=key,
                  status="pending", created_at=iso(now), expires_at=iso(now + timedelta(hours=1)))
    values.update(extra)
    return Approval(**values)


class StateContract:
    """Subclasses define `make_state(redactor)`."""

    def make_state(self, redactor: Redactor):
        raise NotImplementedError

    def state(self):
        return self.make_state(Redactor([SECRET]))

    # -- runs and slots -------------------------------------------------------------------

    def test_runs_are_recorded_updated_and_listed_newest_first(self):
        state = self.state()
        state.insert_run(run("20261123T070000-aaaaaa", started_at="2026-11-23T07:00:00Z"))
        state.insert_run(run("20261123T080000-bbbbbb", started_at="2026-11-23T08:00:00Z"))
        state.update_run("20261123T070000-aaaaaa", status="completed", steps=3, cost_usd=0.25)
        first = state.get_run("20261123T070000-aaaaaa")
        assert (first.status, first.steps, first.cost_usd) == ("completed", 3, 0.25)
        assert [r.id for r in state.list_runs("job")] == ["20261123T080000-bbbbbb",
                                                          "20261123T070000-aaaaaa"]
        assert [r.id for r in state.find_runs("20261123T07")] == ["20261123T070000-aaaaaa"]
        assert len(state.find_runs("20261123T")) == 2
        assert state.find_runs("2026%") == []
        assert state.get_run("nope") is None

    def test_runs_of_one_second_are_listed_newest_written_first(self):
        state = self.state()
        for run_id in ("20261123T070000-ffffff", "20261123T070000-000000"):
            state.insert_run(run(run_id, status="completed", started_at="2026-11-23T07:00:00Z"))
        assert [r.id for r in state.list_runs("job")] == ["20261123T070000-000000",
                                                          "20261123T070000-ffffff"]
        assert state.last_run("job").id == "20261123T070000-000000"

    def test_last_run_leaves_out_runs_that_never_started(self):
        state = self.state()
        state.insert_run(run("r1", status="completed", started_at="2026-11-23T07:00:00Z"))
        state.insert_run(run("r2", status="skipped", started_at="2026-11-23T08:00:00Z"))
        assert state.last_run("job").id == "r1"
        assert state.last_run("other") is None

    def test_a_slot_is_claimed_once(self):
        state = self.state()
        state.insert_run(run("r1"))
        state.insert_run(run("r2"))
        assert state.claim_slot("job", SLOT, "r1") is None
        assert state.claim_slot("job", SLOT, "r2") == "r1"
        assert state.claim_slot("other", SLOT, "r2") is None  # slots are per job

    def test_concurrent_claims_have_one_winner(self):
        state = self.state()
        results: list[str | None] = []
        barrier = threading.Barrier(8)

        def claim(n: int) -> None:
            barrier.wait()
            results.append(state.claim_slot("job", SLOT, f"r{n}"))
            state.close()

        threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results.count(None) == 1

    def test_a_slot_run_is_a_run_that_started(self):
        state = self.state()
        state.insert_run(run("r1", status="paused", slot=iso(SLOT)))
        assert state.slot_run("job", SLOT) is None
        assert state.claim_slot("job", SLOT, "r2") is None  # a paused run took nothing
        state.insert_run(run("r3", status="crashed", slot=iso(SLOT + timedelta(days=1))))
        assert state.slot_run("job", SLOT + timedelta(days=1)).id == "r3"
        assert state.claim_slot("job", SLOT + timedelta(days=1), "r4") == "r3"

    def test_released_slot_can_be_claimed_again(self):
        state = self.state()
        assert state.claim_slot("job", SLOT, "r1") is None
        state.release_slot("job", SLOT, "r1")
        assert state.claim_slot("job", SLOT, "r2") is None

    def test_day_spend_and_counted_statuses(self):
        state = self.state()
        for n, (status, cost, at) in enumerate([("completed", 0.1, "2026-11-22T23:00:00Z"),
                                                ("aborted", 0.2, "2026-11-23T01:00:00Z"),
                                                ("skipped", 0.0, "2026-11-23T02:00:00Z"),
                                                ("failed", 0.3, "2026-11-23T03:00:00Z")]):
            state.insert_run(run(f"r{n}", status=status, cost_usd=cost, started_at=at))
        since = datetime(2026, 11, 23, tzinfo=UTC)
        assert abs(state.cost_since("job", since) - 0.5) < 1e-9
        assert state.statuses("job", ("completed", "aborted", "failed"), "", 10) == [
            "failed", "aborted", "completed"]
        assert state.statuses("job", ("completed", "failed"), "2026-11-23T00:00:00Z", 10) == [
            "failed"]
        assert state.first_started("job") == "2026-11-22T23:00:00Z"
        assert [r.id for r in state.runs_since("job", since)] == ["r1", "r2", "r3"]

    def test_recent_costs_of_a_status_newest_first(self):
        state = self.state()
        for n, (status, cost) in enumerate([("completed", 0.1), ("aborted", 0.9),
                                            ("completed", 0.2), ("completed", 0.3)]):
            state.insert_run(run(f"r{n}", status=status, cost_usd=cost,
                                 started_at=f"2026-11-23T0{n}:00:00Z"))
        assert state.recent_costs("job", "completed", 10, "r3") == [0.2, 0.1]
        assert state.recent_costs("job", "completed", 1, "") == [0.3]

    # -- pauses ---------------------------------------------------------------------------

    def test_a_job_is_paused_once_and_resumed(self):
        state = self.state()
        assert state.pause_of("job") is None
        assert state.pause("job", "3 failures", "r1") is True
        assert state.pause("job", "again", "r2") is False
        pause = state.pause_of("job")
        assert pause.paused and pause.reason == "3 failures" and pause.run_id == "r1"
        assert state.resume("job") is True
        assert state.resume("job") is False
        lifted = state.pause_of("job")
        assert not lifted.paused and lifted.resumed_at
        assert state.pause("job", "later", None) is True

    # -- the ledger -----------------------------------------------------------------------

    def begin(self, state, key: str = "job:publish:k", run_id: str = "r1"):
        return state.ledger_begin(key, job="job", tool="publish", args='{"text": "x"}',
                                  run_id=run_id, pid=4242)

    def test_a_key_is_claimed_once_until_its_outcome_says_otherwise(self):
        state = self.state()
        assert isinstance(self.begin(state), Claimed)
        assert isinstance(self.begin(state, run_id="r2"), Blocked)  # intent recorded
        state.ledger_record("job:publish:k", "failed", None, "nothing happened")
        again = self.begin(state, run_id="r3")
        assert isinstance(again, Claimed) and again.entry.attempts == 2
        state.ledger_record("job:publish:k", "done", json.dumps({"ok": 1}), None)
        done = self.begin(state, run_id="r4")
        assert isinstance(done, AlreadyDone) and done.entry.result_data() == {"ok": 1}
        assert done.entry.run_id == "r3"

    def test_concurrent_begins_claim_a_key_once(self):
        state = self.state()
        claims: list[object] = []
        barrier = threading.Barrier(8)

        def begin(n: int) -> None:
            barrier.wait()
            claims.append(self.begin(state, run_id=f"r{n}"))
            state.close()

        threads = [threading.Thread(target=begin, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(isinstance(c, Claimed) for c in claims) == 1

    def test_in_doubt_entries_are_resolved_by_compare_and_swap(self):
        state = self.state()
        self.begin(state)
        state.ledger_record("job:publish:k", "in_doubt", None, "timed out")
        assert [e.key for e in state.ledger_open("job")] == ["job:publish:k"]
        assert state.ledger_resolve("job:publish:k", "in_doubt", "not_done", "ops", None)
        assert not state.ledger_resolve("job:publish:k", "in_doubt", "done", "ops", None)
        entry = state.ledger_get("job:publish:k")
        assert (entry.status, entry.resolved_by) == ("not_done", "ops")
        assert state.ledger_open("job") == []
        assert isinstance(self.begin(state, run_id="r2"), Claimed)
        assert [e.key for e in state.ledger_entries("job")] == ["job:publish:k"]

    # -- approvals ------------------------------------------------------------------------

    def test_approvals_are_found_by_prefix_and_decided_once(self):
        state = self.state()
        state.approval_insert(approval("ab12cd34"))
        state.approval_insert(approval("ab99ffff", key="job:tool:other"))
        assert [a.id for a in state.approvals_matching("ab12")] == ["ab12cd34"]
        assert len(state.approvals_matching("ab")) == 2
        assert state.approval_pending_for("job:tool:k").id == "ab12cd34"
        assert state.approval_decide("ab12cd34", "pending", "approving", decided_by="ops",
                                     decided_at=iso(utcnow()))
        assert not state.approval_decide("ab12cd34", "pending", "rejected")
        assert state.approval_pending_for("job:tool:k").status == "approving"
        assert state.approval_decide("ab12cd34", "approving", "approved", outcome="ok",
                                     result=json.dumps({"sent": True}))
        assert state.approval_pending_for("job:tool:k") is None
        assert [a.id for a in state.approvals_list()] == ["ab99ffff"]
        assert {a.id for a in state.approvals_list(everything=True)} == {"ab12cd34",
                                                                          "ab99ffff"}

    def test_overdue_approvals_expire_once(self):
        state = self.state()
        past = utcnow() - timedelta(hours=2)
        state.approval_insert(approval("old00000", created_at=iso(past),
                                       expires_at=iso(past + timedelta(hours=1))))
        state.approval_insert(approval("new00000", key="job:tool:new"))
        expired = state.approvals_expire(iso(utcnow()))
        assert [a.id for a in expired] == ["old00000"]
        assert state.approvals_expire(iso(utcnow())) == []
        assert state.approvals_matching("old00000")[0].status == "expired"

    # -- alerts and the outbox ------------------------------------------------------------

    def record(self, state, cause: str = "c", repeat_after: str | None = "",
               channels: list[str] | None = None, job: str | None = "job"):
        return state.alert_record(event="run.aborted", job=job, run_id="r1", cause=cause,
                                  message="aborted", at=iso(utcnow()), body='{"event": 1}',
                                  channels=channels or [], repeat_after=repeat_after)

    def test_an_alert_repeats_only_after_its_cooldown(self):
        state = self.state()
        first = self.record(state, repeat_after=iso(utcnow() - timedelta(hours=1)))
        assert first is not None
        assert self.record(state, repeat_after=iso(utcnow() - timedelta(hours=1))) is None
        assert self.record(state, repeat_after=iso(utcnow() + timedelta(hours=1))) is not None
        assert self.record(state, cause="other", repeat_after=None) is not None
        assert self.record(state, cause="other", repeat_after=None) is None  # once, ever
        assert self.record(state, job=None, repeat_after=None) is not None
        assert self.record(state, job=None, repeat_after=None) is None
        assert state.alert_raised("run.aborted", "job", "other")
        assert not state.alert_raised("run.aborted", "job", "never")
        assert state.alerts_recent(1)[0].job is None
        assert state.alerts_recent(10)[-1].repeats == 1

    def test_a_delivery_is_claimed_by_one_process_and_retried_until_delivered(self):
        state = self.state()
        alert_id = self.record(state, channels=["webhook-1", "command-2"])
        due = state.deliveries_due(None, iso(utcnow() - timedelta(minutes=5)))
        assert [(d.alert_id, d.channel) for d in due] == [(alert_id, "command-2"),
                                                          (alert_id, "webhook-1")]
        assert due[0].body == '{"event": 1}'
        assert state.undelivered() == 2
        assert state.delivery_claim(due[0]) is True
        assert state.delivery_claim(due[0]) is False  # already taken
        state.delivery_set(alert_id, "command-2", "delivered", None)
        state.delivery_set(alert_id, "webhook-1", "pending", "HTTP 500")
        assert state.undelivered() == 1
        [left] = state.deliveries_due([alert_id], iso(utcnow() - timedelta(minutes=5)))
        assert (left.channel, left.attempts, left.last_error) == ("webhook-1", 1, "HTTP 500")
        assert state.deliveries_due([], iso(utcnow())) == []
        assert [d.status for d in state.deliveries_of(alert_id)] == ["delivered", "pending"]

    def test_a_failing_channel_backs_off_doubling(self):
        state = self.state()
        state.channel_failed("webhook-1", "HTTP 500", 30, 600)
        first = state.channels_resting()["webhook-1"]
        state.channel_failed("webhook-1", "HTTP 500", 30, 600)
        second = state.channels_resting()["webhook-1"]
        assert second > first
        state.channel_ok("webhook-1")
        assert state.channels_resting() == {}

    # -- the redaction boundary -----------------------------------------------------------

    def test_every_text_written_is_redacted_and_identifiers_are_kept(self):
        state = self.state()
        key = "token:publish:k"  # looks like `token: value`, but it is a key
        state.insert_run(run("r1", job="token", report=f"failed: key {SECRET}"))
        state.update_run("r1", summary=f"said {SECRET}", stop_reason="tool_failed")
        state.ledger_begin(key, job="token", tool="publish", run_id="r1", pid=1,
                           args=json.dumps({"password": SECRET}))
        state.ledger_record(key, "in_doubt", None, f"upstream said api_key={SECRET}")
        state.approval_insert(approval("cd12cd34", key=key, reason=f"because {SECRET}",
                                       args=json.dumps({"text": SECRET})))
        self.record(state, cause="c")
        state.alert_record(event="run.failed", job="token", run_id="r1", cause="x",
                           message=f"m {SECRET}", at=iso(utcnow()),
                           body=json.dumps({"message": SECRET}), channels=["c"],
                           repeat_after=None)
        written = json.dumps([
            state.get_run("r1").as_json(), state.ledger_get(key).as_json(),
            state.approvals_matching("cd12cd34")[0].as_json(),
            [a.__dict__ for a in state.alerts_recent(10)],
        ])
        assert SECRET not in written
        assert state.ledger_get(key) is not None  # the key itself was not masked
        assert state.get_run("r1").job == "token"
        assert state.approval_pending_for(key).id == "cd12cd34"

    # -- read-then-write sections under concurrency ---------------------------------------

    def test_an_alert_raised_at_once_by_many_is_recorded_once(self):
        state = self.state()
        ids: list[int | None] = []
        barrier = threading.Barrier(8)

        def raise_alert() -> None:
            barrier.wait()
            ids.append(self.record(state, repeat_after=None))
            state.close()

        threads = [threading.Thread(target=raise_alert) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len([i for i in ids if i is not None]) == 1
        assert [a.repeats for a in state.alerts_recent(10)] == [7]

    def test_failures_of_one_channel_at_once_all_count(self):
        state = self.state()
        barrier = threading.Barrier(8)

        def fail() -> None:
            barrier.wait()
            state.channel_failed("webhook-1", "HTTP 500", 1, 10**6)
            state.close()

        threads = [threading.Thread(target=fail) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        retry_at = datetime.fromisoformat(state.channels_resting()["webhook-1"])
        # Eight failures: the next try waits 2^7 = 128 s; seven would have been 64 s.
        assert retry_at - state.now() > timedelta(seconds=100)

    # -- traces ---------------------------------------------------------------------------

    def test_a_trace_keeps_its_events_in_order_redacted(self):
        state = self.state()
        for seq in (1, 2, 3):
            state.trace_write("r1", json.dumps({"seq": seq, "event": "step",
                                                "text": f"key {SECRET}"}))
        state.trace_write("r2", json.dumps({"seq": 1, "event": "other"}))
        events = state.trace_read("r1")
        assert [e["seq"] for e in events] == [1, 2, 3]
        assert SECRET not in json.dumps(events)
        assert [e["event"] for e in state.trace_read("r2")] == ["other"]
        assert state.trace_read("unknown") == []

    def test_writers_appending_to_one_trace_at_once_lose_nothing(self):
        state = self.state()
        barrier = threading.Barrier(4)

        def write(writer: int) -> None:
            barrier.wait()
            for n in range(25):
                state.trace_write("r1", json.dumps({"writer": writer, "n": n,
                                                    "pad": "x" * 2000}))
            state.close()

        threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        events = state.trace_read("r1")
        assert len(events) == 100
        for writer in range(4):  # each writer's events in its own order
            assert [e["n"] for e in events if e["writer"] == writer] == list(range(25))

    # -- locks ----------------------------------------------------------------------------

    def test_a_lock_is_held_by_one_and_records_its_holder(self):
        state = self.state()
        first = state.lock("job-x")
        got = first.try_acquire()
        assert type(got).__name__ == "Acquired"
        assert (got.left_behind, got.previous) == (None, None) and first.held
        meta = first.mark_held("r1", "x", trigger="cron")
        assert (meta["state"], meta["run_id"], meta["trigger"]) == ("held", "r1", "cron")
        busy = state.lock("job-x").try_acquire()
        assert type(busy).__name__ == "Busy" and busy.holder["run_id"] == "r1"
        assert type(state.lock("job-y").try_acquire()).__name__ == "Acquired"
        first.heartbeat()
        assert first.read_meta()["heartbeat_at"] >= meta["heartbeat_at"]
        first.release()
        assert not first.held
        assert state.lock("job-x").read_meta() == {
            "state": "free", "last_run_id": "r1",
            "released_at": state.lock("job-x").read_meta()["released_at"]}
        again = state.lock("job-x")
        got = again.try_acquire()
        assert got.left_behind is None and got.previous["state"] == "free"
        again.release()

    def test_a_holder_gone_without_release_is_left_behind_until_recorded(self):
        state = self.state()
        dead = state.lock("job-x")
        dead.try_acquire()
        dead.mark_held("r1", "x")
        dead.release(keep_meta=True)  # the record stays "held", as when a holder dies
        lock = state.lock("job-x")
        got = lock.try_acquire()
        assert got.left_behind["run_id"] == "r1"
        lock.mark_crashed(got.left_behind)
        lock.release(keep_meta=True)
        crashed = state.lock("job-x").read_meta()
        assert (crashed["state"], crashed["run_id"]) == ("crashed", "r1")
        assert crashed["recorded_at"]
        last = state.lock("job-x")
        got = last.try_acquire()
        assert got.left_behind is None and got.previous["state"] == "crashed"
        last.release()
