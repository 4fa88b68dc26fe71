"""``StopOnSignal``: SIGTERM / Ctrl-C become a flag checked at a step boundary (the end-to-end
stop and resume through the CLI is in ``test_train_cli.py``)."""

import os
import signal

import pytest

from pareco.training.stop import StopOnSignal, Stopped


def test_a_signal_sets_the_flag_and_the_check_saves_then_stops():
    saved = []
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stop:
        stop.check(3, lambda: saved.append(3))  # nothing yet: carry on
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM and saved == []
        with pytest.raises(Stopped, match="stopped by SIGTERM after step 4; the state is saved"):
            stop.check(4, lambda: saved.append(4))
        assert saved == [4]
        with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_ignored_sigint_stays_ignored_and_disabled_installs_nothing():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopOnSignal():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        term = signal.getsignal(signal.SIGTERM)
        with StopOnSignal(enabled=False):
            assert signal.getsignal(signal.SIGTERM) is term
    finally:
        signal.signal(signal.SIGINT, previous)
