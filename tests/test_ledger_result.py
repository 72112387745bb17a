"""A side effect's recorded result is a bounded excerpt, not the whole of what it returned."""

from __future__ import annotations

from tests.fake_api import tool_turn
from tests.turns import finish, update_memory

BIG_TOOL = '''
from jobrunner import tool
@tool(risk="medium")
def export(rows: int) -> str:
    """Export rows and return the whole export."""
    return "row of the export, " * rows
'''


def test_a_huge_side_effect_result_is_stored_as_an_excerpt(project, fake_api):
    project.tool_file("export", BIG_TOOL)
    project.job("job", tools=["export"])
    fake_api.enqueue(tool_turn([("export", {"rows": 2_800_000})]),  # about 50 MB
                     tool_turn([update_memory(), finish()]))
    ran = project.run("run", "job")
    assert ran.code == 0, ran.stderr
    [entry] = project.run("ledger", "--json").json()
    assert entry["state"] == "done"
    assert entry["result"]["truncated"] is True
    assert entry["result"]["original_chars"] > 50_000_000
    assert entry["result"]["excerpt"].startswith('"row of the export, ')
    database = sum(p.stat().st_size for p in project.state.glob("*.db*"))
    assert database < 5_000_000
