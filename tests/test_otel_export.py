"""OpenTelemetry export of a finished run: a real OTLP/HTTP receiver on 127.0.0.1 decodes
what the installed command sends; dead and hanging collectors never hold a run up."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from jobrunner.config.project import Project
from jobrunner.errors import ConfigError
from jobrunner.otel_export import export_target, run_trace_id
from tests.conftest import TEST_KEY
from tests.fake_api import tool_turn
from tests.session_helpers import TOOLS
from tests.turns import MEMORY, finish

# Exact usage per model call, cache counts included, so the spans can be checked against it.
USAGE = [
    {"input_tokens": 1200, "output_tokens": 40, "cache_read_input_tokens": 300,
     "cache_creation_input_tokens": 50},
    {"input_tokens": 900, "output_tokens": 25},
    {"input_tokens": 700, "output_tokens": 15, "cache_read_input_tokens": 600},
]


class Collector:
    """An OTLP/HTTP trace receiver: keeps each POST's raw bytes and decoded request."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                collector.bodies.append(body)
                collector.paths.append(self.path)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass  # the test reads the requests, not a log

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def requests(self) -> list[ExportTraceServiceRequest]:
        return [ExportTraceServiceRequest.FromString(b) for b in self.bodies]

    def spans(self) -> list[Span]:
        return [span for request in self.requests() for rs in request.resource_spans
                for ss in rs.scope_spans for span in ss.spans]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Hanging:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed at the end of the test
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    receiver = Collector()
    yield receiver
    receiver.close()


def without_otel(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("OTEL_")}


def attrs(span: Span) -> dict:
    out = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = ([v.string_value for v in value.array_value.values]
                       if kind == "array_value" else getattr(value, kind))
    return out


def one_tool_run(project, fake_api, env: dict[str, str], search: str = "signups") -> dict:
    """A job that calls one tool, then saves its memory and finishes; returns its record."""
    project.env = {**without_otel(project.env), **env}
    project.tool_file("tools", TOOLS)
    project.job("numbers", tools=["search"])
    fake_api.enqueue(tool_turn([("search", {"query": search})], usage=USAGE[0]),
                     tool_turn([("update_memory", MEMORY)], usage=USAGE[1]),
                     tool_turn([finish()], usage=USAGE[2]))
    ran = project.run("run", "numbers")
    assert ran.code == 0, ran.stderr
    assert ran.stdout == "" and ran.stderr == ""  # the export is silent, as the run is
    [record] = project.runs()
    return record


def test_trace_events_carry_milliseconds(project, fake_api):
    # Spans are cut from the trace: whole seconds would collapse a run's steps together.
    record = one_tool_run(project, fake_api, {})
    events = project.trace(record["id"])
    assert events and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["at"])
                          for e in events)


def test_a_run_is_exported_as_one_trace(project, fake_api, collector):
    secret = "s3cr3t-value-for-the-tool"
    project.write(".env", f"REPORT_TOKEN={secret}\n").chmod(0o600)
    project.write("jobrunner.toml", (project.root / "jobrunner.toml").read_text()
                  + 'env_file = ".env"\n')
    record = one_tool_run(project, fake_api, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url},
                          search=f"signups {secret}")
    assert collector.paths == ["/v1/traces"]  # one export, to the standard path
    spans = collector.spans()
    assert len({s.trace_id for s in spans}) == 1
    assert spans[0].trace_id == run_trace_id(record["id"]).to_bytes(16, "big")
    [root] = [s for s in spans if not s.parent_span_id]
    assert root.name == "run numbers"
    root_attrs = attrs(root)
    assert root_attrs["jobrunner.run_id"] == record["id"]
    assert root_attrs["jobrunner.job"] == "numbers"
    assert root_attrs["jobrunner.status"] == "completed"
    assert root_attrs["jobrunner.stop_reason"] == "finish"
    assert root_attrs["jobrunner.trigger"] == "manual"
    assert root_attrs["jobrunner.cost_usd"] == pytest.approx(record["cost_usd"])
    assert root.status.code != Status.STATUS_CODE_ERROR
    [resource] = collector.requests()[0].resource_spans
    assert {kv.key: kv.value.string_value for kv in resource.resource.attributes}[
        "service.name"] == "jobrunner"

    chats = sorted((s for s in spans if s.name.startswith("chat ")),
                   key=lambda s: s.start_time_unix_nano)
    assert [s.name for s in chats] == ["chat claude-sonnet-4-6"] * 3
    for span, usage in zip(chats, USAGE, strict=True):
        a = attrs(span)
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == "claude-sonnet-4-6"
        cached = usage.get("cache_read_input_tokens", 0) + usage.get(
            "cache_creation_input_tokens", 0)
        assert a["gen_ai.usage.input_tokens"] == usage["input_tokens"] + cached
        assert a["gen_ai.usage.output_tokens"] == usage["output_tokens"]
        assert a["gen_ai.usage.cache_read.input_tokens"] == usage.get(
            "cache_read_input_tokens", 0)
        assert a["gen_ai.response.finish_reasons"] == ["tool_use"]
        assert a["jobrunner.cost_usd"] > 0
        assert span.kind == Span.SPAN_KIND_CLIENT
    assert sum(attrs(s)["gen_ai.usage.input_tokens"] for s in chats) == record["input_tokens"]
    assert sum(attrs(s)["gen_ai.usage.output_tokens"] for s in chats) == record["output_tokens"]

    [tool] = [s for s in spans if s.name.startswith("execute_tool")]
    assert tool.name == "execute_tool search"
    tool_attrs = attrs(tool)
    assert tool_attrs["gen_ai.operation.name"] == "execute_tool"
    assert tool_attrs["gen_ai.tool.name"] == "search"
    assert tool_attrs["jobrunner.tool.ok"] is True
    assert len(spans) == 5
    for child in [*chats, tool]:
        assert child.parent_span_id == root.span_id
        assert root.start_time_unix_nano <= child.start_time_unix_nano
        assert child.start_time_unix_nano <= child.end_time_unix_nano <= root.end_time_unix_nano
    # Real times: the tool ran after the model asked for it and before the next request.
    assert chats[0].end_time_unix_nano <= tool.start_time_unix_nano
    assert tool.end_time_unix_nano <= chats[1].start_time_unix_nano

    received = b"".join(collector.bodies)
    assert TEST_KEY.encode() not in received
    assert secret.encode() not in received
    assert b"signups" not in received  # argument values stay out of the spans

    note = [e for e in project.trace(record["id"]) if e["event"] == "otel.export"]
    assert [(n["ok"], n["spans"], n["trace_id"]) for n in note] == [
        (True, 5, spans[0].trace_id.hex())]


def test_a_failed_run_is_an_error_span(project, fake_api, collector):
    project.env = {**without_otel(project.env),
                   "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.url + "/v1/traces"}
    project.tool_file("tools", TOOLS)
    project.job("numbers", tools=["broken_search"])
    fake_api.enqueue(tool_turn([("broken_search", {"query": "q"})]),
                     tool_turn([("update_memory", MEMORY)]), tool_turn([finish()]))
    ran = project.run("run", "numbers")
    assert ran.code == 1, ran.stderr
    spans = collector.spans()
    [root] = [s for s in spans if not s.parent_span_id]
    assert root.status.code == Status.STATUS_CODE_ERROR
    assert attrs(root)["jobrunner.status"] == "aborted"
    assert attrs(root)["jobrunner.stop_reason"] == "tool_failed"
    [tool] = [s for s in spans if s.name == "execute_tool broken_search"]
    assert tool.status.code == Status.STATUS_CODE_ERROR
    assert "Search API is down" in tool.status.message
    assert attrs(tool)["jobrunner.tool.ok"] is False


def test_a_dead_collector_costs_the_run_nothing(project, fake_api):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]  # closed again: nothing listens there
    record = one_tool_run(project, fake_api,
                          {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"})
    assert record["status"] == "completed" and record["exit_code"] == 0
    [note] = [e for e in project.trace(record["id"]) if e["event"] == "otel.export"]
    assert note["ok"] is False and note["spans"] == 5
    assert "failed" in note["error"] and note["url"].endswith(f":{port}/v1/traces")


def test_a_hanging_collector_is_abandoned_within_the_bound(project, fake_api):
    hanging = Hanging()
    try:
        record = one_tool_run(project, fake_api, {"OTEL_EXPORTER_OTLP_ENDPOINT": hanging.url})
        assert hanging.held  # the export did reach it
    finally:
        hanging.close()
    assert record["status"] == "completed" and record["exit_code"] == 0
    [note] = [e for e in project.trace(record["id"]) if e["event"] == "otel.export"]
    assert note["ok"] is False
    # The exporter's 2 s timeout plus the one-second grace bound the whole export.
    assert 0 < note["duration_s"] <= 3.5


def test_nothing_configured_imports_no_opentelemetry(project, fake_api):
    project.tool_file("tools", TOOLS)
    project.job("numbers", tools=["search"])
    fake_api.enqueue(tool_turn([("search", {"query": "q"})]),
                     tool_turn([("update_memory", MEMORY)]), tool_turn([finish()]))
    code = (
        "import sys; sys.argv = ['jobrunner', 'run', 'numbers']\n"
        "from jobrunner.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    print('EXIT', exc.code)\n"
        # The anthropic SDK may load the opentelemetry API for its own no-op spans; the
        # export's SDK and exporter must not be loaded, though its call site was reached.
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk',"
        " 'opentelemetry.exporter', 'opentelemetry.proto'))]\n"
        "print('EXPORT_REACHED' if 'jobrunner.otel_export' in sys.modules else 'NOT_REACHED')\n"
        "print('OTEL_LOADED' if loaded else 'OTEL_NOT_LOADED')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=project.root, env=without_otel(project.env), timeout=120)
    assert proc.stdout.split() == ["EXIT", "0", "EXPORT_REACHED", "OTEL_NOT_LOADED"], \
        proc.stderr
    [record] = project.runs()
    assert record["status"] == "completed"
    assert not [e for e in project.trace(record["id"]) if e["event"] == "otel.export"]


def test_settings_and_environment_choose_the_endpoint(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    settings = root / "jobrunner.toml"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318"}
    assert export_target(Project(root), {}) is None  # nothing configured: off
    assert export_target(Project(root), env).url == "http://env:4318/v1/traces"
    assert export_target(Project(root), {
        **env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"}).url == "http://t:1/x"
    settings.write_text('[otel]\nendpoint = "http://col:4318/"\ntimeout = "1s"\n')
    target = export_target(Project(root), env)  # the project's setting wins
    assert (target.url, target.timeout) == ("http://col:4318/v1/traces", 1.0)
    assert export_target(Project(root), {"OTEL_SDK_DISABLED": "true"}) is None
    settings.write_text('state_dir = "s"\n[otel]\nendpoint = "col:4318"\n')
    with pytest.raises(ConfigError) as bad:
        export_target(Project(root), {})
    assert bad.value.problems == [
        f'{settings}:3: otel.endpoint: expected an OTLP/HTTP URL like "http://localhost:4318"']
