"""Optional OpenTelemetry export of a finished run: one trace per run, cut from the run's
JSONL trace and sent once over OTLP/HTTP after the run has been recorded.

Off unless `[otel] endpoint` is set in jobrunner.toml or one of the standard variables
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` is; when off, nothing
of OpenTelemetry is imported. The export is bounded (`[otel] timeout`, 2 s by default, plus
a second's grace for the whole of it) and a dead or slow collector only ever costs that
time: what went wrong is returned, and noted in the trace as an `otel.export` event.

Spans follow the GenAI semantic conventions: a root `run JOB`, a `chat MODEL` child per
model request and an `execute_tool NAME` child per tool call, each with the real times of
its trace events. The trace is already redacted; no argument value becomes an attribute
(tool names only), and the few texts that do (error messages) pass the redactor again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from jobrunner.config.settings import OtelSettings
from jobrunner.errors import ConfigError

if TYPE_CHECKING:
    from jobrunner.config.project import Project
    from jobrunner.redact import Redactor

# The exporter honours its timeout per request; the grace bounds the whole export, so even
# a collector that trickles bytes cannot keep the run's process alive.
GRACE_SECONDS = 1.0
TRACES_PATH = "v1/traces"
# Trace events that are not spans of their own but say what happened in the run: they
# become span events of the root span, with only these scalar fields.
_NOTED_PREFIXES = ("guard.", "memory.", "ledger.", "approval.", "context.", "heartbeat.")
_NOTED_EVENTS = {"model.retry", "tool.retry", "tool.invalid", "tool.skipped",
                 "run.internal_error"}
_NOTED_KEYS = ("reason", "tool", "step", "attempt", "kind", "tokens", "budget", "fixed_tokens",
               "invalid_calls", "delay_s", "ok", "changed", "results", "request_tokens")
_TEXT_LIMIT = 200


@dataclass(frozen=True)
class ExportTarget:
    url: str  # the full traces URL
    timeout: float
    service_name: str


@dataclass(frozen=True)
class ExportResult:
    """What one export did: `ok`, or `error` saying what failed."""

    ok: bool
    url: str
    spans: int = 0
    trace_id: str = ""
    error: str = ""
    duration_s: float = 0.0

    def event_fields(self) -> dict[str, Any]:
        """The `otel.export` trace event's fields (the URL without any credentials)."""
        return {"ok": self.ok, "url": _shown(self.url), "spans": self.spans,
                "trace_id": self.trace_id, "error": self.error or None,
                "duration_s": round(self.duration_s, 3)}


def export_target(project: Project, env: dict[str, str] | None = None) -> ExportTarget | None:
    """Where this project's runs go, or None when export is off. jobrunner.toml's endpoint
    wins over the environment's; OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn
    it off whatever is configured."""
    env = os.environ if env is None else env
    if not project.reaches_out:  # a dry run
        return None
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or \
            env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    settings = project.settings.otel or OtelSettings()
    if settings.endpoint:
        url = _traces_url(settings.endpoint)
    elif env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        url = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].strip()  # the full URL, as given
    elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        url = _traces_url(env["OTEL_EXPORTER_OTLP_ENDPOINT"].strip())
    else:
        return None
    return ExportTarget(url, settings.timeout, settings.service_name)


def after_run(project: Project, run_id: str) -> ExportResult | None:
    """The runner's call once a run's trace is closed: export the run if configured and
    note the outcome in its trace. Never raises for a collector's or the settings' sake;
    None when export is off."""
    from jobrunner.state.traces import append_event

    try:
        result = export_run(project, run_id)
    except ConfigError as exc:
        result = ExportResult(False, "", error=f"not exported: {exc}")
    if result is None:
        return None
    try:
        append_event(project.store(), run_id, "otel.export", **result.event_fields())
    except OSError as exc:  # a full disk: the caller still gets the outcome
        result = replace(result, error=(f"{result.error}; " if result.error else "")
                         + f"not noted in the trace: {exc.strerror or exc}")
    return result


def export_run(project: Project, run_id: str) -> ExportResult | None:
    """Export one finished run's trace; None when export is off."""
    target = export_target(project)
    if target is None:
        return None

    events = project.store().trace_read(run_id)
    return send(target, events, project.redactor())


def send(target: ExportTarget, events: list[dict[str, Any]], redactor: Redactor) -> ExportResult:
    """Build the run's spans from its trace events and send them in one bounded export."""
    started = time.monotonic()
    if not events:
        return ExportResult(False, target.url, error="the run left no trace to export")
    try:
        spans, trace_id = _build_spans(events, target, redactor)
    except ImportError as exc:
        return ExportResult(False, target.url, error=(
            f"OpenTelemetry is not installed ({exc.name}): pip install 'jobrunner[otel]'"))
    error = _ship(spans, target)
    return ExportResult(error is None, target.url, len(spans), f"{trace_id:032x}",
                        redactor.text(error or ""), time.monotonic() - started)


def run_trace_id(run_id: str) -> int:
    """A run's trace id, derived from its run id: the same run is always the same trace."""
    return int.from_bytes(hashlib.sha256(f"jobrunner:{run_id}".encode()).digest()[:16]) or 1


# -- spans from trace events ----------------------------------------------------------------


def _build_spans(events: list[dict[str, Any]], target: ExportTarget,  # noqa: C901
                 redactor: Redactor) -> tuple[list[Any], int]:
    # One pass over the trace, a branch per event kind that opens or closes a span.
    from opentelemetry import trace as trace_api
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from opentelemetry.trace import SpanKind, Status, StatusCode

    first = events[0]
    run_id = str(first.get("run_id", ""))
    start = next((e for e in events if e.get("event") == "run.start"), first)
    end = next((e for e in reversed(events) if e.get("event") == "run.end"), events[-1])
    run_end_ns = _ns(end)
    trace_id = run_trace_id(run_id)
    collected = InMemorySpanExporter()
    # Every run is one whole trace: sampling, if any, is the collector's business.
    provider = TracerProvider(
        sampler=ALWAYS_ON, resource=Resource.create({"service.name": target.service_name}),
        id_generator=_fixed_trace_ids(trace_id), shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(collected))
    tracer = provider.get_tracer("jobrunner")
    model = str(start.get("model") or "")
    job = str(start.get("job") or "")
    status = str(end.get("status") or "unknown")
    stop_reason = str(end.get("stop_reason") or "")
    responses = [e for e in events if e.get("event") == "model.response"]
    root = tracer.start_span(
        f"run {job}", kind=SpanKind.INTERNAL, start_time=_ns(start), attributes=_clean({
            "jobrunner.run_id": run_id, "jobrunner.job": job,
            "jobrunner.agent": start.get("agent"), "jobrunner.trigger": start.get("trigger"),
            "jobrunner.slot": start.get("slot"), "jobrunner.model": model,
            "jobrunner.status": status, "jobrunner.stop_reason": stop_reason,
            "jobrunner.exit_code": end.get("exit_code"),
            "jobrunner.steps": len(responses),
            "jobrunner.tool_calls": sum(e.get("event") == "tool.call" for e in events),
            # The running total the session kept, as the run record has it.
            "jobrunner.cost_usd": _number(responses[-1].get("total_cost_usd")) if responses
            else 0.0,
        }))
    inside = trace_api.set_span_in_context(root)
    chat: Any = None  # the model request awaiting its response
    tool: Any = None  # the tool call awaiting its result
    for event in events:
        kind = event.get("event")
        if kind == "model.request":
            chat = tracer.start_span(
                f"chat {model}", context=inside, kind=SpanKind.CLIENT, start_time=_ns(event),
                attributes=_clean({
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": _provider(model),
                    "gen_ai.request.model": model,
                    "gen_ai.request.max_tokens": event.get("max_tokens"),
                    "jobrunner.step": event.get("step"), "jobrunner.attempt": event.get("attempt"),
                }))
        elif kind in ("model.response", "model.error") and chat is not None:
            if kind == "model.response":
                usage = event.get("usage") if isinstance(event.get("usage"), dict) else {}
                cache_read = int(_number(usage.get("cache_read_input_tokens")))
                cache_write = int(_number(usage.get("cache_creation_input_tokens")))
                chat.set_attributes(_clean({
                    # Input tokens count every token of the request, cached or not.
                    "gen_ai.usage.input_tokens":
                        int(_number(usage.get("input_tokens"))) + cache_read + cache_write,
                    "gen_ai.usage.output_tokens": int(_number(usage.get("output_tokens"))),
                    "gen_ai.usage.cache_read.input_tokens": cache_read,
                    "gen_ai.usage.cache_creation.input_tokens": cache_write,
                    "gen_ai.response.finish_reasons":
                        [str(event["stop_reason"])] if event.get("stop_reason") else None,
                    "jobrunner.cost_usd": _number(event.get("cost_usd")),
                }))
            else:
                error_type = str(event.get("kind") or "model_error")
                chat.set_attributes(_clean({"error.type": error_type,
                                            "http.response.status_code": event.get("status")}))
                chat.set_status(Status(StatusCode.ERROR, error_type))
            chat.end(end_time=max(_ns(event), chat.start_time))
            chat = None
        elif kind == "tool.call":
            tool = tracer.start_span(
                f"execute_tool {event.get('tool')}", context=inside, kind=SpanKind.INTERNAL,
                start_time=_ns(event), attributes=_clean({
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": event.get("tool"), "gen_ai.tool.type": "function",
                    "gen_ai.tool.call.id": event.get("tool_use_id"),
                    "jobrunner.tool.risk": event.get("risk"), "jobrunner.step": event.get("step"),
                }))
        elif kind in ("tool.result", "tool.queued", "tool.skipped") and tool is not None:
            if kind == "tool.result":
                tool.set_attributes(_clean({"jobrunner.tool.ok": bool(event.get("ok")),
                                            "jobrunner.tool.attempts": event.get("attempts")}))
                if not event.get("ok"):
                    tool.set_attribute("error.type", "tool_error")
                    tool.set_status(Status(StatusCode.ERROR,
                                           _text(redactor, event.get("error") or "failed")))
            else:  # queued for a person's approval, or refused before it ran
                tool.set_attribute("jobrunner.tool.outcome", kind.split(".")[1])
            tool.end(end_time=max(_ns(event), tool.start_time))
            tool = None
        elif kind in _NOTED_EVENTS or str(kind).startswith(_NOTED_PREFIXES):
            root.add_event(str(kind), attributes=_noted(event, redactor), timestamp=_ns(event))
    for unfinished in (chat, tool):  # the run ended while it was under way
        if unfinished is not None:
            unfinished.set_status(Status(StatusCode.ERROR, "no outcome recorded"))
            unfinished.end(end_time=max(run_end_ns, unfinished.start_time))
    if status != "completed":
        root.set_status(Status(StatusCode.ERROR, f"{status} ({stop_reason})"))
    root.end(end_time=max(run_end_ns, root.start_time))
    return list(collected.get_finished_spans()), trace_id


def _fixed_trace_ids(trace_id: int) -> Any:
    from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

    class RunIds(IdGenerator):
        """The run's own trace id; random span ids."""

        def __init__(self) -> None:
            self._random = RandomIdGenerator()

        def generate_trace_id(self) -> int:
            return trace_id

        def generate_span_id(self) -> int:
            return self._random.generate_span_id()

    return RunIds()


# -- the export itself ----------------------------------------------------------------------


class _SdkNotes(logging.Handler):
    """Keeps what the exporter logs, so it becomes the returned note instead of stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _ship(spans: list[Any], target: ExportTarget) -> str | None:
    """Send the spans in one bounded export; None on success, else what failed."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    notes = _SdkNotes()
    sdk_log = logging.getLogger("opentelemetry")
    propagate = sdk_log.propagate
    sdk_log.addHandler(notes)
    sdk_log.propagate = False
    abandoned = False
    try:
        try:
            exporter = OTLPSpanExporter(endpoint=target.url, timeout=target.timeout)
        except ValueError as exc:  # an unusable OTEL_EXPORTER_OTLP_* variable
            return f"cannot export to {_shown(target.url)}: {exc}"
        outcome: list[SpanExportResult] = []
        # The exporter catches its transport's errors and returns FAILURE; the thread
        # only bounds the time, which the exporter's per-request timeout alone does not.
        worker = threading.Thread(target=lambda: outcome.append(exporter.export(spans)),
                                  name="jobrunner-otel-export", daemon=True)
        worker.start()
        worker.join(target.timeout + GRACE_SECONDS)
        if worker.is_alive():
            abandoned = True  # it dies with the process; its late log lines stay muted
            return (f"{_shown(target.url)} did not answer within {target.timeout:g}s; "
                    "the export was abandoned")
        exporter.shutdown()
        if outcome and outcome[0] is SpanExportResult.SUCCESS:
            return None
        return f"export to {_shown(target.url)} failed: " + _summary(notes.messages)
    finally:
        if not abandoned:
            sdk_log.removeHandler(notes)
            sdk_log.propagate = propagate


def _summary(messages: list[str]) -> str:
    """The exporter's own words, most specific first, bounded."""
    if not messages:
        return "no reason given"
    # The first message names the cause (connection refused, HTTP status); the last one
    # says the exporter gave up.
    parts = [messages[0]] if len(messages) == 1 else [messages[0], messages[-1]]
    text = " / ".join(parts)
    return text if len(text) <= 2 * _TEXT_LIMIT else text[:2 * _TEXT_LIMIT - 3] + "..."


# -- small helpers --------------------------------------------------------------------------


def _traces_url(base: str) -> str:
    """`http://host:4318` -> `http://host:4318/v1/traces` (kept when already there)."""
    base = base.rstrip("/")
    return base if base.endswith("/" + TRACES_PATH) else f"{base}/{TRACES_PATH}"


def _shown(url: str) -> str:
    """A URL as it may be written down: without any user:password part."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ns(event: dict[str, Any]) -> int:
    """An event's time in nanoseconds since the epoch (0 when it has none)."""
    at = event.get("at")
    if not isinstance(at, str):
        return 0
    try:
        moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else 0.0


def _provider(model: str) -> str:
    return "replay" if model.startswith("replay:") else "anthropic"


def _text(redactor: Redactor, value: Any) -> str:
    text = redactor.text(str(value))
    return text if len(text) <= _TEXT_LIMIT else text[:_TEXT_LIMIT - 3] + "..."


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attributes without the empty ones (OpenTelemetry refuses None values)."""
    return {k: v for k, v in attributes.items() if v is not None and v != ""}


def _noted(event: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    """A trace event's scalar, non-argument fields, for a root span event."""
    out: dict[str, Any] = {}
    for key in _NOTED_KEYS:
        value = event.get(key)
        if isinstance(value, bool | int | float):
            out[f"jobrunner.{key}"] = value
        elif isinstance(value, str) and value:
            out[f"jobrunner.{key}"] = _text(redactor, value)
    return out
