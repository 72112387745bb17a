"""Fuzzing the two parsers people feed by hand: job files and MEMORY.md.

Whatever the text, the job loader either returns a job or raises a ConfigError whose
every line is located (`FILE:LINE: key: problem`); no traceback escapes. The memory
parser accepts any text and gives it back byte for byte when nothing changed.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobrunner.config.jobs import load_job
from jobrunner.config.project import Project
from jobrunner.errors import ConfigError
from jobrunner.memory import format as mem

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

KEYS = ["description", "schedule", "timezone", "model", "agent", "tools", "pause_after",
        "misfire_grace", "jitter", "approval_ttl", "continue_after_approval",
        "heartbeat_url", "prompt", "bogus_key"]
TABLES = {"limits": ["max_steps", "max_seconds", "max_cost_usd", "context_tokens", "typo"],
          "lock": ["stale_after", "on_stale", "after_crash"],
          "memory": ["budget_tokens"],
          "alerts": ["events"]}

scalars = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(), st.text(max_size=20),
    st.sampled_from(["0 8 * * *", "@daily", "*/5 * * * 1-5", "61 * * * *", "UTC",
                     "Europe/Berlin", "Mars/Olympus", "10m", "1h30m", "-5s", "claude-sonnet-4-6",
                     "replay:missing.json", "send_email", "high", "alert", "terminate", "*",
                     "run.crashed"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3))


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # a JSON string is a valid TOML basic string


@st.composite
def job_texts(draw) -> str:
    lines = []
    for key in draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=8)):
        lines.append(f"{key} = {toml_value(draw(values))}")
    for table in draw(st.lists(st.sampled_from(sorted(TABLES)), unique=True, max_size=3)):
        lines.append(f"[{table}]")
        for key in draw(st.lists(st.sampled_from(TABLES[table]), unique=True, max_size=3)):
            lines.append(f"{key} = {toml_value(draw(values))}")
    text = "\n".join(lines) + "\n"
    # Sometimes break it the way hands do: cut, duplicate or inject a character.
    damage = draw(st.sampled_from(["none", "none", "cut", "inject", "dup"]))
    if damage == "cut" and text:
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "inject":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["=", "[", "\"", "\n[[x]]\n", "\x00", "é"])) \
            + text[at:]
    elif damage == "dup" and lines:
        text += lines[0] + "\n"
    return text


LOCATED = re.compile(r"^(?P<file>/.+?):(?P<line>\d+): (?P<key>[^:]+): (?P<problem>.+)$", re.S)


def _check_located(exc: ConfigError, allowed: set[str], text: str) -> None:
    assert exc.problems, "a ConfigError with no problem listed"
    for problem in exc.problems:
        match = LOCATED.match(problem)
        assert match, f"not located as FILE:LINE: key: problem: {problem!r}"
        assert match["file"] in allowed, problem
        assert 1 <= int(match["line"]) <= max(1, text.count("\n") + 1), problem


@FUZZ
@given(text=job_texts(), valid_base=st.booleans())
def test_job_loader_never_escapes_a_traceback(text: str, valid_base: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "jobs").mkdir()
        (root / "jobrunner.toml").write_text(f'state_dir = "{root / "state"}"\n')
        if valid_base and "schedule =" not in text and "prompt =" not in text:
            text = 'schedule = "0 8 * * *"\nprompt = "Do it."\n' + text
        path = root / "jobs" / "fuzzed.toml"
        path.write_text(text, encoding="utf-8")
        try:
            job = load_job(Project(root), "fuzzed")
        except ConfigError as exc:
            _check_located(exc, {str(path), str(root / "jobrunner.toml")}, text)
        else:
            assert job.spec.schedule and job.spec.prompt  # a job that loads is usable


@FUZZ
@given(data=st.binary(max_size=300))
def test_job_loader_on_arbitrary_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "jobs").mkdir()
        path = root / "jobs" / "raw.toml"
        path.write_bytes(data)
        try:
            load_job(Project(root), "raw")
        except ConfigError as exc:
            _check_located(exc, {str(path)}, data.decode("utf-8", "replace"))


memory_lines = st.one_of(
    st.sampled_from(["# Memory: x", "## Current objective", "### KEY DECISIONS MADE",
                     "## What NOT to do (failure log)", "#open items", "## Open items  ##",
                     "## Notes of mine", "- item", "* other", "1. first", "", "   ",
                     "\ufeff# Memory", "####### too deep", "text before anything"]),
    st.text(max_size=40),
)


@st.composite
def memory_texts(draw) -> str:
    lines = draw(st.lists(memory_lines, max_size=20))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(lines)
    if draw(st.booleans()):
        text = "\ufeff" + text
    return text


@FUZZ
@given(text=memory_texts())
def test_memory_parser_is_tolerant_and_lossless(text: str) -> None:
    parsed = mem.parse(text)
    assert parsed.render() == text
    # A rewrite keeps every other section verbatim and stays parseable.
    update = mem.MemoryUpdate(current_objective="Keep going.", key_decisions=["one"],
                              what_not_to_do=[], open_items=["later"])
    rewritten = mem.apply_update(parsed, update).render()
    again = mem.parse(rewritten)
    assert again.render() == rewritten
    assert again.section_text("current_objective") == "Keep going."
    assert again.items("open_items") == ["later"]
    for block in parsed.blocks:
        if block.key is None and block.heading:
            # Kept in place, verbatim (up to the blank lines before an appended section).
            assert block.heading + block.body.rstrip("\r\n") in rewritten


@FUZZ
@given(data=st.binary(max_size=200))
def test_memory_load_of_any_bytes_parses_or_refuses_cleanly(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "MEMORY.md"
        path.write_bytes(data)
        try:
            parsed, raw = mem.load(path)
        except mem.MemoryFileError as exc:
            assert str(path) in str(exc)
            assert path.read_bytes() == data  # never overwritten
        else:
            assert raw == data
            assert parsed.render().encode() == data.removeprefix(b"\xef\xbb\xbf") or \
                parsed.render().encode("utf-8") == data
