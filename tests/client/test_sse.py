"""The one SSE reader (edged.client.sse) against what the daemon writes (edged.jobs.sse) and the parts of
the Server-Sent Events format the daemon does not use today: comments, multi-line data, unknown fields."""

from __future__ import annotations

from edged.client import parse_sse
from edged.jobs.sse import format_end, format_event


def _lines(text: str) -> list[str]:
    return text.split("\n")


def test_parse_sse_reads_what_the_daemon_writes():
    events = [{"id": 1, "ts": "t", "type": "stage", "stage": "train", "data": {"status": "started"}},
              {"id": 2, "ts": "t", "type": "step", "stage": "train", "data": {"step": 3, "total_steps": 9}}]
    end = 'event: end\ndata: {"state": "succeeded"}\n\n'
    text = ": keep-alive\n\n" + "".join(format_event(e) for e in events) + end
    parsed = list(parse_sse(iter(text.split("\n"))))
    assert [kind for kind, _ in parsed] == ["stage", "step", "end"]
    assert parsed[1][1]["step"] == 3 and parsed[2][1] == {"state": "succeeded"}


def test_the_end_event_of_a_stopping_daemon_carries_its_reason():
    job = {"state": "running", "error": None, "progress": 0.5}
    (kind, data), = parse_sse(_lines(format_end(job, daemon_stopping=True)))
    assert kind == "end" and data["daemon_stopping"] is True and data["state"] == "running"
    assert "Last-Event-ID" in data["reason"]


def test_multi_line_data_comments_and_unknown_fields():
    text = ('id: 7\nevent: epoch\nretry: 1000\ndata: {"epoch":\n: a comment inside an event\ndata:  1}\n\n'
            'data:{"no": "type"}\n\n')
    assert list(parse_sse(_lines(text))) == [("epoch", {"epoch": 1}), ("message", {"no": "type"})]


def test_an_event_type_does_not_leak_into_the_next_event_and_a_cut_off_event_is_dropped():
    text = 'event: step\ndata: {"a": 1}\n\ndata: {"b": 2}\n\nevent: epoch\ndata: {"cut": "off"}'
    assert list(parse_sse(_lines(text))) == [("step", {"a": 1}), ("message", {"b": 2})]


def test_blank_lines_without_data_yield_nothing():
    assert list(parse_sse(["", "", ": keep-alive", "", "event: step", ""])) == []
