"""LocalDaemon (edged.client.local_daemon), the demo's and `edged bench api`'s private `edged serve`: a
start that fails says why, with the end of the daemon's log. (Its start, use and stop are exercised by
`edged demo` in tests/cli/test_demo.py and by `edged bench api` in tests/bench.)"""

from __future__ import annotations

import httpx
import pytest

from edged.client import LocalDaemon
from edged.errors import Unavailable


def test_a_daemon_that_exits_while_starting_is_reported_with_its_log(tmp_path):
    daemon = LocalDaemon(tmp_path / "data", settings={"EDGED_MAX_UPLOAD_MB": "-1"})
    with pytest.raises(Unavailable) as failed, daemon:
        raise AssertionError("a daemon with an invalid setting started")
    message = failed.value.message
    assert message.startswith("edged serve exited with status 2 while starting; its log")
    assert str(daemon.log_path) in message and "EDGED_MAX_UPLOAD_MB" in message  # the daemon's own words
    assert daemon.stop() is None  # nothing left running
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{daemon.url}/healthz", timeout=2.0)
