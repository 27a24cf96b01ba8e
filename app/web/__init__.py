"""The clinic's web app: server-rendered pages over the same services as the JSON API (ADR 0043).

Nothing imports this package but ``app.main``; it imports the domains' services, as their own
routes do, and adds no business rule of its own.
"""
