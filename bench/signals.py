"""SIGINT and SIGTERM turned into an exception raised only where a run can stop safely."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType

_SignalHandler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; what was measured so far is kept.

    A KeyboardInterrupt, not an Exception: the many `except Exception` of runtime and
    client code must not swallow it.
    """


class Signals:
    """SIGINT/SIGTERM -> Interrupted, raised only at safe points.

    The handler raises at once only inside interruptible() (waiting for a workload,
    building the image); elsewhere it records the signal and check() raises it at the
    next step boundary. So a runtime is never cut off half-way through creating or
    removing a container, which is what would leave one behind. Signals after the first
    are ignored: the clean-up is already under way (SIGKILL still ends bench; `bench gc`
    then removes what is left).
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._raised = False
        self._interruptible = False
        self._previous: dict[signal.Signals, _SignalHandler] = {}

    def __enter__(self) -> Signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            if self._interruptible:
                self.check()

    def check(self) -> None:
        """Raise Interrupted once if a signal arrived."""
        if self.received is not None and not self._raised:
            self._raised = True
            raise Interrupted(f"received {self.received}")

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A region the signal may interrupt at any point (its code cleans up on any error)."""
        self.check()
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False
