"""Data keys: each scope's (a clinic's, or the platform's) keys for field-level encryption,
wrapped by the key-encryption keys (ADR 0028)."""
