"""A job's events as Server-Sent Events, read from `job_events` (written by the worker process).

Each event is `id: <event id>`, `event: <type>` (state, stage, step, epoch, resumed), `data: <JSON>`;
a client reconnecting with `Last-Event-ID` gets the events after that one. The stream ends with an
`end` event once the job is in a final state and every event before it has been sent, or, when the
daemon stops, with an `end` event carrying `"daemon_stopping": true` and the job's state then (a
follower reconnects with Last-Event-ID once the daemon is back), so a shutdown never waits on followers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from edged.jobs import records
from edged.jobs.states import FINAL_STATES
from edged.store.db import open_db

POLL_S = 0.25
KEEPALIVE_S = 15.0  # a comment line now and then keeps proxies from closing an idle stream


def format_event(event: dict[str, Any]) -> str:
    data = {"id": event["id"], "ts": event["ts"], "type": event["type"], "stage": event["stage"], **event["data"]}
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(data)}\n\n"


def format_end(job: dict[str, Any], daemon_stopping: bool) -> str:
    end = {"state": job["state"], "error": job["error"], "progress": job["progress"]}
    if daemon_stopping:
        end.update(daemon_stopping=True, reason="the daemon is stopping; reconnect with Last-Event-ID to follow "
                   "the job when it is back (a running job resumes then)")
    return f"event: end\ndata: {json.dumps(end)}\n\n"


async def job_event_stream(db_path: Path, job_id: str, stopping: threading.Event,
                           last_event_id: int = 0) -> AsyncIterator[str]:
    db = open_db(db_path)
    try:
        last_sent = time.monotonic()
        while True:
            # The state is read before the events: a final state and its event commit together, so
            # once the state is final, this read of the events holds all of them.
            job = records.get_job(db, job_id)
            events = records.events_after(db, job_id, last_event_id)
            for event in events:
                yield format_event(event)
                last_event_id = event["id"]
            if events:
                last_sent = time.monotonic()
                continue  # there may be more than one page
            if job["state"] in FINAL_STATES or stopping.is_set():
                yield format_end(job, daemon_stopping=job["state"] not in FINAL_STATES)
                return
            if time.monotonic() - last_sent >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            await asyncio.sleep(POLL_S)
    finally:
        db.close()
