"""What an operator sees during a fault (issue 19): while a dependency is down or hangs, the
dependency report (``/health/dependencies``) names it within the probe's bound, the readiness
probe says what it should, and the metrics show the failed requests; once it is back, all of
them recover, without a restart.

The wired server (tests/chaos/conftest.py) reaches its database and every other dependency
through a fault proxy: ``refuse`` resets each new connection (a service down), ``hold`` accepts
and never answers (a hung peer, a partition).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.chaos.conftest import DEPENDENCIES, SLACK, Clinic, Outcome, Wired, smoke
from tests.harness import canary
from tests.harness.proxy import FaultProxy
from tests.harness.scrapes import Scraped, scrape

OPERATOR = {"Authorization": f"Bearer {canary.OPERATOR_TOKEN}"}
SEEN_WITHIN = 20.0
"""Seconds for a fault to show in the report, and for its end to: a probe's bound, a pooled
connection found broken, and Stripe's cached answer (1 s on the wired server) to expire."""


@pytest.fixture(autouse=True)
def _every_scenario_restores_faults(wired: Wired) -> None:
    """Overrides the chaos stage's: these scenarios fault the wired server, which ``wired``
    puts right (and checks ready, the same process) after each."""


CASES = [(name, "refuse") for name in ("database", *DEPENDENCIES)] + [
    (name, "hold") for name in (("database",) if smoke() else ("database", *DEPENDENCIES))
]


def _proxy(wired: Wired, dependency: str) -> FaultProxy:
    proxy = wired.live.db_proxy if dependency == "database" else wired.proxies[dependency]
    assert proxy is not None
    return proxy


async def _report(http: httpx.AsyncClient, bound: float) -> dict[str, Any]:
    """The dependency report, which must answer within ``bound`` whatever hangs."""
    started = time.monotonic()
    response = await http.get("/health/dependencies", headers=OPERATOR)
    took = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert took < bound, f"the report took {took:.1f}s, over {bound}s"
    report: dict[str, Any] = response.json()
    return report


async def _until(
    http: httpx.AsyncClient, dependency: str, status: str, bound: float
) -> tuple[dict[str, Any], float]:
    """The report once ``dependency`` is ``status``, and the seconds it took to say so."""
    started = time.monotonic()
    while True:
        report = await _report(http, bound)
        if report["dependencies"][dependency]["status"] == status:
            return report, time.monotonic() - started
        assert time.monotonic() - started < SEEN_WITHIN, (
            f"{dependency} not {status} within {SEEN_WITHIN}s: {report['dependencies']}"
        )
        await asyncio.sleep(0.2)


def _failed_requests(scraped: Scraped) -> float:
    return sum(
        value
        for (name, labels), value in scraped.items()
        if name == "vetify_http_requests_total" and ("status_class", "5xx") in labels
    )


@pytest.mark.parametrize(("dependency", "fault"), CASES)
async def test_a_dependency_down_or_hung_shows_in_the_report_and_metrics_and_recovers(
    wired: Wired, clinic: Clinic, dependency: str, fault: str, chaos: Outcome
) -> None:
    ready_within = float(wired.live.env().get("VETIFY_READY_TIMEOUT_SECONDS", "3"))
    bound = ready_within + SLACK
    proxy = _proxy(wired, dependency)
    async with httpx.AsyncClient(base_url=wired.url, timeout=30) as http:
        healthy, _ = await _until(http, dependency, "ok", bound)
        before = await scrape(http, canary.METRICS_TOKEN)
        setattr(proxy, fault, True)
        proxy.reset_all()  # pooled connections too: the fault holds for every new attempt
        try:
            report, seen_after = await _until(http, dependency, "down", bound)
            ready = await http.get("/health/ready")
            data = await clinic.http.get("/api/v1/customers")
            during = await scrape(http, canary.METRICS_TOKEN)
        finally:
            proxy.heal()
            proxy.reset_all()  # held connections end; the next ones are healthy
        recovered, back_after = await _until(http, dependency, "ok", bound)
        after = await scrape(http, canary.METRICS_TOKEN)
        ready_after = await http.get("/health/ready")
    chaos.details.update(
        dependency=dependency,
        fault=fault,
        seen_down_seconds=round(seen_after, 2),
        recovered_seconds=round(back_after, 2),
        report_status=report["status"],
        detail=report["dependencies"][dependency]["detail"],
        ready=ready.status_code,
    )
    assert healthy["dependencies"][dependency]["status"] == "ok"
    # Never "ok" while one is down; "down" overall when it is required (another required one,
    # the job workers' heartbeat, may still be catching up after an earlier scenario's outage).
    required = report["dependencies"][dependency]["required"]
    assert report["status"] in (("down",) if required else ("degraded", "down"))
    if dependency == "database":
        # Not ready; the request that needed it answered 503, counted as such; the scrape
        # itself still answers, saying the database's figures are missing.
        assert ready.status_code == 503, ready.text
        assert data.status_code == 503, data.text
        assert _failed_requests(during) > _failed_requests(before)
        assert during[("vetify_metrics_database_up", frozenset())] == 0
        assert after[("vetify_metrics_database_up", frozenset())] == 1
    else:
        # Optional for serving: still ready (Redis reported degraded), no 5xx for a read.
        assert ready.status_code == 200, ready.text
        assert data.status_code == 200, data.text
        if dependency == "redis":
            assert ready.json()["status"] == "degraded"
    assert recovered["dependencies"][dependency]["status"] == "ok"
    assert ready_after.status_code == 200, ready_after.text
