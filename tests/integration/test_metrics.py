"""Prometheus metrics (ADR 0023): a scrape after real traffic counts what was sent, by route
template and status class; /metrics is never public; `vetify serve --workers 2` sums both."""

from __future__ import annotations

import signal
import socket
import uuid

import httpx
import pytest
from sqlalchemy import text

from app import cli
from app.auth.mails import MAIL_VERIFICATION
from app.db.embedded import free_port
from app.kit import server
from app.observability.scrape import DatabaseFigures
from app.queue import enqueue
from tests.harness.api import assert_problem
from tests.harness.live import Vetify, until, vetify_env
from tests.harness.plugin import asgi_client
from tests.harness.scrapes import samples, scrape, value

TOKEN = "metrics-scraper-token-for-tests"


async def test_a_scrape_counts_the_requests_sent_by_route_template_and_status_class(configured_app):
    async with configured_app(metrics_token=TOKEN) as app, asgi_client(app) as http:
        before = await scrape(http, TOKEN)
        for _ in range(3):
            assert (await http.get("/health/live")).status_code == 200
        for n in range(4):  # four paths, one label: a scanner's URLs are not series
            assert (await http.get(f"/wp-admin/{n}.php")).status_code == 404
        pets = [f"/api/v1/pets/{uuid.uuid4()}" for _ in range(2)]
        for path in pets:
            assert (await http.get(path)).status_code == 401
        after = await scrape(http, TOKEN)

    def sent(route: str, status_class: str, method: str = "GET") -> float:
        name = "vetify_http_requests_total"
        labels = {"method": method, "route": route, "status_class": status_class}
        return value(after, name, **labels) - value(before, name, **labels)

    assert sent("/health/live", "2xx") == 3
    assert sent("unmatched", "4xx") == 4
    assert sent("/api/v1/pets/{pet_id}", "4xx") == 2
    assert not any("wp-admin" in str(labels) or pets[0] in str(labels) for _, labels in after)
    count = "vetify_http_request_duration_seconds_count"
    live = {"method": "GET", "route": "/health/live"}
    assert value(after, count, **live) - value(before, count, **live) == 3
    # The 5 ms bucket and the 500 ms one exist: the histogram resolves what the SLO asks.
    buckets = {dict(labels).get("le") for name, labels in after if name.endswith("_bucket")}
    assert {"0.005", "0.5"} <= buckets
    assert [v for (name, _), v in after.items() if name == "vetify_build_info"] == [1]


async def test_the_pool_gauges_follow_the_connections_in_use(configured_app, settings):
    async with configured_app(metrics_token=TOKEN) as app, asgi_client(app) as http:
        idle = await scrape(http, TOKEN)
        async with app.state.engine.connect() as held:
            await held.exec_driver_sql("SELECT 1")
            busy = await scrape(http, TOKEN)
    assert value(idle, "vetify_db_pool_size") == settings.db_pool_size
    assert (
        value(busy, "vetify_db_pool_checked_out") == value(idle, "vetify_db_pool_checked_out") + 1
    )


async def test_the_queue_is_read_from_the_database_when_scraped(configured_app):
    async with configured_app(metrics_token=TOKEN) as app, asgi_client(app) as http:
        before = await scrape(http, TOKEN)
        async with app.state.sessions() as session, session.begin():
            await enqueue(session, MAIL_VERIFICATION, user_id=str(uuid.uuid4()))
        after = await scrape(http, TOKEN)
    assert value(after, "vetify_metrics_database_up") == 1
    todo = {"queue": "mail", "status": "todo"}
    assert value(after, "vetify_jobs", **todo) == value(before, "vetify_jobs", **todo) + 1
    assert value(after, "vetify_jobs_oldest_due_age_seconds", queue="mail") >= 0
    assert ("vetify_jobs_oldest_due_age_seconds", frozenset({("queue", "mail")})) in after


async def test_the_job_workers_heartbeat_is_scraped_once_one_has_registered(configured_app):
    async with configured_app(metrics_token=TOKEN) as app, asgi_client(app) as http:
        name = "vetify_worker_heartbeat_timestamp_seconds"
        assert (name, frozenset()) not in await scrape(http, TOKEN)  # no worker: no time, not 0
        async with app.state.engine.begin() as connection:
            # What procrastinate's worker does as it starts (and then every few seconds).
            await connection.execute(text("SELECT procrastinate_register_worker_v1()"))
            now = await connection.scalar(text("SELECT extract(epoch FROM now())"))
        seen = value(await scrape(http, TOKEN), name)
    assert abs(seen - float(now)) < 60


async def test_without_a_token_or_port_there_is_no_metrics_route(configured_app):
    async with configured_app(metrics_token=None) as app, asgi_client(app) as http:
        assert_problem(await http.get("/metrics"), 404, "not-found")


async def test_metrics_refuse_a_missing_or_wrong_token(configured_app):
    async with configured_app(metrics_token=TOKEN) as app, asgi_client(app) as http:
        missing = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})
    for refused in (missing, wrong):
        assert_problem(refused, 401, "unauthenticated")
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert "vetify_http_requests_total" not in refused.text


def test_two_workers_are_summed_on_the_metrics_port(tmp_path, redis_server) -> None:
    """`vetify serve --workers 2 ` with VETIFY_METRICS_PORT: the supervisor's listener sums the
    workers' counts (both pools are in the pool size), and the API's port has no /metrics."""
    port, metrics_port = free_port(), free_port()
    served = Vetify(
        ["serve", "--port", str(port), "--workers", "2"],
        vetify_env(
            VETIFY_DATA_DIR=str(tmp_path / "state"),
            VETIFY_REDIS_URL=redis_server.url,
            VETIFY_METRICS_PORT=str(metrics_port),
            VETIFY_DB_POOL_SIZE="3",
        ),
    )
    try:
        served.start().wait_until_ready(f"http://127.0.0.1:{port}", within=120)
        until("both workers serving", lambda: served.output.count("serving on http://") == 2)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(20):
                assert http.get("/health/live", headers={"Connection": "close"}).is_success
            api_metrics = http.get("/metrics")
        scraped = samples(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text)
        served.send(signal.SIGTERM)
        done = served.exit(within=60)
    finally:
        served.stop()
    assert api_metrics.status_code == 404
    live = {"method": "GET", "route": "/health/live", "status_class": "2xx"}
    assert value(scraped, "vetify_http_requests_total", **live) == 20
    assert value(scraped, "vetify_db_pool_size") == 2 * 3
    assert value(scraped, "vetify_metrics_database_up") == 1
    assert done.code == 0, served.output[-4000:]
    assert "Traceback" not in served.output


def test_a_scrape_with_the_database_away_says_so_and_still_answers() -> None:
    # A port nothing listens on: the connection is refused.
    figures = DatabaseFigures(f"postgresql://vetify:unused@127.0.0.1:{free_port()}/vetify")
    families = {family.name: family for family in figures.collect()}
    assert list(families) == ["vetify_metrics_database_up"]  # no stale queue or Stripe figures
    assert [s.value for s in families["vetify_metrics_database_up"].samples] == [0]


def test_a_metrics_port_in_use_is_refused_in_one_line(settings) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        asked = settings.model_copy(update={"metrics_port": port, "metrics_host": "127.0.0.1"})
        with pytest.raises(server.PortUnavailable) as refused, cli.metrics_listener(asked):
            pass
    assert str(refused.value) == (
        f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    )
