"""Stopping a training run on SIGTERM or Ctrl-C without losing the steps since the last checkpoint.

A job scheduler (Kubernetes, SLURM, a spot-instance reclaim) ends a process with SIGTERM; a user
with Ctrl-C (SIGINT). Either one, while :class:`StopOnSignal` is active, only sets a flag; the
training loop checks it after each step (:meth:`StopOnSignal.check`), and then the run writes its
resume state at that step boundary and raises :class:`Stopped`. ``--resume`` continues exactly
there. A second signal stops at once (``KeyboardInterrupt``), as the default handler would.

Only a single process installs the handlers: under torchrun the ranks could see a signal at
different steps and stop inside mismatched collectives, so they keep the default behaviour (the
state of the last checkpoint). A SIGINT that the process inherited as ignored (a background job of
a non-interactive shell) stays ignored.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class Stopped(Exception):
    """The run stopped on a signal after saving its resume state."""

    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = signum, step
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; the state "
                         f"is saved, continue with --resume")


class StopOnSignal:
    """Context manager: SIGTERM and SIGINT set :attr:`signum` instead of killing the process."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopOnSignal":
        if self.enabled:
            for s in self.SIGNALS:
                current = signal.getsignal(s)
                if s == signal.SIGINT and current is signal.SIG_IGN:
                    continue
                self._previous[s] = current
                signal.signal(s, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def check(self, step: int, save: Any) -> None:
        """After a step: if a signal came, ``save()`` and raise :class:`Stopped`."""
        if self.signum is not None:
            save()
            raise Stopped(self.signum, step)
