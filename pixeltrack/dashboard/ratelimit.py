"""A bounded sliding-window counter for failed log-ins (per address and per e-mail)."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds for each key.

    Memory is bounded: past ``max_keys`` the least recently used key is
    dropped, so a flood of made-up e-mails cannot grow it without end.
    """

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.max_keys, self.clock = limit, window, max_keys, clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            return deque()
        cutoff = self.clock() - self.window
        while events and events[0] <= cutoff:
            events.popleft()
        return events

    def blocked(self, *keys: str) -> bool:
        """True when any key has used up its events in the window."""
        return any(len(self._recent(k)) >= self.limit for k in keys)

    def add(self, *keys: str) -> None:
        """Count one event against each key."""
        now = self.clock()
        for key in keys:
            events = self._recent(key)
            events.append(now)
            self._events[key] = events
            self._events.move_to_end(key)
        while len(self._events) > self.max_keys:
            self._events.popitem(last=False)

    def clear(self, key: str) -> None:
        """Forget a key's events (a successful log-in clears its e-mail)."""
        self._events.pop(key, None)
