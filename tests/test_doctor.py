"""`jobrunner doctor`: set-up checks, each problem with its fix, exit 1 on any problem.
The crontab is a stand-in `crontab` program on PATH, so the user's own is never touched."""

from __future__ import annotations

import os
import stat

from jobrunner.scheduling.crontab import cron_running
from tests.alert_servers import HttpRecorder, SmtpRecorder, free_port
from tests.conftest import TEST_KEY, reaped, wait_for

FAKE_CRONTAB = '''#!/bin/sh
case "$1" in
  -l) if [ -f "$FAKE_CRONTAB" ]; then cat "$FAKE_CRONTAB"; else
        echo "no crontab for $(id -un)" >&2; exit 1; fi ;;
  -) cat > "$FAKE_CRONTAB" ;;
  -r) rm -f "$FAKE_CRONTAB" ;;
esac
'''


def _fake_crontab(project, tmp_path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "crontab"
    script.write_text(FAKE_CRONTAB)
    script.chmod(0o755)
    project.env["PATH"] = f"{bin_dir}:{project.env.get('PATH', '/usr/bin:/bin')}"
    project.env["FAKE_CRONTAB"] = str(tmp_path / "crontab.txt")


def _checks(result) -> dict[str, dict]:
    return {c["check"]: c for c in result.json()}


def test_a_sound_set_up_passes_every_check(project, tmp_path):
    _fake_crontab(project, tmp_path)
    env_file = project.write(".env", f"ANTHROPIC_API_KEY={TEST_KEY}\n")
    env_file.chmod(0o600)
    with HttpRecorder() as hook, SmtpRecorder() as smtp:
        project.write("jobrunner.toml", f'''
            state_dir = "{project.state}"
            env_file = ".env"
            [smtp]
            host = "127.0.0.1"
            port = {smtp.port}
            starttls = false
            [[alerts.channels]]
            type = "webhook"
            url = "{hook.url}/hook"
        ''')
        project.job("live", timezone="UTC")
        project.tool_file("ok", '''
            from jobrunner import tool
            @tool(risk="low", side_effect=False)
            def ping() -> str:
                """Ping."""
                return "pong"
        ''')
        env = {"ANTHROPIC_API_KEY": "", "TZ": ""}
        with reaped(project.popen("daemon", "--poll", "0.5", env=env)) as daemon:
            wait_for(lambda: project.run("status", "--json").json()["daemon"]["up"],
                     what="the daemon up")
            checked = project.run("doctor", "--json", env=env)
            plain = project.run("doctor", env=env)
            assert hook.requests == []  # reachable, and nothing sent without --send-test
            tested = project.run("doctor", "--send-test", "--json", env=env)
            daemon.terminate()
            daemon.wait(timeout=60)
        assert checked.code == 0, checked.stdout
        checks = _checks(checked)
        assert {c["status"] for c in checks.values()} == {"ok"}, checks
        assert checks["api key"]["detail"] == "ANTHROPIC_API_KEY is set in the env_file"
        assert "mode 0600" in checks["env_file"]["detail"]
        assert checks["cron's state folder"]["detail"] == "cron's environment uses the same"
        assert checks["daemon"]["detail"].startswith("up since ")
        assert f"webhook 127.0.0.1:{hook.url.rsplit(':', 1)[1]}" in checks
        assert f"smtp 127.0.0.1:{smtp.port}" in checks
        assert plain.code == 0 and all(ln.startswith(("ok ", "  ")) for ln in
                                       plain.stdout.splitlines()), plain.stdout
        assert tested.code == 0, tested.stdout
        assert [b["event"] for b in hook.json_bodies()] == ["alert.test"]


def test_each_problem_comes_with_its_fix_and_exit_1(project, tmp_path):
    _fake_crontab(project, tmp_path)
    env_file = project.write(".env", "OTHER=1\n")
    env_file.chmod(0o644)
    project.write("jobrunner.toml", f'''
        state_dir = "{project.state}"
        env_file = ".env"
        [smtp]
        host = "127.0.0.1"
        port = {free_port()}
        timeout = "1s"
        [[alerts.channels]]
        type = "webhook"
        url = "http://127.0.0.1:{free_port()}/hook"
        timeout = "1s"
    ''')
    project.job("live")
    project.tool_file("broken", "import not_a_module_anywhere\n")
    checked = project.run("doctor", "--json", env={"ANTHROPIC_API_KEY": "",
                                                   "TZ": "Pacific/Chatham"})
    assert checked.code == 1
    checks = _checks(checked)
    problems = {name for name, c in checks.items() if c["status"] == "problem"}
    assert {"env_file", "api key", "scheduling", "tool files"} <= problems, checks
    assert any(name.startswith("webhook ") for name in problems)
    assert any(name.startswith("smtp ") for name in problems)
    assert checks["env_file"]["fix"] == f"chmod 600 {env_file}"
    assert "env_file" in checks["api key"]["fix"]
    assert checks["scheduling"]["fix"].startswith("jobrunner cron --install")
    assert "jobs/tools/broken.py:1:" in checks["tool files"]["detail"]
    assert checks["time zone"]["status"] == "warn"
    assert all(c["fix"] for c in checks.values() if c["status"] == "problem")
    plain = project.run("doctor", env={"ANTHROPIC_API_KEY": ""})
    assert plain.code == 1
    said = " ".join(plain.stdout.split())  # as read, however the terminal width wrapped it
    assert "FAIL env_file:" in said and f"fix: chmod 600 {env_file}" in said
    # A key in the shell only: cron would not see it.
    env_file.chmod(0o600)
    shell_only = _checks(project.run("doctor", "--json"))["api key"]
    assert shell_only["status"] == "warn" and "env_file" in shell_only["fix"]


def test_an_installed_cron_block_needs_a_running_cron_and_current_lines(project, tmp_path):
    _fake_crontab(project, tmp_path)
    project.job("report", model="replay:jobs/report.replay.json")
    project.write("jobs/report.replay.json", '{"turns": [{"content": []}]}')
    assert project.run("cron", "--install").code == 0
    checks = _checks(project.run("doctor", "--json"))
    assert checks["cron block"]["status"] == "ok"
    assert "scheduling" not in checks
    assert checks["cron daemon"]["status"] == ("ok" if cron_running() else "problem")
    if not cron_running():
        assert "service cron start" in checks["cron daemon"]["fix"]
    project.job("report", model="replay:jobs/report.replay.json", schedule="30 9 * * *")
    stale = _checks(project.run("doctor", "--json"))["cron block"]
    assert stale["status"] == "warn" and stale["fix"] == "jobrunner cron --install"


def test_a_state_folder_that_cannot_be_made_is_a_problem(project):
    blocker = project.write("not-a-folder", "a file\n")
    project.write("jobrunner.toml", f'state_dir = "{blocker}/state"\n')
    project.job("report", model="replay:jobs/report.replay.json")
    project.write("jobs/report.replay.json", '{"turns": [{"content": []}]}')
    checked = project.run("doctor", "--json")
    assert checked.code == 1, checked.stderr
    state = _checks(checked)["state folder"]
    assert state["status"] == "problem" and "state_dir" in state["fix"]
    assert stat.S_ISREG(os.stat(blocker).st_mode)
