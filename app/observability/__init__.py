"""What an operator sees of the service: structured logs, metrics, traces, error reports and the
health of its dependencies (issue 19). Below the domains, which report through it; above the
queue and the database, whose state it reports. The request and job context it attaches to all
of them is ``app.kit.context``, which code below it (the kit) fills in too."""
