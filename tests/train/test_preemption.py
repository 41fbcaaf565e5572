from __future__ import annotations

import os
import signal
import time

import pytest

from lmadapt.train.preemption import StopRequest


def test_the_first_signal_is_a_request_and_the_grace_period_ends_the_wait():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), StopRequest(grace_s=0.2) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.time() + 10
        while time.time() < deadline:  # a step that never finishes: the grace timer must end it
            assert stop.requested
            time.sleep(0.01)
    assert time.time() < deadline
    assert signal.getsignal(signal.SIGTERM) == before


def test_without_a_signal_nothing_is_requested():
    with StopRequest(grace_s=0.05) as stop:
        time.sleep(0.1)
    assert not stop.requested
