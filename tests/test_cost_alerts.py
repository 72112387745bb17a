"""Alerts on what no single run shows: `run.cost_spike` (a run costing several times the
job's usual) and `job.degraded` from `jobrunner check` (most recent runs unfinished, though
none in a row long enough to pause the job). Through the installed command and the fake API,
whose scripted usage sets each run's cost."""

from __future__ import annotations

from tests.fake_api import fault, tool_turn
from tests.turns import MEMORY, finish

CHEAP = {"input_tokens": 100, "output_tokens": 10}
DEAR = {"input_tokens": 20_000, "output_tokens": 10}


def run_costing(project, fake_api, first_usage: dict) -> dict:
    fake_api.enqueue(tool_turn([("update_memory", MEMORY)], usage=first_usage),
                     tool_turn([finish()], usage=CHEAP))
    ran = project.run("run", "job")
    assert ran.code == 0, ran.stderr
    return project.runs()[0]


def spikes(project) -> list[dict]:
    return [a for a in project.alerts() if a["event"] == "run.cost_spike"]


def test_a_run_far_dearer_than_the_usual_is_alerted_once_with_both_figures(project,
                                                                           fake_api):
    project.job("job")
    run_costing(project, fake_api, CHEAP)
    run_costing(project, fake_api, CHEAP)
    run_costing(project, fake_api, DEAR)
    assert spikes(project) == []  # two earlier runs are not yet a baseline
    run_costing(project, fake_api, CHEAP)
    assert spikes(project) == []
    dear = run_costing(project, fake_api, DEAR)
    [alert] = spikes(project)
    assert alert["run_id"] == dear["id"] and alert["job"] == "job"
    details = alert["details"]
    assert details["cost_usd"] == dear["cost_usd"] and details["baseline_runs"] == 4
    cheap = project.runs()[1]["cost_usd"]
    assert details["median_cost_usd"] == cheap  # median of cheap, dear, cheap, cheap
    assert f"${dear['cost_usd']:.4f}" in alert["message"]
    assert f"${cheap:.4f}" in alert["message"] and "cost_spike_factor = 3" in alert["message"]


def test_the_spike_factor_can_be_turned_off(project, fake_api):
    project.write("jobrunner.toml", (project.root / "jobrunner.toml").read_text()
                  + "[alerts]\ncost_spike_factor = 0\n")
    project.job("job")
    for usage in (CHEAP, CHEAP, CHEAP, DEAR):
        run_costing(project, fake_api, usage)
    assert spikes(project) == []


def alternate(project, fake_api, completed: bool) -> None:
    if completed:
        fake_api.enqueue(tool_turn([("update_memory", MEMORY)]), tool_turn([finish()]))
    else:
        fake_api.enqueue(fault(status=400))  # not retried: the run ends aborted
    project.run("run", "job")


def test_check_reports_a_job_that_fails_every_other_run_as_degraded(project, fake_api):
    project.job("job")  # pause_after = 3: alternating runs never pause it
    for completed in (True, False, True, False, True):
        alternate(project, fake_api, completed)
    ok = project.run("check")
    assert ok.code == 0, ok.stdout  # 2 of the last 5 unfinished: not degraded
    alternate(project, fake_api, False)
    assert [r["status"] for r in project.runs()][:5] == \
        ["aborted", "completed", "aborted", "completed", "aborted"]
    found = project.run("check")
    assert found.code == 1
    assert "degraded: job: degraded: 3 of its last 5 runs did not complete" in found.stdout
    assert "paused" not in found.stdout
    [alert] = [a for a in project.alerts() if a["event"] == "job.degraded"]
    assert alert["details"]["unfinished"] == 3 and alert["details"]["runs"] == 5
    again = project.run("check", "--json")
    assert [f["kind"] for f in again.json()["findings"]] == ["degraded"]
    # Within the cooldown the same finding is not alerted again.
    assert len([a for a in project.alerts() if a["event"] == "job.degraded"]) == 1
