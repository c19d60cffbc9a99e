"""How often the agent looks at its ring: about once a batch at the rate it fills, never so seldom
that a burst could fill half the ring in between, never more often than poll_ms."""

from __future__ import annotations

import pytest

from vnettracer.agent.agent import TAKE_DELAY_S, TAKE_EVENTS, Pacer

RING_EVENTS = (32 << 20) // 32  # the default ring (ring_mb: 32)


def fill(p: Pacer, rate: float, seconds: float, t0: float = 0.0, produced: int = 0) -> tuple[float, float, int]:
    """The agent's loop at a steady rate, each batch read when it looks: (last wait, time, produced)."""
    now, wait = t0, 0.0
    pending = 0
    while now < t0 + seconds:
        if pending >= TAKE_EVENTS:
            pending = 0
        wait = p.wait(now, produced, pending)
        now += wait
        produced += int(rate * wait)
        pending += int(rate * wait)
    return wait, now, produced


def test_an_idle_ring_is_looked_at_seldom_but_within_the_burst_bound():
    p = Pacer(0.005, RING_EVENTS, ncpus=2)
    wait, _, _ = fill(p, 0, 2)
    assert wait == p.ceiling == pytest.approx(RING_EVENTS / 2 / (Pacer.BURST_PER_CPU * 2))
    assert 0.005 < wait <= TAKE_DELAY_S


def test_a_busy_ring_is_read_about_once_a_batch():
    p = Pacer(0.005, RING_EVENTS, ncpus=2)
    wait, _, _ = fill(p, 215_000, 2)  # one lab agent during traced iperf3
    assert wait == pytest.approx(TAKE_EVENTS / 215_000, rel=0.3)


def test_a_burst_after_quiet_is_followed_at_once():
    p = Pacer(0.005, RING_EVENTS, ncpus=2)
    _, now, produced = fill(p, 100, 1)
    assert p.wait(now + p.ceiling, produced + 4_000_000 * p.ceiling, 0) == 0.005


@pytest.mark.parametrize("ring_events,ncpus", [(1 << 15, 2), (RING_EVENTS, 512)])
def test_never_more_often_than_poll_ms(ring_events, ncpus):
    """A ring a burst fills faster than poll_ms is still looked at every poll_ms, as before."""
    p = Pacer(0.005, ring_events, ncpus)
    assert p.ceiling == 0.005
    assert fill(p, 0, 1)[0] == fill(Pacer(0.005, ring_events, ncpus), 10_000_000, 1)[0] == 0.005
