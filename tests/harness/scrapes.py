"""Reading a Prometheus scrape of the service in tests: every sample as (name, labels) -> value,
parsed by prometheus-client's own parser (what a Prometheus server would read)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Scraped = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Scraped:
    """Every sample of a scrape: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: Scraped, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels``; 0 when the scrape has none."""
    return scraped.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: httpx.AsyncClient, token: str) -> Scraped:
    """``GET /metrics`` with the scraper's bearer token; it must answer 200 in the text
    format."""
    response = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)
