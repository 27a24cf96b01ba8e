"""The embedded database's backups as Prometheus sees them, read from the repository when
scraped (ADR 0039): alerts fire on a base backup too old, a verification failed or too old."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from app.backup.repository import Repository

log = logging.getLogger("vetify.metrics")


class BackupFigures:
    """A collector of the repository's state: files, no database."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    def describe(self) -> list[Metric]:
        return []  # nothing read when registered: the repository may not exist yet

    def collect(self) -> Iterator[Metric]:
        try:
            families = list(self._families())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A scrape answers with what it has: the alerts on these figures see them stale.
            log.warning("metrics: the backup repository's figures are missing (%r)", exc)
            return iter(())
        return iter(families)

    def _families(self) -> Iterator[GaugeMetricFamily]:
        backups = self.repository.backups()
        if backups:
            yield GaugeMetricFamily(
                "vetify_backup_last_success_timestamp_seconds",
                "Unix time the newest base backup finished (absent: none taken).",
                value=backups[-1].finished.timestamp(),
            )
        archived = self.repository.last_archived()
        if archived is not None:
            yield GaugeMetricFamily(
                "vetify_backup_wal_last_archived_timestamp_seconds",
                "Unix time the newest WAL segment reached the archive.",
                value=archived.timestamp(),
            )
        verified = self.repository.last_verification()
        if verified is not None:
            yield GaugeMetricFamily(
                "vetify_backup_last_verify_timestamp_seconds",
                "Unix time `vetify backup verify` last ran.",
                value=verified.at.timestamp(),
            )
            yield GaugeMetricFamily(
                "vetify_backup_last_verify_success",
                "1 if the last `vetify backup verify` restored and checked the latest backup.",
                value=float(verified.ok),
            )
