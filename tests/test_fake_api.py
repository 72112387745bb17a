"""Prove tests/fake_api.py against the real anthropic SDK over loopback HTTP (nothing mocked)."""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from tests.fake_api import (
    NO_SCRIPT_MESSAGE,
    WELL_FORMED_MESSAGE,
    FakeMessagesAPI,
    check_item,
    estimate_input_tokens,
    fault,
    text_turn,
    tool_turn,
    turn,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL = "claude-test-model"
USER_HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def api() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI() as server:
        yield server


@pytest.fixture
def client(api: FakeMessagesAPI) -> Iterator[anthropic.Anthropic]:
    # max_retries=0: each scripted item maps to exactly one SDK call, and no backoff sleeps.
    with anthropic.Anthropic(api_key="test-key", base_url=api.url, max_retries=0) as c:
        yield c


def create(client: anthropic.Anthropic, **kwargs: Any) -> anthropic.types.Message:
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "messages": USER_HI}
    params.update(kwargs)
    return client.messages.create(**params)


def raw_post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST without the SDK, to check header handling the SDK never exercises."""
    request = urllib.request.Request(
        url + "/v1/messages", data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# --------------------------------------------------------------------------- successful turns


def test_text_turn_parses_with_estimated_usage(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    api.enqueue(text_turn("hello there"))
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=USER_HI)
    message = raw.parse()

    assert isinstance(message, anthropic.types.Message)
    assert message.id == "msg_fake_1"
    assert message.model == MODEL
    assert message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "hello there"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert raw.headers["request-id"] == "req_fake_1"
    assert raw.headers["content-type"] == "application/json"

    prompt = json.dumps({"messages": USER_HI}, separators=(",", ":"))
    content = json.dumps([{"type": "text", "text": "hello there"}], separators=(",", ":"))
    assert message.usage.input_tokens == math.ceil(len(prompt) / 4)
    assert message.usage.output_tokens == math.ceil(len(content) / 4)
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0


def test_scripted_usage_and_stop_reason_are_served_verbatim(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    api.enqueue(text_turn("cut", stop_reason="max_tokens", usage={"output_tokens": 999}))
    message = create(client)
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 999
    assert message.usage.input_tokens == estimate_input_tokens({"messages": USER_HI})
    assert message.usage.cache_read_input_tokens == 0


def test_tool_turn_gives_distinct_tool_use_ids(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    api.enqueue(
        tool_turn(
            [("read_file", {"path": "a.txt"}), ("read_file", {"path": "b.txt"})],
            text="Reading both.",
        ),
        tool_turn([("shell", {"cmd": "ls"}, "toolu_chosen")]),
    )
    message = create(client)
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Reading both."
    uses = [b for b in message.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == [
        ("read_file", {"path": "a.txt"}),
        ("read_file", {"path": "b.txt"}),
    ]
    assert all(u.id.startswith("toolu_") for u in uses)
    assert len({u.id for u in uses}) == 2

    explicit = create(client)
    assert [b.id for b in explicit.content if b.type == "tool_use"] == ["toolu_chosen"]


def test_reused_tool_turn_never_repeats_auto_ids(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    # "Always call the same tool" loops return one item object forever; the ids must still differ.
    same = tool_turn([("ping", {})])
    api.responder = lambda body: same
    ids = {create(client).content[0].id for _ in range(3)}
    assert len(ids) == 3


def test_raw_turn_and_items_are_plain_json(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    items = [
        text_turn("x"),
        tool_turn([("t", {"a": 1})]),
        turn([{"type": "text", "text": "raw"}], "stop_sequence"),
        fault(status=429, headers={"retry-after": "1"}),
        fault(delay=0.1, drop=True),
    ]
    assert json.loads(json.dumps(items)) == items
    assert all(check_item(item) is item for item in items)
    with pytest.raises(ValueError):
        api.enqueue({"kind": "nonsense"})

    api.enqueue(items[2])
    assert create(client).content[0].text == "raw"


def test_agent_loop_round_trip_with_tool_results(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    api.enqueue(tool_turn([("add", {"a": 2, "b": 3})]), text_turn("5"))
    messages: list[dict[str, Any]] = [{"role": "user", "content": "2+3?"}]
    first = create(client, messages=messages)
    use = first.content[0]
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "5"}],
        },
    ]
    assert create(client, messages=messages).content[0].text == "5"
    assert api.message_requests[1].body["messages"][2]["content"][0]["tool_use_id"] == use.id


def test_streaming_gives_the_same_message(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    api.enqueue(text_turn("streamed words"), tool_turn([("look", {"q": [1, 2]})], text="hm"))
    with client.messages.stream(model=MODEL, max_tokens=64, messages=USER_HI) as stream:
        assert "".join(stream.text_stream) == "streamed words"
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens >= 1
    with client.messages.stream(model=MODEL, max_tokens=64, messages=USER_HI) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[1].input == {"q": [1, 2]}
    assert final.stop_reason == "tool_use"


# --------------------------------------------------------------------------- faults


def test_429_raises_rate_limit_error_with_retry_after(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    api.enqueue(fault(status=429, headers={"retry-after": "1"}))
    with pytest.raises(anthropic.RateLimitError) as info:
        create(client)
    err = info.value
    assert err.status_code == 429
    assert err.response.headers["retry-after"] == "1"
    assert err.response.headers["request-id"] == "req_fake_1"
    assert err.request_id == "req_fake_1"
    assert err.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "fake server: rate limited"},
    }


def test_529_raises_status_error(api: FakeMessagesAPI, client: anthropic.Anthropic) -> None:
    api.enqueue(fault(status=529))
    with pytest.raises(anthropic.APIStatusError) as info:
        create(client)
    assert info.value.status_code == 529
    # anthropic 2.x has a dedicated subclass; 0.x raised a plain InternalServerError.
    assert isinstance(info.value, anthropic.InternalServerError)
    assert info.value.body["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize(
    ("status", "error_type", "exc"),
    [
        (400, "invalid_request_error", anthropic.BadRequestError),
        (401, "authentication_error", anthropic.AuthenticationError),
        (403, "permission_error", anthropic.PermissionDeniedError),
        (404, "not_found_error", anthropic.NotFoundError),
        (413, "request_too_large", anthropic.APIStatusError),
        (500, "api_error", anthropic.InternalServerError),
        (503, "api_error", anthropic.InternalServerError),
    ],
)
def test_error_type_defaults_from_status(
    api: FakeMessagesAPI,
    client: anthropic.Anthropic,
    status: int,
    error_type: str,
    exc: type[anthropic.APIStatusError],
) -> None:
    api.enqueue(fault(status=status, message="custom words"))
    with pytest.raises(exc) as info:
        create(client)
    assert info.value.status_code == status
    assert info.value.body["error"] == {"type": error_type, "message": "custom words"}


def test_wrong_key_gets_401_and_keeps_the_script() -> None:
    with FakeMessagesAPI(require_key="right-key") as api:
        api.enqueue(text_turn("welcome"))
        wrong = anthropic.Anthropic(api_key="wrong-key", base_url=api.url, max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as info:
            create(wrong)
        assert info.value.body["error"]["type"] == "authentication_error"
        assert api.pending == 1  # an auth failure must not eat the scripted turn

        right = anthropic.Anthropic(api_key="right-key", base_url=api.url, max_retries=0)
        assert create(right).content[0].text == "welcome"

        # Both header styles the real API accepts; the SDK itself only sends one of them.
        body = {"model": MODEL, "max_tokens": 5, "messages": USER_HI}
        api.enqueue(text_turn("a"), text_turn("b"))
        version = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
        assert raw_post(api.url, body, {**version, "x-api-key": "right-key"})[0] == 200
        bearer = {**version, "authorization": "Bearer right-key"}
        assert raw_post(api.url, body, bearer)[0] == 200
        assert raw_post(api.url, body, version)[0] == 401


def test_drop_raises_connection_error(api: FakeMessagesAPI, client: anthropic.Anthropic) -> None:
    # The second drop happens on a reused keep-alive connection, the first on a fresh one.
    api.enqueue(fault(drop=True), text_turn("ok"), fault(drop=True))
    with pytest.raises(anthropic.APIConnectionError) as info:
        create(client)
    assert not isinstance(info.value, anthropic.APITimeoutError)
    assert create(client).content[0].text == "ok"
    with pytest.raises(anthropic.APIConnectionError):
        create(client)
    assert len(api.message_requests) == 3


def test_delay_times_out_client_and_stop_is_prompt() -> None:
    api = FakeMessagesAPI().start()
    try:
        api.enqueue(fault(delay=30))
        client = anthropic.Anthropic(api_key="k", base_url=api.url, max_retries=0, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(anthropic.APITimeoutError):
            create(client)
        assert time.monotonic() - started < 2
        assert len(api.requests) == 1  # recorded although never answered
    finally:
        # The handler is still inside its 30 s delay; stop() must cut it short.
        started = time.monotonic()
        api.stop()
        assert time.monotonic() - started < 1.5


def test_delay_then_answers_500(api: FakeMessagesAPI, client: anthropic.Anthropic) -> None:
    api.enqueue(fault(delay=0.2))
    started = time.monotonic()
    with pytest.raises(anthropic.InternalServerError) as info:
        create(client)
    assert time.monotonic() - started >= 0.2
    assert info.value.body["error"]["type"] == "api_error"


def test_malformed_body_raises_json_decode_error(api: FakeMessagesAPI) -> None:
    # Found by running anthropic 2.11.0: a 200 with broken JSON is not wrapped in an
    # anthropic exception; json.JSONDecodeError (a ValueError) escapes from the parse step,
    # after the retry loop, so the SDK does not retry it either.
    api.enqueue(fault(malformed=True), text_turn("never reached"))
    client = anthropic.Anthropic(api_key="k", base_url=api.url, max_retries=2)
    with pytest.raises(json.JSONDecodeError) as info:
        create(client)
    assert not isinstance(info.value, anthropic.AnthropicError)
    assert len(api.requests) == 1
    assert api.pending == 1


def test_body_fault_is_served_verbatim(api: FakeMessagesAPI, client: anthropic.Anthropic) -> None:
    # The SDK builds its models without validating them: a reply of the wrong shape comes
    # through as whatever was sent, for the caller to check.
    api.enqueue(fault(body={**WELL_FORMED_MESSAGE, "content": "not a list", "usage": None}))
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=USER_HI)
    assert raw.status_code == 200
    assert raw.json() == {**WELL_FORMED_MESSAGE, "content": "not a list", "usage": None}


def test_trickled_body_outlasts_the_sdk_timeout(api: FakeMessagesAPI) -> None:
    # The SDK's timeout bounds each read, not the call: a byte every 20 ms never trips a
    # 0.5 s timeout, and the whole reply arrives long after it.
    api.enqueue(fault(trickle=50))
    client = anthropic.Anthropic(api_key="k", base_url=api.url, max_retries=0, timeout=0.5)
    started = time.monotonic()
    message = create(client)
    assert time.monotonic() - started >= len(json.dumps(WELL_FORMED_MESSAGE)) / 50
    assert message.content[0].text == WELL_FORMED_MESSAGE["content"][0]["text"]


def test_trickled_headers_outlast_the_sdk_timeout(api: FakeMessagesAPI) -> None:
    api.enqueue(fault(trickle=100, trickle_headers=True))
    client = anthropic.Anthropic(api_key="k", base_url=api.url, max_retries=0, timeout=0.5)
    started = time.monotonic()
    message = create(client)
    assert time.monotonic() - started > 0.5
    assert message.stop_reason == "end_turn"


def test_trickle_zero_stalls_after_the_headers_and_stop_is_prompt() -> None:
    api = FakeMessagesAPI().start()
    try:
        api.enqueue(fault(trickle=0))
        client = anthropic.Anthropic(api_key="k", base_url=api.url, max_retries=0, timeout=0.5)
        with pytest.raises(anthropic.APITimeoutError):
            create(client)
    finally:
        started = time.monotonic()
        api.stop()  # the handler is stalled after its headers; stop() must end it
        assert time.monotonic() - started < 1.5


def test_trickle_rate_is_checked() -> None:
    with pytest.raises(ValueError, match="trickle"):
        check_item(fault(trickle=-1))


def test_empty_queue_is_a_loud_500(api: FakeMessagesAPI, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as info:
        create(client)
    assert info.value.status_code == 500
    assert info.value.body["error"]["message"] == NO_SCRIPT_MESSAGE
    assert "no scripted response left" in str(info.value)


def test_responder_is_used_when_queue_is_empty(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    seen: list[int] = []

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        seen.append(len(body["messages"]))
        return text_turn(f"turn {len(seen)}")

    api.enqueue(text_turn("scripted first"))
    api.responder = respond
    assert create(client).content[0].text == "scripted first"
    assert create(client).content[0].text == "turn 1"
    assert create(client).content[0].text == "turn 2"
    assert seen == [1, 1]

    api.responder = lambda body: {"kind": "bogus"}
    with pytest.raises(anthropic.InternalServerError, match="responder failed"):
        create(client)


def test_invalid_requests_get_400_without_consuming_the_script(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    api.enqueue(text_turn("fine"))
    dangling = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "x", "input": {}}],
        },
        {"role": "user", "content": "forgot the tool_result"},
    ]
    with pytest.raises(anthropic.BadRequestError, match="without `tool_result`"):
        create(client, messages=dangling)
    with pytest.raises(anthropic.BadRequestError, match="non-empty"):
        create(client, messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}])
    assert api.pending == 1
    assert create(client).content[0].text == "fine"


# --------------------------------------------------------------------------- usage and caching


def test_prompt_cache_reports_creation_then_read(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    tools = [
        {
            "name": "lookup",
            "description": "Look something up. " * 20,
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
            "cache_control": {"type": "ephemeral"},
        }
    ]
    system = [
        {"type": "text", "text": "You are a careful agent. " * 40},
        {"type": "text", "text": "Rules: be brief. " * 10, "cache_control": {"type": "ephemeral"}},
    ]
    api.enqueue(text_turn("one"), text_turn("two"), text_turn("three"), text_turn("four"))

    first = create(client, tools=tools, system=system).usage
    second = create(client, tools=tools, system=system, messages=[{"role": "user", "content": "?"}])
    second_usage = second.usage

    assert first.cache_creation_input_tokens > 0
    assert first.cache_read_input_tokens == 0
    assert second_usage.cache_creation_input_tokens == 0
    assert second_usage.cache_read_input_tokens == first.cache_creation_input_tokens
    # The cached prefix is reported separately, not also inside input_tokens.
    total = estimate_input_tokens({"tools": tools, "system": system, "messages": USER_HI})
    assert first.input_tokens == total - first.cache_creation_input_tokens
    assert 0 < first.input_tokens < first.cache_creation_input_tokens

    # Changing the system prompt still reads the cached tools prefix and writes the rest.
    changed = [*system[:1], {**system[1], "text": "Other rules."}]
    third = create(client, tools=tools, system=changed).usage
    assert 0 < third.cache_read_input_tokens < first.cache_creation_input_tokens
    assert third.cache_creation_input_tokens > 0

    # Changing the tools (the start of the prefix) misses completely.
    other_tools = [{**tools[0], "name": "search"}]  # same length as "lookup": same size
    fourth = create(client, tools=other_tools, system=system).usage
    assert fourth.cache_read_input_tokens == 0
    assert fourth.cache_creation_input_tokens == first.cache_creation_input_tokens


def test_prompt_cache_incremental_conversation(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    # The documented pattern: cache_control on the latest message block, moved every turn.
    def user(text: str, cached: bool) -> dict[str, Any]:
        block: dict[str, Any] = {"type": "text", "text": text}
        if cached:
            block["cache_control"] = {"type": "ephemeral"}
        return {"role": "user", "content": [block]}

    system = [{"type": "text", "text": "S" * 400, "cache_control": {"type": "ephemeral"}}]
    api.enqueue(text_turn("a1"), text_turn("a2"))
    turn1 = create(client, system=system, messages=[user("q1 " * 50, True)]).usage
    history = [
        user("q1 " * 50, False),
        {"role": "assistant", "content": "a1"},
        user("q2 " * 50, True),
    ]
    turn2 = create(client, system=system, messages=history).usage
    assert turn1.cache_read_input_tokens == 0
    assert turn2.cache_read_input_tokens == turn1.cache_creation_input_tokens
    assert turn2.cache_creation_input_tokens > 0  # the new turn is appended to the cache


def test_no_cache_below_minimum() -> None:
    with FakeMessagesAPI(cache_min_tokens=1024) as api:
        client = anthropic.Anthropic(api_key="k", base_url=api.url, max_retries=0)
        system = [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}]
        api.enqueue(text_turn("a"), text_turn("b"))
        for _ in range(2):
            usage = create(client, system=system).usage
            assert usage.cache_creation_input_tokens == 0
            assert usage.cache_read_input_tokens == 0


def test_count_tokens_uses_estimate_and_keeps_queue(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    api.enqueue(text_turn("still here"))
    system = "Be helpful."
    counted = client.messages.count_tokens(model=MODEL, system=system, messages=USER_HI)
    assert counted.input_tokens == estimate_input_tokens({"system": system, "messages": USER_HI})
    assert api.pending == 1
    assert api.message_requests == []
    assert [r.path for r in api.requests] == ["/v1/messages/count_tokens"]


# --------------------------------------------------------------------------- recording


def test_requests_are_recorded_with_bodies(
    api: FakeMessagesAPI, client: anthropic.Anthropic
) -> None:
    api.enqueue(text_turn("one"), fault(status=429))
    before = time.time()
    create(client, system="sys prompt", messages=[{"role": "user", "content": "first"}])
    with pytest.raises(anthropic.RateLimitError):
        create(client, messages=[{"role": "user", "content": "second"}])

    recorded = api.message_requests
    assert len(recorded) == 2
    first, second = recorded
    assert first.path == "/v1/messages"
    assert first.body["model"] == MODEL
    assert first.body["system"] == "sys prompt"
    assert first.body["messages"] == [{"role": "user", "content": "first"}]
    assert second.body["messages"][0]["content"] == "second"  # faulted requests are kept too
    assert first.headers["authorization"] == "Bearer test-key"
    assert "anthropic-version" in first.headers
    assert all(k == k.lower() for k in first.headers)
    assert before <= first.at <= second.at <= time.time()


def test_concurrent_requests_are_all_recorded(api: FakeMessagesAPI) -> None:
    n = 16
    api.responder = lambda body: text_turn(body["messages"][0]["content"])
    client = anthropic.Anthropic(api_key="k", base_url=api.url, max_retries=0)
    answers: list[str] = []

    def worker(i: int) -> None:
        message = create(client, messages=[{"role": "user", "content": f"m{i}"}])
        answers.append(message.content[0].text)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(answers) == sorted(f"m{i}" for i in range(n))
    assert len(api.message_requests) == n
    assert len({r.headers["x-stainless-retry-count"] for r in api.message_requests}) == 1


# --------------------------------------------------------------------------- CLI


def test_cli_serves_a_script_file(tmp_path: Path) -> None:
    script = {"turns": [text_turn("from file"), tool_turn([("again", {})])], "repeat_last": True}
    script_path = tmp_path / "script.json"
    script_path.write_text(json.dumps(script))
    record_path = tmp_path / "requests.jsonl"
    command = [sys.executable, "-m", "tests.fake_api", "--script", str(script_path)]
    command += ["--record", str(record_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            # Bounded wait so a server that never starts fails the test instead of hanging it.
            ready, _, _ = select.select([proc.stdout], [], [], 10)
            assert ready, "fake_api CLI printed no URL within 10 s"
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            client = anthropic.Anthropic(api_key="k", base_url=url, max_retries=0)
            assert create(client).content[0].text == "from file"
            ids = [create(client).content[0].id for _ in range(3)]  # repeat_last keeps serving
            assert len(set(ids)) == 3
            lines = record_path.read_text().splitlines()
            assert len(lines) == 4
            assert json.loads(lines[0])["body"]["model"] == MODEL
        finally:
            proc.terminate()
        assert proc.wait(timeout=5) == 0  # SIGTERM is a clean shutdown
