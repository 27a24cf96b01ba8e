"""A client's data-protection rights (GDPR): erasure, and the legal hold that stops it."""
