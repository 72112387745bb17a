"""MEMORY.md parsing and rewriting: lossless for what the agent does not rewrite."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jobrunner.memory.format import MemoryUpdate, apply_update, parse, with_failure_line

TITLES = ["Current objective", "KEY DECISIONS MADE", "what not to do (failure log)",
          "Open Items", "objective", "Failure log", "Notes", "Links to dashboards", ""]
heading = st.builds(
    lambda level, title, tail: "#" * level + " " + title + tail,
    st.integers(1, 7), st.sampled_from(TITLES) | st.text(max_size=15),
    st.sampled_from(["", " #", "  ", "\t##"]),
)
plain = st.sampled_from(["", "- item", "* other", "1. first", "```", "~~~ python", "text",
                         "   ## indented", "#nospace", "\t"]) | st.text(max_size=30)
line_end = st.sampled_from(["\n", "\r\n", "", "\r", "\x0c"])
document = st.builds(
    lambda bom, lines: ("\ufeff" if bom else "") + "".join(a + b for a, b in lines),
    st.booleans(), st.lists(st.tuples(heading | plain, line_end), max_size=25),
)
items = st.lists(st.text(max_size=25), max_size=4)
updates = st.builds(MemoryUpdate, current_objective=st.text(max_size=40), key_decisions=items,
                    what_not_to_do=items, open_items=items)


@settings(max_examples=300, deadline=None)
@given(document)
def test_any_hand_written_markdown_round_trips_byte_for_byte(text):
    assert parse(text).render() == text


def _in_order(chunks: list[str], text: str) -> bool:
    position = 0
    for chunk in chunks:
        found = text.find(chunk, position)
        if found < 0:
            return False
        position = found + len(chunk)
    return True


@settings(max_examples=300, deadline=None)
@given(document, updates)
def test_rewriting_sections_never_loses_unknown_text(text, update):
    memory = parse(text)
    kept = [b.heading + b.body for b in memory.blocks if b.key is None]
    rewritten = apply_update(memory, update).render()
    assert _in_order(kept, rewritten)
    assert rewritten.startswith("\ufeff") == text.startswith("\ufeff")
    # What the agent wrote reads back as written.
    again = parse(rewritten)
    assert again.items("key_decisions") == [" ".join(i.split()) for i in update.key_decisions
                                            if i.strip()]
    assert again.items("open_items") == [" ".join(i.split()) for i in update.open_items
                                         if i.strip()]
    # Unknown sections survive a second rewrite too.
    assert _in_order(kept, apply_update(again, update).render())


with_all_sections = st.builds(
    lambda parts, level, nl: "".join(
        f"{'#' * level} {title}{nl}{body}{nl}"
        for title, body in zip(["Current objective", "Key decisions made",
                                "What NOT to do (failure log)", "Open items"], parts[:4],
                               strict=True)) + parts[4],
    st.lists(document, min_size=5, max_size=5), st.integers(1, 6), st.sampled_from(["\n", "\r\n"]),
)


@settings(max_examples=200, deadline=None)
@given(with_all_sections)
def test_an_update_that_says_the_same_thing_changes_no_byte(text):
    memory = parse(text)
    keys = ("current_objective", "key_decisions", "what_not_to_do", "open_items")
    assume(all(memory.section(k) for k in keys))  # a fence may hide a heading
    same = MemoryUpdate(
        current_objective=memory.section_text("current_objective"),
        key_decisions=memory.items("key_decisions"),
        what_not_to_do=memory.items("what_not_to_do"), open_items=memory.items("open_items"),
    )
    assert apply_update(memory, same).render() == text


HAND_EDITED = (
    "\ufeffNotes before any heading.\r\n\r\n"
    "### CURRENT OBJECTIVE ###\r\nKeep the weekly report going.\r\n\r\n"
    "## Runbook\r\n* step one\r\n* step two\r\n\r\n"
    "# key decisions\r\n1. Report on Mondays.\r\n\r\n"
    "## Open items\r\n- check the partner feed\r\n"
)


def test_tolerant_loading_of_a_hand_edited_file():
    memory = parse(HAND_EDITED)
    assert memory.bom and memory.newline == "\r\n"
    assert memory.section_text("current_objective") == "Keep the weekly report going."
    assert memory.items("key_decisions") == ["Report on Mondays."]
    assert memory.items("open_items") == ["check the partner feed"]
    updated = apply_update(memory, MemoryUpdate(
        current_objective="Keep the weekly report going.", key_decisions=["Report on Mondays."],
        what_not_to_do=["Do not email before the feed lands."], open_items=[],
    )).render()
    # Untouched parts keep their bytes; the new section uses the file's own style.
    assert updated.startswith("\ufeffNotes before any heading.\r\n\r\n### CURRENT OBJECTIVE ###")
    assert "## Runbook\r\n* step one\r\n* step two\r\n\r\n# key decisions\r\n1. Report" in updated
    assert "### What NOT to do (failure log)\r\n\r\n- Do not email before the feed lands.\r\n" \
        in updated
    assert "check the partner feed" not in updated


def test_failure_lines_drop_the_oldest_of_their_own_kind_only():
    base = parse(
        "# Memory: x\n\n## What NOT to do (failure log)\n\n"
        "- Never send the report twice (written by a person).\n"
        + "".join(f"- 2026-11-{d:02d} run r{d} aborted (tool_failed) at step 1: boom\n"
                  for d in range(1, 9))
        + "\n## Open items\n\n- a\n"
    )
    updated = with_failure_line(base, "2026-11-21 run new aborted (tool_failed): x", 100)
    text = updated.render()
    assert updated.tokens() <= 100
    assert "Never send the report twice" in text
    assert "2026-11-21 run new aborted" in text
    assert "run r8 " in text and "run r1 " not in text  # oldest first
    assert text.endswith("## Open items\n\n- a\n")


def test_a_large_hand_edited_memory_reads_back_byte_for_byte():
    # 3 MB of a person's notes (its parse time is in bench/: parsing is linear).
    notes = "".join(f"- note {i}: a line a person wrote by hand\r\n" for i in range(70_000))
    text = ("\ufeffpreface\r\n# Memory: big\r\n## Current objective\r\nWork.\r\n"
            "## Notes\r\n" + notes + "## Open items\r\n- one\r\n")
    from jobrunner.memory.format import parse

    memory = parse(text)
    assert memory.render() == text
    assert memory.items("open_items") == ["one"]
    assert [b.title for b in memory.blocks] == ["", "Memory: big", "Current objective", "Notes",
                                                "Open items"]
