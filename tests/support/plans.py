"""Reading EXPLAIN (ANALYZE, FORMAT JSON) plans in tests: what a statement really read."""

from __future__ import annotations

from collections.abc import Iterator


def nodes(plan: dict) -> Iterator[dict]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def rows_read(plan: dict, table: str) -> int:
    """Rows (or index entries) the scans of `table` and of its indexes read, over all their
    loops: those returned and those filtered out."""
    return sum(
        (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
        for node in nodes(plan)
        if node.get("Relation Name") == table or node.get("Index Name", "").startswith(f"{table}_")
    )


def seq_scanned(plan: dict) -> set[str]:
    return {node["Relation Name"] for node in nodes(plan) if node["Node Type"] == "Seq Scan"}
