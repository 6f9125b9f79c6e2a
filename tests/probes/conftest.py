import pytest

from probe_factory import build_probe


@pytest.fixture
def make_probe():
    return build_probe
