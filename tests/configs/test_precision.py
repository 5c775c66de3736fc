"""precision=auto: bf16 autocast only where the hardware runs it natively."""

from __future__ import annotations

import logging

import pytest

import configs.precision as precision
from configs.constants import PRECISIONS
from configs.precision import resolve_precision


@pytest.mark.parametrize("native,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "native_bf16", lambda device_type: native)
    assert resolve_precision("auto") == expected


def test_explicit_bf16_is_kept_and_warned_about_where_emulated(monkeypatch, caplog):
    monkeypatch.setattr(precision, "native_bf16", lambda device_type: False)
    with caplog.at_level(logging.WARNING, logger="configs.precision"):
        assert resolve_precision("bf16") == "bf16"
        assert resolve_precision("fp32") == "fp32"
    assert len(caplog.records) == 1 and "without native bf16 kernels" in caplog.records[0].getMessage()


def test_this_machine_answers_and_bad_values_are_refused():
    assert isinstance(precision.native_bf16("cpu"), bool)
    assert resolve_precision("auto") in PRECISIONS[1:]
    with pytest.raises(ValueError, match="'precision'.*fp16"):
        resolve_precision("fp16")
