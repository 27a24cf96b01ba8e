"""The benchmark's reading of wrk's report (tests/load/bench.py): the numbers it prints are
wrk's, units converted, failures counted."""

from __future__ import annotations

import pytest

from tests.load.bench import parse_wrk

REPORT = """Running 3s test @ http://127.0.0.1:56717/api/v1/pets?limit=20
  2 threads and 20 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    21.76ms   12.17ms   1.97s    66.67%
    Req/Sec   411.86     27.38   500.00     71.43%
  Latency Distribution
     50%  850.00us
     75%    1.80ms
     90%   19.97ms
     99%    1.21s
  2471 requests in 3.06s, 78.65KB read
  Socket errors: connect 1, read 2, write 0, timeout 4
  Non-2xx or 3xx responses: 30
Requests/sec:    807.52
Transfer/sec:     25.73KB
"""


def test_rate_percentiles_and_failures_are_read_in_milliseconds() -> None:
    assert parse_wrk(REPORT) == {
        "requests_per_second": 807.52,
        "p50_ms": pytest.approx(0.85),
        "p99_ms": 1210.0,
        "requests": 2471,
        "failed": 37,
    }


def test_a_clean_run_has_no_failures() -> None:
    clean = REPORT.replace("  Socket errors: connect 1, read 2, write 0, timeout 4\n", "")
    assert parse_wrk(clean.replace("  Non-2xx or 3xx responses: 30\n", ""))["failed"] == 0


def test_output_that_is_not_a_report_is_refused_not_read_as_zero() -> None:
    with pytest.raises(ValueError, match="wrk"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")
    with pytest.raises(ValueError, match="99%"):
        parse_wrk(REPORT.replace("     99%    1.21s\n", ""))
