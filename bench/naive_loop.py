"""The baseline agent loop of the kind the field reports show: the same anthropic SDK,
the same tools and the same server, but no guards, no trace, no ledger, no limits, and
every tool result kept in the conversation forever.

    python -m bench.naive_loop TOOLS_FILE MODEL   (prints one JSON line of per-call usage)
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time

SYSTEM = "You are an agent. Use the tools to do the task, then call finish."


def main() -> int:
    tools_file, model = sys.argv[1], sys.argv[2]
    spec = importlib.util.spec_from_file_location("bench_tools", tools_file)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    functions = {"tick": module.tick, "blob": module.blob}
    import anthropic

    client = anthropic.Anthropic(max_retries=0)
    tools = [
        {"name": name, "description": fn.__doc__ or name,
         "input_schema": {"type": "object", "properties": {"i": {"type": "integer"}},
                          "required": ["i"]}}
        for name, fn in functions.items()
    ] + [
        {"name": "update_memory", "description": "Save notes.",
         "input_schema": {"type": "object", "properties": {}}},
        {"name": "finish", "description": "End the run.",
         "input_schema": {"type": "object", "properties": {"summary": {"type": "string"}}}},
    ]
    messages: list[dict] = [{"role": "user", "content": "Do the task now."}]
    usage = []
    started = time.perf_counter()
    while True:
        response = client.messages.create(model=model, max_tokens=4096, system=SYSTEM,
                                          tools=tools, messages=messages)
        u = response.usage
        usage.append([u.input_tokens, u.output_tokens, u.cache_creation_input_tokens or 0,
                      u.cache_read_input_tokens or 0])
        messages.append({"role": "assistant",
                         "content": [b.model_dump(exclude_none=True) for b in response.content]})
        calls = [b for b in response.content if b.type == "tool_use"]
        if not calls or any(b.name == "finish" for b in calls):
            break
        results = []
        for call in calls:
            try:
                fn = functions.get(call.name)
                out = fn(**call.input) if fn else "ok"
                results.append({"type": "tool_result", "tool_use_id": call.id,
                                "content": str(out)})
            except Exception as exc:  # the seeds' pattern: the error goes back to the model
                results.append({"type": "tool_result", "tool_use_id": call.id,
                                "content": f"Tool failed: {exc}", "is_error": True})
        messages.append({"role": "user", "content": results})
    print(json.dumps({"steps": len(usage), "usage": usage,
                      "loop_s": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
