"""Backups of the embedded database: WAL archived continuously, base backups, point-in-time
restore and verification, all with PostgreSQL's own tools (ADR 0039)."""
