"""Benchmark 3, token and cost growth: sessions of 10, 30 and 60 steps whose tool returns
8 KB each time, through jobrunner (context bounded by `limits.context_tokens`, stable
prefix marked for caching) and through the naive loop that keeps every result.

Token counts are what the fake server reported as usage (about 4 characters a token, with
its prompt-cache simulation); cost applies jobrunner's built-in price table for the model
to that usage. Target: every call's input within `context_tokens`; the 60-step total cost
at most a quarter of the naive loop's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import make_project
from bench.sessions import MODEL, prepare, run_jobrunner, run_naive
from jobrunner.models.pricing import BUILTIN_PRICES, Usage, cost_usd
from tests.fake_api import FakeMessagesAPI

STEPS = (10, 30, 60)
DEFAULT_CONTEXT_TOKENS = 60_000


def _prompt(u: list[int]) -> int:
    return u[0] + u[2] + u[3]


def run(context_tokens: int | None = None) -> dict:
    price = BUILTIN_PRICES[MODEL]
    rows = []
    with tempfile.TemporaryDirectory(prefix="jr-bench-tokens-") as tmp, \
            FakeMessagesAPI() as api:
        project = make_project(Path(tmp), api.url)
        for steps in STEPS:
            name = f"tokens-{steps}"
            prepare(project, name, "blob", steps, context_tokens)
            _, record = run_jobrunner(api, project, name, "blob", steps)
            usages = [
                [e["usage"]["input_tokens"], e["usage"]["output_tokens"],
                 e["usage"]["cache_creation_input_tokens"], e["usage"]["cache_read_input_tokens"]]
                for e in project.trace(record["id"]) if e["event"] == "model.response"
            ]
            _, naive = run_naive(api, project, "blob", steps)
            naive_cost = sum(cost_usd(price, Usage(*u)) for u in naive["usage"])
            rows.append({
                "steps": steps,
                "jobrunner_max_input": max(_prompt(u) for u in usages),
                "jobrunner_total_input": sum(_prompt(u) for u in usages),
                "jobrunner_cost": record["cost_usd"],
                "naive_max_input": max(_prompt(u) for u in naive["usage"]),
                "naive_total_input": sum(_prompt(u) for u in naive["usage"]),
                "naive_cost": round(naive_cost, 6),
            })
    bound = context_tokens or DEFAULT_CONTEXT_TOKENS
    last = rows[-1]
    ratio = last["jobrunner_cost"] / last["naive_cost"]
    return {
        "name": "token and cost growth",
        "context_tokens": bound,
        "rows": rows,
        "cost_ratio_60": round(ratio, 3),
        "target": "per-call input <= context_tokens; 60-step cost <= 1/4 of the naive loop's",
        "met_bound": all(r["jobrunner_max_input"] <= bound for r in rows),
        "met_cost": ratio <= 0.25,
    }


def render(r: dict) -> str:
    lines = [
        f"`context_tokens = {r['context_tokens']}`",
        "",
        "| steps | largest call, jobrunner | largest call, naive | input tokens in all, "
        "jobrunner | naive | cost, jobrunner | cost, naive | cost ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['steps']} | {row['jobrunner_max_input']:,} | {row['naive_max_input']:,} | "
            f"{row['jobrunner_total_input']:,} | {row['naive_total_input']:,} | "
            f"${row['jobrunner_cost']:.4f} | ${row['naive_cost']:.4f} | "
            f"{row['jobrunner_cost'] / row['naive_cost']:.2f} |")
    lines.append("")
    lines.append(f"Target ({r['target']}): bound {'met' if r['met_bound'] else 'NOT met'}, "
                 f"cost {'met' if r['met_cost'] else 'NOT met'} "
                 f"(60 steps: {r['cost_ratio_60']:.2f} of the naive cost).")
    return "\n".join(lines)
