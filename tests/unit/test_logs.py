"""Query strings in logs: every value redacted but a page's size and cursor (issue 16, #12)."""

from __future__ import annotations

import logging
import logging.config

import pytest
import uvicorn.config

from app.kit.logs import RedactQueries, redact_query, uvicorn_log_config


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/api/v1/customers?q=Silva&limit=5", "/api/v1/customers?q=[redacted]&limit=5"),
        ("/api/v1/customers?q=ana%40example.com", "/api/v1/customers?q=[redacted]"),
        ("/api/v1/pets?cursor=abc_-1&q=Rex", "/api/v1/pets?cursor=abc_-1&q=[redacted]"),
        ("/api/v1/appointments?day=2030-01-07", "/api/v1/appointments?day=[redacted]"),
        ("/x?ana.silva%40example.com", "/x?[redacted]"),  # a value alone
        ("/x?ana%40example.com=1&=2", "/x?[redacted]=[redacted]&[redacted]=[redacted]"),
        ("/x?q=&&limit=", "/x?q=[redacted]&&limit="),
        ("/health/ready", "/health/ready"),
        ("/x?", "/x?"),
        ("/x?q=who?why", "/x?q=[redacted]"),  # a "?" in the query is the query's
        ("/x?q=a=b", "/x?q=[redacted]"),  # the first "=" ends the name
    ],
)
def test_query_values_are_redacted_but_a_pages_size_and_cursor(target: str, logged: str) -> None:
    assert redact_query(target) == logged


def test_the_filter_redacts_the_target_of_an_access_record_and_nothing_else() -> None:
    args = ("127.0.0.1:5000", "GET", "/api/v1/customers?q=Silva", "1.1", 200)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None
    )
    assert RedactQueries().filter(record)
    assert (
        record.getMessage() == '127.0.0.1:5000 - "GET /api/v1/customers?q=[redacted] HTTP/1.1" 200'
    )


def test_uvicorns_access_log_as_configured_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    config = uvicorn_log_config()
    assert uvicorn.config.LOGGING_CONFIG["loggers"]["uvicorn.access"].get("filters") is None
    logging.config.dictConfig(config)
    access = logging.getLogger("uvicorn.access")
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    access.addHandler(caplog.handler)  # it does not propagate to the root
    try:
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/x?q=Silva", "1.1", 200)
    finally:
        access.removeHandler(caplog.handler)
    assert caplog.messages == ['127.0.0.1:5000 - "GET /x?q=[redacted] HTTP/1.1" 200']
