"""The fault-point switch the fault-injection suite (tests/faults) arms with LMADAPT_FAULTS."""

from __future__ import annotations

import errno

import pytest

from lmadapt import faults


def test_spec_arms_single_occurrences_and_ranges():
    plan = faults.parse("checkpoint/before-rename@2=kill, step@5-7=inf-grad,step@3=nan-loss")
    assert plan == {
        "checkpoint/before-rename": {2: "kill"},
        "step": {5: "inf-grad", 6: "inf-grad", 7: "inf-grad", 3: "nan-loss"},
    }
    with pytest.raises(ValueError, match="POINT@N=ACTION"):
        faults.parse("step=kill")


def test_points_count_their_passes_or_take_the_callers_number(monkeypatch):
    monkeypatch.setattr(faults, "_PLAN", faults.parse("token-cache/staged@2=enospc,step@4=nan-loss"))
    monkeypatch.setattr(faults, "_PASSED", faults.Counter())
    assert faults.fault("token-cache/staged") is None  # first pass
    with pytest.raises(OSError) as excinfo:
        faults.fault("token-cache/staged")
    assert excinfo.value.errno == errno.ENOSPC
    assert [faults.fault("step", n) for n in (3, 4, 4)] == [None, "nan-loss", "nan-loss"]
    assert faults.fault("checkpoint/staged") is None


def test_unarmed_points_do_nothing(monkeypatch):
    monkeypatch.setattr(faults, "_PLAN", {})
    assert faults.fault("checkpoint/before-rename") is None and not faults._PASSED
