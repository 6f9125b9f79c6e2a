"""MLX_INTERP_SWITCH_INTERVAL: the GIL hand-over interval the server sets at start."""

import sys

import pytest

from mlx_interp.gateway.cli import set_switch_interval


@pytest.fixture
def restore_interval():
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_a_valid_interval_is_applied(restore_interval):
    set_switch_interval("0.0005")
    assert sys.getswitchinterval() == pytest.approx(0.0005)


@pytest.mark.parametrize("value", ["fast", "0", "-1", "2", "nan"])
def test_a_bad_interval_is_one_line_and_changes_nothing(restore_interval, capsys, value):
    before = sys.getswitchinterval()
    set_switch_interval(value)
    assert sys.getswitchinterval() == before
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MLX_INTERP_SWITCH_INTERVAL" in err


def test_unset_changes_nothing(restore_interval):
    before = sys.getswitchinterval()
    set_switch_interval(None)
    set_switch_interval("")
    assert sys.getswitchinterval() == before
