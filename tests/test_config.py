"""Bad job files and settings: one located line each, exit 2, nothing run or written."""

from __future__ import annotations

import os

import pytest

GOOD = """\
schedule = "0 8 * * *"
timezone = "UTC"
model = "claude-sonnet-4-6"
prompt = "Do the task."
"""

CASES = [
    ("unknown key", GOOD + 'shedule = "x"\n', ":5: shedule: unknown key"),
    ("unknown key in a table", GOOD + "[limits]\nmax_step = 3\n",
     ":6: limits.max_step: unknown key (did you mean 'max_steps'?)"),
    ("wrong type", GOOD + '[limits]\nmax_steps = "twenty"\n',
     ":6: limits.max_steps: Input should be a valid integer"),
    ("bad cron", GOOD.replace('"0 8 * * *"', '"0 25 * * *"'),
     ":1: schedule: hour: 25 is outside 0-23"),
    ("cron field count", GOOD.replace('"0 8 * * *"', '"0 8 * *"'),
     ":1: schedule: expected 5 fields"),
    ("unknown timezone", GOOD.replace('"UTC"', '"Europe/Berln"'),
     ":2: timezone: unknown time zone 'Europe/Berln'"),
    ("unknown tool", GOOD + 'tools = ["send_emial"]\n',
     ":5: tools: unknown tool 'send_emial' (did you mean 'send_email'?)"),
    ("unknown model", GOOD.replace("claude-sonnet-4-6", "gpt-4"),
     ":3: model: unknown model 'gpt-4'"),
    ("bad duration", GOOD + "[lock]\nstale_after = \"30 minutes\"\n",
     ":6: lock.stale_after: '30 minutes' is not a duration"),
    ("bad enum", GOOD + "[lock]\non_stale = \"ignore\"\n",
     ":6: lock.on_stale: Input should be 'alert' or 'terminate'"),
    ("negative limit", GOOD + "[limits]\nmax_cost_usd = -1\n",
     ":6: limits.max_cost_usd: Input should be greater than or equal to 0"),
    ("missing prompt", GOOD.replace('prompt = "Do the task."\n', ""),
     ":1: prompt: required key is missing"),
    ("toml syntax", GOOD + "[limits\n", ":5: TOML syntax"),
    ("policy table beside tools list", GOOD + 'tools = ["send_email"]\n[tools.send_email]\n'
     'risk = "high"\n', ":6: TOML syntax: Cannot declare ('tools', 'send_email') twice "
     "(per-tool policy tables are [tool.NAME]"),
    ("missing replay script", GOOD.replace("claude-sonnet-4-6", "replay:nope.json"),
     ":3: model: replay script"),
]


@pytest.mark.parametrize(("label", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_job_file_is_located_and_exits_2(project, fake_api, label, text, expected):
    path = project.write("jobs/bad.toml", text)
    before = sorted(os.listdir(project.root))
    for command in (("validate",), ("validate", "bad"), ("run", "bad")):
        result = project.run(*command)
        assert result.code == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert f"\njobs/bad.toml{expected}" in "\n" + result.stderr, result.stderr
    assert path.read_text() == text
    assert sorted(os.listdir(project.root)) == before
    assert fake_api.requests == []
    assert project.runs() == []


def test_bad_job_name(project):
    project.write("jobs/Bad Name.toml", GOOD)
    result = project.run("validate")
    assert result.code == 2
    assert "\njobs/Bad Name.toml:1: name: job names match" in "\n" + result.stderr
    assert project.run("add", "Bad_Name").code == 2


def test_bad_default_in_settings_points_at_jobrunner_toml(project):
    settings = project.root / "jobrunner.toml"
    settings.write_text(settings.read_text() + "[defaults]\n[defaults.limits]\nmax_steps = 0\n")
    project.write("jobs/ok.toml", GOOD)
    result = project.run("validate")
    assert result.code == 2
    assert "\njobrunner.toml:4: limits.max_steps: Input should be greater than or equal to 1" \
        in "\n" + result.stderr


def test_defaults_from_settings_apply(project, fake_api):
    settings = project.root / "jobrunner.toml"
    settings.write_text(settings.read_text() + '[defaults]\ntimezone = "Asia/Tokyo"\n')
    project.write("jobs/ok.toml", GOOD.replace('timezone = "UTC"\n', ""))
    result = project.run("next", "ok", "-n", "1")
    assert result.code == 0, result.stderr
    assert "08:00 JST (+09:00)" in result.stdout


def test_add_refuses_to_overwrite(project):
    assert project.run("add", "daily").code == 0
    job = project.root / "jobs/daily.toml"
    job.write_text(job.read_text() + "# my edit\n")
    again = project.run("add", "daily")
    assert again.code == 2 and "already exists; not overwritten" in again.stderr
    assert job.read_text().endswith("# my edit\n")


def test_env_file_readable_by_others_is_refused(project):
    env_file = project.root / ".env"
    env_file.write_text("ANTHROPIC_API_KEY=sk-ant-from-file-123456\n")
    env_file.chmod(0o644)
    settings = project.root / "jobrunner.toml"
    settings.write_text(settings.read_text() + 'env_file = ".env"\n')
    project.write("jobs/ok.toml", GOOD)
    result = project.run("run", "ok")
    assert result.code == 2
    assert "\n.env:1: env_file: readable by group or others (mode 0644)" in "\n" + result.stderr
    assert "sk-ant-from-file" not in result.stderr


def test_no_project_found(tmp_path, project):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = project.run("list", cwd=outside)
    assert result.code == 2
    assert "no jobrunner project here or above" in result.stderr


@pytest.mark.parametrize(("channel", "expected"), [
    ('type = "webhook"\n', ':3: alerts.channels.0: a webhook channel needs url'),
    ('type = "email"\nto = ["ops@example.com"]\n', ':1: (file): an email alert channel needs '
     'an [smtp] table'),
    ('type = "command"\n', ':3: alerts.channels.0: a command channel needs command'),
    ('type = "pager"\n', ":4: alerts.channels.0.type: Input should be 'log', 'webhook', "),
    ('type = "log"\nevents = ["run.exploded"]\n',
     ":5: alerts.channels.0.events: unknown event 'run.exploded'"),
])
def test_bad_alert_channel_is_refused_before_anything_runs(project, channel, expected):
    settings = project.root / "jobrunner.toml"
    settings.write_text(settings.read_text() + "\n[[alerts.channels]]\n" + channel)
    project.write("jobs/ok.toml", GOOD)
    result = project.run("validate")
    assert result.code == 2
    assert f"\njobrunner.toml{expected}" in "\n" + result.stderr, result.stderr
