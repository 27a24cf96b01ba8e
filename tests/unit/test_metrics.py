"""The metrics' pure parts, and that every metric the dashboard and the alert rules query is one
the service exports (derived from its registry, not from a list kept by hand)."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from starlette.types import Message, Receive, Scope, Send

from app.backup.metrics import BackupFigures
from app.backup.repository import Repository
from app.kit.events import SecurityEvent, security_event
from app.kit.mail import Mail, Mailer
from app.observability import metrics
from app.observability.red import UNMATCHED, RequestMetrics, route_of, status_class
from app.observability.scrape import DatabaseFigures
from app.settings import ConfigurationError, Settings

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> set[str]:
    """Every sample name a scrape can hold: the instruments' and the database's figures."""
    metrics.instruments()
    families = [
        *metrics.REGISTRY.collect(),
        *DatabaseFigures(None).describe(),
        *BackupFigures(Repository(ROOT / "no-repository")).describe(),
    ]
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


def queried(expr: str) -> set[str]:
    """The service's metric names in a PromQL expression (recording rules' ``vetify:`` names
    and other exporters' metrics, such as the blackbox probe's, are not the service's)."""
    return set(re.findall(r"(?<![\w:])vetify_[a-z0-9_]+", expr))


def expressions() -> list[str]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    found = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((ROOT / "deploy/grafana/vetify.json").read_text())
    found += [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    return found


def test_every_metric_the_dashboard_and_alerts_query_is_exported() -> None:
    used = set().union(*(queried(expr) for expr in expressions()))
    assert used, "no expression found"
    assert used - exported() == set()
    # The check can fail: a name nobody exports is found.
    assert queried("rate(vetify_nothing_total[5m]) / vetify:ratio") - exported() == {
        "vetify_nothing_total"
    }


def _sections(doc: str) -> set[str]:
    """The anchors of a document's ``###`` sections, as GitHub makes them."""
    return {
        re.sub(r"[^a-z0-9 -]", "", line[4:].strip().lower()).replace(" ", "-")
        for line in (ROOT / "docs" / doc).read_text().splitlines()
        if line.startswith("### ")
    }


def test_every_alert_has_a_runbook_section_in_the_doc_it_links() -> None:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                annotations = rule["annotations"]
                assert annotations["summary"]
                assert annotations["description"]
                doc, anchor = annotations["runbook_url"].split("/docs/")[1].split("#")
                assert doc in ("operations.md", "runbook.md"), rule["alert"]
                assert anchor in _sections(doc), rule["alert"]


class _Route:
    def __init__(self, path_format: str) -> None:
        self.path_format = path_format


def test_the_route_label_is_the_template_or_one_fixed_value() -> None:
    assert route_of({"route": _Route("/api/v1/pets/{pet_id}")}) == "/api/v1/pets/{pet_id}"
    assert route_of({"path": "/wp-admin/x.php"}) == UNMATCHED


@pytest.mark.parametrize(
    ("status", "label"), [(200, "2xx"), (302, "3xx"), (404, "4xx"), (503, "5xx"), (None, "none")]
)
def test_status_classes(status: int | None, label: str) -> None:
    assert status_class(status) == label


def test_build_info_names_the_commit_of_the_setting_or_unknown() -> None:
    settings = Settings(env="test")
    assert metrics.build_info(settings).git_sha == "unknown"
    named = settings.model_copy(update={"git_sha": "ABC" + "1234"})
    assert metrics.build_info(named).git_sha == "abc" + "1234"
    with pytest.raises(ConfigurationError, match="VETIFY_GIT_SHA"):  # not any text
        Settings(env="test", git_sha="alice@example.com")


def test_build_info_version_is_the_installed_packages_or_unknown(monkeypatch) -> None:
    settings = Settings(env="test")
    assert metrics.build_info(settings).version == metadata.version("vetify")

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metrics.metadata, "version", not_installed)  # run from a checkout
    assert metrics.build_info(settings).version == "unknown"


def _count(name: str, **labels: str) -> float:
    metrics.instruments()
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_mail_without_a_relay_counts_as_unconfigured() -> None:
    before = _count("vetify_mail_total", outcome="unconfigured")
    mailer = Mailer(Settings(_env_file=None, smtp_host=None))  # type: ignore[call-arg]
    assert await metrics.send(mailer, Mail(("a@example.com",), "s", "t")) is False
    assert _count("vetify_mail_total", outcome="unconfigured") == before + 1


def test_security_events_are_counted_by_event_and_outcome_and_refusals_by_policy() -> None:
    metrics.count_security_events()
    metrics.count_security_events()  # once per process, however often asked
    events = "vetify_security_events_total"
    failed = {"event": "login_failed", "outcome": "refused"}
    limited = {"event": "rate_limited", "outcome": "refused"}
    before = (
        _count(events, **failed),
        _count(events, **limited),
        _count("vetify_rate_limit_rejections_total", policy="login"),
    )
    security_event(SecurityEvent.login_failed, outcome="refused")
    security_event(SecurityEvent.rate_limited, outcome="refused", policy="login")
    after = (
        _count(events, **failed),
        _count(events, **limited),
        _count("vetify_rate_limit_rejections_total", policy="login"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]


def test_no_label_can_carry_an_id() -> None:
    metrics.instruments()
    labels = {
        label
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
        for label in sample.labels
    }
    assert labels <= {
        "method",
        "route",
        "status_class",
        "policy",
        "verdict",
        "outcome",
        "event",
        "version",
        "git_sha",
        "le",
    }
    assert isinstance(metrics.REGISTRY, CollectorRegistry)


async def test_what_is_not_an_http_request_passes_through_uncounted() -> None:
    """The server's lifespan (and any websocket) goes to the app as it came, counted nowhere."""
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await send({"type": "lifespan.startup.complete"})

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    def answered() -> float:
        return sum(
            sample.value
            for family in metrics.REGISTRY.collect()
            if family.name in {"vetify_http_requests", "vetify_http_requests_in_flight"}
            for sample in family.samples
        )

    before = answered()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    await RequestMetrics(app)(scope, receive, send)

    assert seen == [scope]
    assert sent == [{"type": "lifespan.startup.complete"}]
    assert answered() == before
