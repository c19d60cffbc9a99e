"""Line protocol and query guards: pure logic, no server."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vnettracer.agent.record import EVENT
from vnettracer.store import lineproto
from vnettracer.store.client import QueryRefused, check_bounded


def test_event_lines_are_exact_and_escaped():
    ev = np.zeros(2, EVENT)
    ev["ts_ns"] = [100, 200]
    ev["tracepoint"] = [1, 2]
    ev["packet_id"] = [2**64 - 1, 7]  # u64 ids travel as the int64 with the same bits
    ev["len"] = [60, 1500]
    ev["flags"] = [1, 6]
    ev["flow_hash"] = [3, 2**63]
    out = lineproto.events(ev, "run 1", "host,a", {1: "h1=eth0 eg"}, 10**18).decode()
    assert out == ("vnt_event,host=host\\,a,run=run\\ 1,tracepoint=h1\\=eth0\\ eg pid=-1i,flow=3i,len=60i,flags=1i "
                   "1000000000000000100\n"
                   "vnt_event,host=host\\,a,run=run\\ 1,tracepoint=2 pid=7i,flow=-9223372036854775808i,len=1500i,flags=6i "
                   "1000000000000000200\n")


def test_ties_within_a_tracepoint_move_apart_deterministically():
    key = np.array([1, 1, 1, 2, 2, 1])
    ts = np.array([5, 5, 6, 5, 5, 9])
    out = lineproto.unique_times(key, ts)
    assert out.tolist() == [5, 6, 7, 5, 6, 9]
    assert lineproto.unique_times(key, ts).tolist() == out.tolist()
    untied = np.array([3, 1, 2])
    assert lineproto.unique_times(np.array([1, 1, 1]), untied) is untied


def test_segment_and_agent_lines():
    df = pd.DataFrame({"path": ["request"], "segment": ["a->b"], "second": [10**18], "count": [3],
                       "p50_us": [12.5], "p99_us": [40.0], "max_us": [41.25], "lost": [0]})
    assert lineproto.segments(df, "r") == (b"vnt_segment,path=request,run=r,segment=a->b count=3i,p50_us=12.5,"
                                           b"p99_us=40,max_us=41.25,lost=0i,clock_corrected=true 1000000000000000000\n")
    two = pd.concat([df, df.assign(segment="b->c", clock_corrected=False)]).assign(clock_corrected=[True, False])
    assert lineproto.segments(two, "r").splitlines()[1] == (b"vnt_segment,path=request,run=r,segment=b->c count=3i,"
                                                            b"p50_us=12.5,p99_us=40,max_us=41.25,lost=0i,"
                                                            b"clock_corrected=false 1000000000000000000")
    stats = {"host": "h1", "cpu_s": 0.5, "spooled_events": 9,
             "tracepoints": {"a": {"emitted": 4, "dropped": 1, "parse_fail": 0}, "b": {"emitted": 5}}}
    assert lineproto.agent(stats, "r", 7) == (b"vnt_agent,host=h1,run=r events=9i,dropped=1i,parse_fail=0i,"
                                              b"cpu_s=0.5,spooled=9i 7\n")


@pytest.mark.parametrize("q", [
    "SELECT * FROM vnt_event",
    "select count(pid) from vnt_event where time > now() - 1h group by time(1s)",
    "SELECT * FROM vnt_event WHERE time < 5",
    "SHOW DATABASES; SELECT * FROM x WHERE run = 'time > 1'",
])
def test_unbounded_selects_are_refused(q):
    with pytest.raises(QueryRefused):
        check_bounded(q)


def test_bounded_selects_and_other_statements_pass():
    check_bounded("SELECT count(pid) FROM vnt_event WHERE time >= 1 AND time < 2 GROUP BY tracepoint")
    check_bounded("SHOW DATABASES")
