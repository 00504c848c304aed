"""Server-Sent Events as the daemon writes them (edged/jobs/sse.py): `event:` and `data:` lines, a blank
line ends an event, `:` lines are comments (the keep-alives). Each event's data is one JSON object; a
job event's data carries its `id`, the value a follower sends back as `Last-Event-ID` to resume."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

SseEvent = tuple[str, dict[str, Any]]  # (event type, its JSON data)


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """(event type, data) for each complete event in `lines` (a stream's lines, without line endings)."""
    kind, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)
