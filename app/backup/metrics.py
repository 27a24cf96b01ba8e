"""The embedded database's backups as Prometheus sees them, read from the repository when
scraped (ADR 0039): alerts fire on a base backup too old, a verification failed or too old."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from app.backup.repository import Repository

log = logging.getLogger("vetify.metrics")

OLDEST = "vetify_backup_oldest_success_timestamp_seconds"
NEWEST = "vetify_backup_last_success_timestamp_seconds"
ARCHIVED = "vetify_backup_wal_last_archived_timestamp_seconds"
VERIFIED = "vetify_backup_last_verify_timestamp_seconds"
VERIFY_OK = "vetify_backup_last_verify_success"
PUSHED = "vetify_backup_offsite_last_push_timestamp_seconds"
PUSH_OK = "vetify_backup_offsite_last_push_success"
HELP = {
    OLDEST: "Unix time the oldest base backup kept finished: how far back a restore reaches.",
    NEWEST: "Unix time the newest base backup finished (absent: none taken).",
    ARCHIVED: "Unix time the newest WAL segment reached the archive.",
    VERIFIED: "Unix time `vetify backup verify` last ran.",
    VERIFY_OK: "1 if the last `vetify backup verify` restored and checked the latest backup.",
    PUSHED: "Unix time `vetify backup push` last ran (absent: no copy off the machine).",
    PUSH_OK: "1 if the last `vetify backup push` copied the repository off the machine.",
}


class BackupFigures:
    """A collector of the repository's state: files, no database."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    def describe(self) -> list[Metric]:
        """The families, without reading the repository (it may not exist yet)."""
        return [GaugeMetricFamily(name, text) for name, text in HELP.items()]

    def collect(self) -> Iterator[Metric]:
        try:
            values = self._values()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A scrape answers with what it has: the alerts on these figures see them stale.
            log.warning("metrics: the backup repository's figures are missing (%r)", exc)
            return iter(())
        return iter(GaugeMetricFamily(name, HELP[name], value=v) for name, v in values.items())

    def _values(self) -> dict[str, float]:
        values: dict[str, float] = {}
        backups = self.repository.backups()
        if backups:
            values[OLDEST] = backups[0].finished.timestamp()
            values[NEWEST] = backups[-1].finished.timestamp()
        archived = self.repository.last_archived()
        if archived is not None:
            values[ARCHIVED] = archived.timestamp()
        verified = self.repository.last_verification()
        if verified is not None:
            values[VERIFIED] = verified.at.timestamp()
            values[VERIFY_OK] = float(verified.ok)
        pushed = self.repository.last_push()
        if pushed is not None:
            values[PUSHED] = pushed.at.timestamp()
            values[PUSH_OK] = float(pushed.ok)
        return values
