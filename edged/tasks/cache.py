"""The delta cache: task deltas placed in their base's flat buffers on the serving device, least recently used
evicted past a byte budget, with the hit, miss and prefetch counts that tell whether it and the prefetcher earn
their memory."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from edged.tasks.flat import PlacedDelta


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    prefetched: int = 0  # deltas loaded ahead of a switch
    prefetch_used: int = 0  # of those, switched to before they were evicted


class DeltaCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.stats = CacheStats()
        self._entries: OrderedDict[str, tuple[PlacedDelta, bool]] = OrderedDict()  # task -> (delta, prefetched, unused)
        self.bytes = 0

    def get(self, task_id: str) -> tuple[Optional[PlacedDelta], str]:
        """(the delta or None, how it was found: "hot", "prefetched" or "cold")."""
        entry = self._entries.get(task_id)
        if entry is None:
            self.stats.misses += 1
            return None, "cold"
        delta, prefetched = entry
        self._entries[task_id] = (delta, False)
        self._entries.move_to_end(task_id)
        self.stats.hits += 1
        if prefetched:
            self.stats.prefetch_used += 1
            return delta, "prefetched"
        return delta, "hot"

    def put(self, task_id: str, delta: PlacedDelta, prefetched: bool = False) -> None:
        self.drop(task_id)
        self._entries[task_id] = (delta, prefetched)
        self.bytes += delta.nbytes
        self.stats.prefetched += int(prefetched)
        while self.bytes > self.budget_bytes and len(self._entries) > 1:
            _, (evicted, _) = self._entries.popitem(last=False)
            self.bytes -= evicted.nbytes

    def drop(self, task_id: str) -> None:
        entry = self._entries.pop(task_id, None)
        if entry is not None:
            self.bytes -= entry[0].nbytes

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)
