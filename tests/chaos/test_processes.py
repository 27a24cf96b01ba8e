"""Processes killed outright (SIGKILL: the OOM killer, a node lost) while they work.

* The job worker killed in the middle of a job: the job is left ``doing``; the next worker to
  start retries it, and what the job does happens once in effect (one mail, whose link works).
* An API process killed under load with a second one on the same database: a client that
  retries on the second (checking first whether a write whose answer it lost was made) loses no
  acknowledged write and makes none twice; the second answers throughout.
* Two API processes, each with its credential cache (ADR 0019): a token revoked through one is
  refused by the other at its very next request.
* `vetify serve --workers 2`, one of its workers killed under load: the supervisor starts
  another, the service answers throughout (a client retrying a lost answer loses no write and
  makes none twice), and a SIGTERM stops the supervisor and every worker cleanly.

Each scenario starts processes of its own beside the stage's ``live_server``, on its database,
and stops them; the stage's server itself is never killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import psutil

from app.db.embedded import free_port
from tests.chaos.conftest import (
    REQUEST_TIMEOUT,
    Outcome,
    call,
    new_clinic,
    reset_jobs,
    reset_links,
    smoke,
    sql,
    wait_for,
)
from tests.harness import canary
from tests.harness.live import LiveServer, Vetify, until
from tests.harness.proxy import FaultProxy
from tests.harness.smtp import USERNAME as SMTP_USERNAME
from tests.harness.smtp import Relay

STARTED_WITHIN = 60.0
DONE_WITHIN = 30.0


# -- the job worker killed mid-job -----------------------------------------------------------


def test_the_job_worker_killed_mid_job_leaves_it_to_the_next_worker_which_does_it_once(
    live_server: LiveServer, smtp_server: Relay, chaos: Outcome
) -> None:
    """The worker is killed while its mail job waits on the relay (held by the proxy, so the
    killed try never delivered); the next worker retries the job, the mail goes out once.
    Workers of their own beside the stage's server (which runs no jobs), on its database."""
    kills = 1 if smoke() else 3
    proxy = FaultProxy(smtp_server.host, smtp_server.port).start()
    env = {
        **live_server.env(),
        "VETIFY_SMTP_HOST": "127.0.0.1",
        "VETIFY_SMTP_PORT": str(proxy.port),
        "VETIFY_SMTP_STARTTLS": "false",
        "VETIFY_SMTP_USERNAME": SMTP_USERNAME,
        "VETIFY_SMTP_PASSWORD": canary.SMTP_PASSWORD,
        "VETIFY_SMTP_TIMEOUT_SECONDS": "60",
    }
    workers: list[Vetify] = []
    killed: list[dict[str, Any]] = []
    superuser = live_server.database.superuser_url
    try:
        with _clinic_of(live_server) as email:
            asked = httpx.post(
                f"{live_server.url}/api/v1/auth/password-reset",
                json={"email": email},
                timeout=REQUEST_TIMEOUT,
            )
            assert asked.status_code == 202, asked.text
            proxy.hold = True
            for _ in range(kills):
                held = proxy.connections
                worker = Vetify(["worker"], env)
                workers.append(worker)
                worker.start()
                # The job is running, its mail held at the relay's door.
                until(
                    "the job sending",
                    lambda h=held: (
                        proxy.connections > h and _jobs(superuser, email)[0][0] == "doing"
                    ),
                    STARTED_WITHIN,
                )
                jobs = _jobs(superuser, email)
                worker.send(signal.SIGKILL)
                code = worker.exit(DONE_WITHIN).code
                proxy.reset_all()  # what the kill left half-open at the relay goes too
                killed.append({"jobs_when_killed": jobs, "exit_code": code})
                # As if procrastinate's stalled-worker timeout (30 s) had passed since.
                asyncio.run(
                    sql(
                        superuser,
                        "UPDATE procrastinate_workers"
                        " SET last_heartbeat = now() - interval '1 hour'",
                    )
                )
            proxy.heal()
            started = time.monotonic()
            last = Vetify(["worker"], env)
            workers.append(last)
            last.start()
            until("the mail job done", lambda: not _jobs(superuser, email), DONE_WITHIN)
            done_within = time.monotonic() - started
            links = reset_links(smtp_server, live_server.url, email)
            completed = httpx.post(
                f"{live_server.url}/api/v1/auth/password-reset/complete",
                json={"token": links[-1], "password": f"chaos {uuid.uuid4().hex}"},
                timeout=REQUEST_TIMEOUT,
            )
    finally:
        for worker in workers:
            worker.stop()
        proxy.stop()
    chaos.details.update(
        kills=killed, done_after_restart_seconds=round(done_within, 1), mails=len(links)
    )
    assert all(k["exit_code"] == -signal.SIGKILL for k in killed), killed
    assert all(k["jobs_when_killed"] == [("doing", i)] for i, k in enumerate(killed)), killed
    assert len(links) == 1, f"{len(links)} reset mails for one ask"
    assert completed.status_code == 204, completed.text


@contextlib.contextmanager
def _clinic_of(live: LiveServer) -> Iterator[str]:
    """A clinic signed up on ``live`` for the scenario: its owner's address."""

    async def made() -> str:
        async with new_clinic(live.url, live.database.superuser_url) as clinic:
            # Its sign-up's verification mail would be the first job: not this scenario's.
            await sql(
                live.database.superuser_url,
                "DELETE FROM procrastinate_jobs WHERE args->>'user_id' ="
                " (SELECT id::text FROM users WHERE email = $1)",
                clinic.email,
            )
            return clinic.email

    yield asyncio.run(made())


def _jobs(superuser_url: str, email: str) -> list[tuple[str, int]]:
    """(status, attempts) of the password-reset mail jobs for ``email``'s user."""
    return asyncio.run(reset_jobs(superuser_url, email))


# -- the API process killed, a second one taking over -------------------------------------------
async def _write(
    servers: list[str], token: str, name: str, log: list[dict[str, Any]]
) -> dict[str, Any]:
    """Create the customer ``name`` as a careful client does: on the first server that answers;
    a lost answer is looked up (by its unique name) before the create is sent again. A server
    that failed goes to the back of ``servers`` (shared by the clients, as a load balancer's
    health check would take it out)."""
    body = {"first_name": "Takeover", "last_name": name}
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(10):
        for url in list(servers):
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=5) as http:
                found = await call(http, "GET", "/api/v1/customers", params={"q": name})
                if found["kind"] != "200":
                    log.append({"server": url, "step": "look-up", "kind": found["kind"]})
                    if servers[0] == url:
                        servers.append(servers.pop(0))
                    continue
                if found["body"]["items"]:
                    return {"id": found["body"]["items"][0]["id"], "found": True, "server": url}
                made = await call(http, "POST", "/api/v1/customers", json=body)
                log.append({"server": url, "step": "create", "kind": made["kind"]})
                if made["kind"] == "201":
                    return {"id": made["body"]["id"], "found": False, "server": url}
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name}: no server took it")


async def _now(value: bool) -> bool:
    return value


def _writes_kept(
    live: LiveServer, tag: str, written: list[list[dict[str, Any]]]
) -> tuple[list[str], list[str]]:
    """Of the customers ``_write`` made under ``tag`` (client n's i-th is "tag n i"): those
    stored twice, and those acknowledged but not stored with the id the answer gave."""
    stored = asyncio.run(
        sql(
            live.database.superuser_url,
            "SELECT id::text AS id, last_name FROM customers WHERE last_name LIKE $1",
            f"{tag} %",
        )
    )
    twice = [name for name, n in Counter(r["last_name"] for r in stored).items() if n > 1]
    ids = {row["last_name"]: row["id"] for row in stored}
    acknowledged = {
        f"{tag} {n} {i}": w["id"] for n, ws in enumerate(written) for i, w in enumerate(ws)
    }
    return twice, [name for name, id_ in acknowledged.items() if ids.get(name) != id_]


def test_the_api_process_killed_under_load_a_second_one_takes_over(
    live_server: LiveServer, api_token: str, chaos: Outcome
) -> None:
    """Two servers on one database (the stage's, and one more): the one the clients use first
    is killed under their load, and the stage's takes over."""
    clients, writes = (4, 6) if smoke() else (16, 15)
    first_port = free_port()
    first_url = f"http://127.0.0.1:{first_port}"
    first = Vetify(["serve", "--port", str(first_port)], live_server.env())
    tag = uuid.uuid4().hex[:10]
    log: list[dict[str, Any]] = []
    try:
        first.start().wait_until_ready(first_url, STARTED_WITHIN)

        servers = [first_url, live_server.url]

        async def client(n: int) -> list[dict[str, Any]]:
            return [await _write(servers, api_token, f"{tag} {n} {i}", log) for i in range(writes)]

        def taken_by_first() -> int:
            return sum(1 for e in log if e["server"] == first_url and e["kind"] == "201")

        async def load() -> list[list[dict[str, Any]]]:
            running = asyncio.gather(*(client(n) for n in range(clients)))
            # Killed once it has acknowledged a write per client, in the thick of the load.
            await wait_for(
                "writes on the first server",
                lambda: _now(taken_by_first() >= clients),
                STARTED_WITHIN,
                every=0.02,
            )
            first.send(signal.SIGKILL)
            return await running

        written = asyncio.run(load())
        code = first.exit(DONE_WITHIN).code
    finally:
        first.stop()
    twice, lost = _writes_kept(live_server, tag, written)
    names = {first_url: "killed", live_server.url: "second"}
    by_server = Counter((names[w["server"]], w["found"]) for ws in written for w in ws)
    chaos.details.update(
        clients=clients,
        writes=clients * writes,
        killed_exit_code=code,
        done_by={
            f"{server}{' (found after a lost answer)' * found}": n
            for (server, found), n in by_server.items()
        },
        answers=dict(Counter(f"{names[e['server']]} {e['step']}: {e['kind']}" for e in log)),
    )
    assert code == -signal.SIGKILL
    assert by_server[("killed", False)] > 0, "the killed server took no write before the kill"
    assert by_server[("second", False)] > 0, "the second server took no write"
    assert not twice, f"written twice: {twice}"
    assert not lost, f"acknowledged but not stored as answered: {lost}"
    # The second server answered everything it was asked: no 5xx, no lost answer.
    wrong = [e for e in log if e["server"] == live_server.url and e["kind"] not in ("200", "201")]
    assert not wrong, wrong


# -- two API processes, one credential cache each ------------------------------------------------
def test_a_token_revoked_through_one_process_is_refused_by_the_other_at_once(
    live_server: LiveServer,
) -> None:
    other_port = free_port()
    other_url = f"http://127.0.0.1:{other_port}"
    other = Vetify(["serve", "--port", str(other_port)], live_server.env())
    token = live_server.demo_token("revoked across processes")
    headers = {"Authorization": f"Bearer {token}"}
    try:
        other.start().wait_until_ready(other_url, STARTED_WITHIN)
        with (
            httpx.Client(base_url=live_server.url, headers=headers, timeout=REQUEST_TIMEOUT) as one,
            httpx.Client(base_url=other_url, headers=headers, timeout=REQUEST_TIMEOUT) as two,
        ):
            for http in (one, two, one, two):  # each process has it cached
                assert http.get("/api/v1/pets", params={"limit": 1}).status_code == 200
            mine = [
                t
                for t in one.get("/api/v1/auth/tokens").json()
                if t["name"] == "revoked across processes"
            ]
            assert len(mine) == 1, mine
            assert one.delete(f"/api/v1/auth/tokens/{mine[0]['id']}").status_code == 204
            # No wait: the revocation moved the clinic's auth epoch in its own transaction.
            assert two.get("/api/v1/pets", params={"limit": 1}).status_code == 401
            assert one.get("/api/v1/pets", params={"limit": 1}).status_code == 401
    finally:
        other.stop()


# -- one of `vetify serve --workers 2`'s workers killed ------------------------------------------
def test_a_worker_killed_under_load_is_replaced_and_the_service_answers_throughout(
    live_server: LiveServer, api_token: str, chaos: Outcome
) -> None:
    clients, writes = (4, 6) if smoke() else (16, 15)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    served = Vetify(["serve", "--port", str(port), "--workers", "2"], live_server.env())
    tag = uuid.uuid4().hex[:10]
    log: list[dict[str, Any]] = []
    try:
        served.start().wait_until_ready(url, STARTED_WITHIN)
        supervisor = psutil.Process(served.pid)
        workers = until("two workers", lambda: _children(supervisor, 2), STARTED_WITHIN)
        killed = workers[0]

        async def client(n: int) -> list[dict[str, Any]]:
            # Its own list: this scenario has one server, which every retry goes back to.
            return [await _write([url], api_token, f"{tag} {n} {i}", log) for i in range(writes)]

        async def load() -> list[list[dict[str, Any]]]:
            running = asyncio.gather(*(client(n) for n in range(clients)))
            await wait_for(
                "writes before the kill",
                lambda: _now(sum(e["kind"] == "201" for e in log) >= clients),
                STARTED_WITHIN,
                every=0.02,
            )
            psutil.Process(killed).kill()
            return await running

        written = asyncio.run(load())

        def replaced() -> list[int]:
            now = _children(supervisor, 2)
            return now if killed not in now else []

        after = until("a worker in the killed one's place", replaced, STARTED_WITHIN)
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {api_token}"}, timeout=REQUEST_TIMEOUT
        ) as http:
            # New connections, handed to either worker by the kernel: every one answers.
            answers = Counter(
                http.get(
                    "/api/v1/pets", params={"limit": 1}, headers={"Connection": "close"}
                ).status_code
                for _ in range(20)
            )
        served.send(signal.SIGTERM)
        code = served.exit(DONE_WITHIN).code
    finally:
        served.stop()
    twice, lost = _writes_kept(live_server, tag, written)
    chaos.details.update(
        clients=clients,
        writes=clients * writes,
        answers=dict(Counter(f"{e['step']}: {e['kind']}" for e in log)),
        after_the_kill=dict(answers),
        exit_code=code,
    )
    assert not twice, f"written twice: {twice}"
    assert not lost, f"acknowledged but not stored as answered: {lost}"
    assert answers == {200: 20}
    assert code == 0
    assert killed not in after
    assert not [pid for pid in after if psutil.pid_exists(pid)], "a worker outlived the stop"


def _children(process: psutil.Process, count: int) -> list[int]:
    """The pids of ``process``'s ``count`` children; empty while it has another number."""
    pids = [child.pid for child in process.children()]
    return pids if len(pids) == count else []
