"""Filter `tag_counters`: the tag program's per-CPU counter map as bpftool dumps it (JSON, one entry
per key, `formatted.values` one per CPU) -> {counter name: sum over CPUs}. Names in key order, as
bpf/tag.bpf.c's enum vnt_tag_counter numbers them."""

from __future__ import annotations

import json

NAMES = ["sockets", "tagged", "no_room", "store_failed"]


def tag_counters(dump: str) -> dict:
    """An empty or unreadable dump gives {} (the map was gone, e.g. nothing was attached)."""
    try:
        entries = json.loads(dump) if dump else []
        sums = [sum(cpu["value"] for cpu in e["formatted"]["values"]) for e in entries]
    except (ValueError, KeyError, TypeError):
        return {}
    return dict(zip(NAMES, sums))


class FilterModule:
    def filters(self):
        return {"tag_counters": tag_counters}
