"""Summaries instead of bare elision: the same sessions as benchmark 3 (each step's tool
returns 8 KB), with `limits.summarize_with = "claude-haiku-4-5"` against plain elision.

    .venv/bin/python -m bench.summaries [--steps 30 --steps 60]

Both contenders make the same agent turns against the same fake server; with summaries
on, each elision batch also asks the summary model once (a request without tools, which
the server answers with a ~300-token summary). Figures from the run's trace and record:
input tokens over every call (agent and summaries), the summaries' share, the cost (the
run's record: Sonnet 4.6 for the agent, Haiku 4.5 for the summaries) and the largest
single call. The gain a summary brings (what the agent still knows after elision) is not
measured here; this measures what it costs.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import make_project
from bench.sessions import prepare, scripted
from tests.fake_api import FakeMessagesAPI, text_turn

SUMMARY_MODEL = "claude-haiku-4-5"
# About 300 tokens, like a summary capped at the default summary_tokens (400).
SUMMARY = ("Pages 1 to N of the report were read. They list word tokens such as alpha3, "
           "bravo17 and charlie40 in rotating order, with no figures, names or errors "
           "beyond that; each page repeats the same twelve words with counters. ") * 5


def _prompt(usage: dict) -> int:
    return (usage["input_tokens"] + usage["cache_creation_input_tokens"]
            + usage["cache_read_input_tokens"])


def _session(api: FakeMessagesAPI, project, steps: int, summarize: bool) -> dict:
    name = f"{'summaries' if summarize else 'elision'}-{steps}"
    prepare(project, name, "blob", steps)
    if summarize:
        path = project.root / "jobs" / f"{name}.toml"
        path.write_text(path.read_text().replace(
            "[limits]\n", f'[limits]\nsummarize_with = "{SUMMARY_MODEL}"\n'))
    agent = scripted("blob", steps)
    api.reset()
    api.responder = lambda body: agent(body) if body.get("tools") else text_turn(SUMMARY)
    result = project.cli("run", name)
    if result.code != 0:
        raise RuntimeError(f"bench: jobrunner run {name} exited {result.code}: {result.stderr}")
    record = project.runs(name)[0]
    events = project.trace(record["id"])
    agent_calls = [e["usage"] for e in events if e["event"] == "model.response"]
    summary_calls = [e["usage"] for e in events if e["event"] == "summary.response"]
    if len(agent_calls) != steps:
        raise RuntimeError(f"bench: expected {steps} steps, the run made {len(agent_calls)}")
    return {
        "steps": steps, "summaries": len(summary_calls),
        "elisions": sum(1 for e in events if e["event"] == "context.elided"),
        "input_tokens": sum(_prompt(u) for u in agent_calls + summary_calls),
        "summary_input_tokens": sum(_prompt(u) for u in summary_calls),
        "output_tokens": sum(u["output_tokens"] for u in agent_calls + summary_calls),
        "cost": record["cost_usd"],
        "largest_call": max(_prompt(u) for u in agent_calls + summary_calls),
    }


def run(steps: tuple[int, ...] = (30, 60)) -> list[tuple[dict, dict]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="jr-bench-summaries-") as tmp, \
            FakeMessagesAPI() as api:
        project = make_project(Path(tmp), api.url)
        for count in steps:
            rows.append((_session(api, project, count, False),
                         _session(api, project, count, True)))
    return rows


def render(rows: list[tuple[dict, dict]]) -> str:
    lines = ["| steps | contender | elision batches | summaries | input tokens in all | "
             "of which summaries | output tokens | cost | largest call |",
             "|---|---|---|---|---|---|---|---|---|"]
    for plain, summed in rows:
        for label, row in (("plain elision", plain), ("summaries", summed)):
            lines.append(
                f"| {row['steps']} | {label} | {row['elisions']} | {row['summaries']} | "
                f"{row['input_tokens']:,} | {row['summary_input_tokens']:,} | "
                f"{row['output_tokens']:,} | ${row['cost']:.4f} | {row['largest_call']:,} |")
    last_plain, last_sum = rows[-1]
    lines.append("")
    lines.append(f"{last_plain['steps']} steps: summaries cost "
                 f"{last_sum['cost'] / last_plain['cost']:.3f}x plain elision, "
                 f"input tokens {last_sum['input_tokens'] / last_plain['input_tokens']:.3f}x, "
                 f"largest call {last_sum['largest_call'] / last_plain['largest_call']:.3f}x.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, action="append")
    options = parser.parse_args()
    print(render(run(tuple(options.steps or (30, 60)))))


if __name__ == "__main__":
    main()
