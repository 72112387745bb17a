"""OpenTelemetry export of a finished run: a real OTLP/HTTP receiver on 127.0.0.1 decodes
what the installed command sends; dead and hanging collectors never hold a run up."""

from __future__ import annotations

import re

from tests.fake_api import tool_turn
from tests.session_helpers import MEMORY, TOOLS, finish, trace


def test_trace_events_carry_milliseconds(project, fake_api):
    # Spans are cut from the trace: whole seconds would collapse a run's steps together.
    project.tool_file("tools", TOOLS)
    project.job("numbers", tools=["search"])
    fake_api.enqueue(tool_turn([("search", {"query": "q"})]),
                     tool_turn([("update_memory", MEMORY)]), tool_turn([finish()]))
    ran = project.run("run", "numbers")
    assert ran.code == 0, ran.stderr
    [record] = project.runs()
    events = trace(project, record["id"])
    assert events and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["at"])
                          for e in events)
