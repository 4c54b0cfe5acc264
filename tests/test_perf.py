"""squirrel.perf.gc_paused: the collector is off inside, back to its previous state after."""

import gc

import pytest

from squirrel.perf import gc_paused


@pytest.fixture
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_off_inside_and_on_after(collector_on):
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_back_on_after_an_exception(collector_on):
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_nested_and_as_decorator(collector_on):
    @gc_paused()
    def inner() -> bool:
        return gc.isenabled()

    with gc_paused():
        assert inner() is False
        assert not gc.isenabled()  # the inner block did not switch it back on
    assert gc.isenabled()


def test_leaves_a_disabled_collector_disabled(collector_on):
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()
    gc.enable()
