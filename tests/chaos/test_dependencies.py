"""Stripe, the mail relay, S3 and clamd down, slow or cutting connections, against `vetify serve`.

None of them is required to serve: the database is (a 503 while it is away, test_faults.py).
While one is away, what needs it answers honestly and what does not goes on as usual: a payment
is a 503 problem+json with Retry-After (billing-unavailable), an attachment upload a 503
(storage-unavailable) with S3 away, or stored *pending* with the scanner away (served once a job
has scanned it); a mail waits in its job. Readiness stays 200: none of them is a reason to take
the replica out of the load balancer. When the dependency is back, the same process carries on,
and no side effect happened twice: one Stripe customer per clinic whatever was retried (the fake
Stripe records every request and its idempotency key), one mail per ask, every acknowledged upload
readable with the bytes sent.

Each dependency is reached through a :class:`FaultProxy` of its own (``wired.proxies``), which
refuses, holds (a black hole), slows or resets connections.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.billing.plans import Plan
from fixtures import files
from tests.chaos.conftest import (
    DEPENDENCIES,
    REQUEST_TIMEOUT,
    S3_TIMEOUT,
    SLACK,
    SMTP_TIMEOUT,
    STRIPE_TIMEOUT,
    Clinic,
    Outcome,
    T,
    Wired,
    call,
    reset_jobs,
    reset_links,
    smoke,
    sql,
    wait_for,
)
from tests.harness.api import PROBLEM_JSON, login_request
from tests.harness.billing import PRICES, deliver
from tests.harness.proxy import FaultProxy
from tests.harness.stripe import events as stripe_objects
from tests.harness.stripe.server import FakeStripe

DOWN = "503 problem"
STRIPE_WITHIN = 2 * STRIPE_TIMEOUT + 2 + SLACK
"""A checkout's longest answer with Stripe unreachable: two tries of the timeout (one SDK retry)
and its back-off."""
JOBS_WITHIN = 30.0
"""A job due now is done within this: the worker polls every 5 s, and retries back off 2 s."""


@pytest.fixture(autouse=True)
def _every_scenario_restores_faults(wired: Wired) -> None:
    """Overrides the chaos stage's: these scenarios fault the wired server, which ``wired``
    puts right (and checks ready, the same process) after each."""


async def _ready(wired: Wired) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=wired.url, timeout=10) as http:
        return await call(http, "GET", "/health/ready")


def _problem(answer: dict[str, Any], slug: str) -> bool:
    body = answer.get("body") or {}
    return answer["kind"] == DOWN and str(body.get("type", "")).endswith("/" + slug)


# -- Stripe --------------------------------------------------------------------------------------
async def _checkout(clinic: Clinic) -> dict[str, Any]:
    return await call(clinic.http, "POST", "/api/v1/billing/checkout", json={"plan": "starter"})


def _customers_of(stripe: FakeStripe, clinic: Clinic) -> list[str]:
    return [
        c.object["id"] for c in stripe.customers.values() if c.params.get("email") == clinic.email
    ]


def _customer_keys(stripe: FakeStripe, clinic: Clinic) -> set[str | None]:
    return {
        r.idempotency_key
        for r in stripe.calls("POST", "/v1/customers")
        if r.params.get("email") == clinic.email
    }


async def test_stripe_down_is_a_503_with_retry_after_and_checkout_works_once_it_is_back(
    wired: Wired, clinic: Clinic, stripe: FakeStripe, chaos: Outcome
) -> None:
    tries = 2 if smoke() else 6
    proxy = wired.proxies["stripe"]
    proxy.refuse = True
    proxy.reset_all()
    down = [await _checkout(clinic) for _ in range(tries)]
    reads = await call(clinic.http, "GET", "/api/v1/customers")
    ready = await _ready(wired)
    proxy.heal()
    back = await _checkout(clinic)
    again = await _checkout(clinic)
    chaos.details.update(
        tries=tries,
        down=dict(Counter(a["kind"] for a in down)),
        slowest_down_seconds=round(max(a["seconds"] for a in down), 2),
        back=back["kind"],
        stripe_connections=proxy.connections,
        customers=len(_customers_of(stripe, clinic)),
    )
    assert all(_problem(a, "billing-unavailable") for a in down), down
    assert all(a["seconds"] < STRIPE_WITHIN for a in down), [a["seconds"] for a in down]
    assert reads["kind"] == "200", reads
    assert ready["kind"] == "200", ready
    assert back["kind"] == "200", back
    assert again["kind"] == "200", again
    # One customer for the clinic, made under one idempotency key, however often it was asked.
    assert len(_customers_of(stripe, clinic)) == 1
    assert len(_customer_keys(stripe, clinic)) == 1


async def test_stripe_slow_past_its_timeout_is_a_503_and_the_late_work_is_not_done_twice(
    wired: Wired, clinic: Clinic, stripe: FakeStripe, chaos: Outcome
) -> None:
    """Stripe answers, but after the client stopped waiting, and does the work all the same
    (``processed``): the customer it made then must be the one the next checkout gets, not a
    second one. Slower than usual but within the timeout is only slower."""
    # The customer's creation, and the SDK's retry of it, answer after the timeout.
    stripe.stall_next(2, seconds=STRIPE_TIMEOUT + 1, path_prefix="/v1/customers")
    stalled = await _checkout(clinic)
    # Stripe made the customer late, after the service had answered 503 and rolled back.
    await wait_for("the stalled customer made", lambda: _async(_customers_of(stripe, clinic)), 10)
    latency = 0.3
    proxy = wired.proxies["stripe"]
    proxy.latency = latency
    slowed = await _checkout(clinic)
    proxy.heal()
    asked = stripe.calls("POST", "/v1/customers")
    chaos.details.update(
        stalled=stalled["kind"],
        stalled_seconds=round(stalled["seconds"], 2),
        latency_seconds=latency,
        slowed=slowed["kind"],
        slowed_seconds=round(slowed["seconds"], 2),
        customer_requests=len(asked),
        customers=len(_customers_of(stripe, clinic)),
    )
    assert _problem(stalled, "billing-unavailable"), stalled
    assert stalled["seconds"] < STRIPE_WITHIN, stalled
    assert slowed["kind"] == "200", slowed
    assert slowed["seconds"] >= 2 * latency
    # Three requests to make the customer (two timed out), under one key: one customer.
    assert len(asked) == 3, asked
    assert len(_customer_keys(stripe, clinic)) == 1
    assert len(_customers_of(stripe, clinic)) == 1


async def _async(value: T) -> T:
    return value


# -- the mail relay ------------------------------------------------------------------------------
async def _reset_jobs(wired: Wired, email: str) -> list[tuple[str, int]]:
    return await reset_jobs(wired.live.database.superuser_url, email)


def _reset_links(wired: Wired, email: str) -> list[str]:
    return reset_links(wired.relay, wired.url, email)


async def _due_now(wired: Wired) -> None:
    """The retry's back-off has passed (procrastinate schedules a retry ahead of now), and the
    worker is told so as procrastinate tells it of a new job (its trigger's notification),
    rather than finding out at its next poll, 5 s later."""
    await sql(
        wired.live.database.superuser_url,
        "WITH due AS (UPDATE procrastinate_jobs SET scheduled_at = now()"
        " WHERE status = 'todo' RETURNING id)"
        " SELECT pg_notify('procrastinate_any_queue_v1',"
        " json_build_object('type', 'job_inserted', 'job_id', id)::text) FROM due",
    )


MAIL_FAULTS = {"refused": ("refuse",), "silent": ("hold",)}
"""The relay refusing connections, or taking them and never answering (then the mail job's
``VETIFY_SMTP_TIMEOUT_SECONDS`` ends the try)."""


@pytest.mark.parametrize("fault", ["refused"] if smoke() else list(MAIL_FAULTS))
async def test_mail_relay_down_delays_the_mail_and_it_is_sent_once_when_it_is_back(
    wired: Wired, clinic: Clinic, fault: str, chaos: Outcome
) -> None:
    proxy = wired.proxies["smtp"]
    for switch in MAIL_FAULTS[fault]:
        setattr(proxy, switch, True)
    async with httpx.AsyncClient(base_url=wired.url, timeout=10) as anonymous:
        asked = await call(
            anonymous, "POST", "/api/v1/auth/password-reset", json={"email": clinic.email}
        )
    # The job tried, failed against the relay, and waits for its retry.
    _, failed_within = await wait_for(
        "a failed try of the mail job",
        lambda: _any(_reset_jobs(wired, clinic.email), lambda jobs: jobs and jobs[0][1] >= 1),
        JOBS_WITHIN + SMTP_TIMEOUT,
    )
    ready = await _ready(wired)
    proxy.heal()
    links, sent_within = await _mailed_once_due(wired, clinic)
    # The link mailed works: the side effect happened, in effect, exactly once.
    new_password = f"chaos {uuid.uuid4().hex}"
    async with httpx.AsyncClient(base_url=wired.url, timeout=10) as anonymous:
        completed = await anonymous.post(
            "/api/v1/auth/password-reset/complete",
            json={"token": links[-1], "password": new_password},
        )
        logged_in = await anonymous.post(**login_request(clinic.email, new_password))
    chaos.details.update(
        fault=fault,
        asked=asked["kind"],
        failed_try_within_seconds=round(failed_within, 1),
        done_after_recovery_seconds=round(sent_within, 1),
        mails=len(links),
        relay_connections=proxy.connections,
    )
    assert asked["kind"] == "202", asked
    assert ready["kind"] == "200", ready
    assert len(links) == 1, f"{len(links)} reset mails for one ask"
    assert completed.status_code == 204, completed.text
    assert logged_in.status_code == 200, logged_in.text


async def _mailed_once_due(wired: Wired, clinic: Clinic) -> tuple[list[str], float]:
    """Make the mail job's retry due; once it is done, the reset links mailed to the clinic's
    owner, and the seconds it took."""
    await _due_now(wired)
    _, within = await wait_for(
        "the mail job done",
        lambda: _any(_reset_jobs(wired, clinic.email), lambda jobs: not jobs),
        JOBS_WITHIN,
    )
    return _reset_links(wired, clinic.email), within


async def _any(found: Awaitable[T], test: Callable[[T], object]) -> bool:
    return bool(test(await found))


# -- S3 and clamd: attachments --------------------------------------------------------------------
async def _record(clinic: Clinic) -> str:
    """A medical record of the clinic (of a new pet of a new customer)."""
    customer = await clinic.http.post(
        "/api/v1/customers",
        json={"first_name": "Chaos", "last_name": "Files", "email": "files@example.com"},
    )
    assert customer.status_code == 201, customer.text
    pet = await clinic.http.post(
        "/api/v1/pets",
        json={"customer_id": customer.json()["id"], "name": "Rex", "species": "dog"},
    )
    assert pet.status_code == 201, pet.text
    record = await clinic.http.post(
        "/api/v1/medical-records", json={"pet_id": pet.json()["id"], "subjective": "chaos"}
    )
    assert record.status_code == 201, record.text
    return str(record.json()["id"])


def _file(size: int = 0) -> bytes:
    """A PNG no other upload has (its bytes tell which upload a stored object or a scan is),
    ``size`` bytes longer."""
    return files.PNG + uuid.uuid4().bytes + random.randbytes(size)


async def _upload(clinic: Clinic, record: str, content: bytes) -> dict[str, Any]:
    return await call(
        clinic.http,
        "POST",
        f"/api/v1/medical-records/{record}/attachments",
        files={"file": ("scan.png", content, "image/png")},
    )


async def _download(clinic: Clinic, attachment: str) -> tuple[dict[str, Any], bytes]:
    started = time.monotonic()
    try:
        response = await clinic.http.get(f"/api/v1/attachments/{attachment}/content")
    except httpx.HTTPError as exc:
        return {"kind": f"transport: {exc!r}", "seconds": time.monotonic() - started}, b""
    answer = {
        "kind": "200" if response.status_code == 200 else f"{response.status_code}",
        "seconds": time.monotonic() - started,
    }
    if response.headers.get("content-type", "").startswith(PROBLEM_JSON):
        answer["body"] = response.json()
        if response.status_code == 503 and response.headers.get("retry-after", "").isdigit():
            answer["kind"] = DOWN
    return answer, response.content


def _summary(**answers: dict[str, Any]) -> dict[str, Any]:
    """Each answer's kind and seconds, for ``chaos.details``."""
    found: dict[str, Any] = {}
    for name, answer in answers.items():
        found[name] = answer["kind"]
        found[f"{name}_seconds"] = round(answer["seconds"], 2)
    return found


async def _attachments(clinic: Clinic, record: str) -> list[dict[str, Any]]:
    listed = await clinic.http.get(f"/api/v1/medical-records/{record}/attachments")
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


MiB = 1024 * 1024
S3_WITHIN = 2 * (S3_TIMEOUT + 1) + 1 + SLACK
"""An upload or download's longest answer with S3 unreachable or silent: two tries of the
timeout (an upload waits a second more on each for S3's ``100 Continue``), and the back-off."""


@pytest.mark.parametrize("fault", ["refused"] if smoke() else ["refused", "silent"])
async def test_s3_down_is_a_503_with_retry_after_and_no_upload_is_half_kept(
    wired: Wired, clinic: Clinic, fault: str, chaos: Outcome
) -> None:
    record = await _record(clinic)
    stored = _file()
    kept = await _upload(clinic, record, stored)
    assert kept["kind"] == "201", kept
    proxy = wired.proxies["s3"]
    setattr(proxy, MAIL_FAULTS[fault][0], True)
    proxy.reset_all()
    refused = _file()
    upload = await _upload(clinic, record, refused)
    download, _ = await _download(clinic, kept["body"]["id"])
    ready = await _ready(wired)
    listed_down = await _attachments(clinic, record)
    proxy.heal()
    after = await _upload(clinic, record, refused)
    back, content = await _download(clinic, kept["body"]["id"])
    chaos.details.update(
        fault=fault,
        **_summary(upload=upload, download=download),
        after=after["kind"],
    )
    assert _problem(upload, "storage-unavailable"), upload
    assert _problem(download, "storage-unavailable"), download
    assert upload["seconds"] < S3_WITHIN, upload
    assert download["seconds"] < S3_WITHIN, download
    assert ready["kind"] == "200", ready
    # The refused upload left no row behind: the list is the one acknowledged upload.
    assert [a["id"] for a in listed_down] == [kept["body"]["id"]]
    assert after["kind"] == "201", after
    assert back["kind"] == "200", back
    assert content == stored


async def test_s3_slow_uploads_and_downloads_succeed_slower(
    wired: Wired, clinic: Clinic, chaos: Outcome
) -> None:
    latency = 0.2
    record = await _record(clinic)
    content = _file()
    proxy = wired.proxies["s3"]
    proxy.latency = latency
    upload = await _upload(clinic, record, content)
    download, received = (
        await _download(clinic, upload["body"]["id"])
        if upload["kind"] == "201"
        else ({"kind": "-", "seconds": 0}, b"")
    )
    proxy.heal()
    chaos.details.update(latency_seconds=latency, **_summary(upload=upload, download=download))
    assert upload["kind"] == "201", upload
    assert download["kind"] == "200", download
    assert received == content
    assert upload["seconds"] >= 2 * latency


async def test_clamd_down_keeps_uploads_pending_until_a_job_scans_them_once(
    wired: Wired, clinic: Clinic, chaos: Outcome
) -> None:
    record = await _record(clinic)
    content = _file()
    proxy = wired.proxies["clamd"]
    proxy.refuse = True
    # Several, of a few chunks (64 KiB) each: the reset comes at a different moment of each
    # upload's stream to the scanner.
    others = [await _upload(clinic, record, _file(2 * MiB)) for _ in range(6 if smoke() else 20)]
    upload = await _upload(clinic, record, content)
    uploads = Counter(a["kind"] for a in [*others, upload])
    assert uploads == {"201": len(others) + 1}, [*others, upload]
    attachment = upload["body"]["id"]
    pending, _ = await _download(clinic, attachment)
    ready = await _ready(wired)
    proxy.heal()
    await _due_now(wired)

    async def scanned() -> bool:
        found = await clinic.http.get(f"/api/v1/attachments/{attachment}")
        return bool(found.status_code == 200 and found.json()["scan_status"] == "clean")

    _, scanned_within = await wait_for("the pending upload scanned", scanned, JOBS_WITHIN)
    served, received = await _download(clinic, attachment)
    scans = sum(1 for s in wired.clamd.scanned if s == content)
    chaos.details.update(
        uploads=dict(uploads),
        upload_status=upload["body"]["scan_status"],
        while_down=pending["kind"],
        scanned_after_recovery_seconds=round(scanned_within, 1),
        scans=scans,
    )
    assert upload["body"]["scan_status"] == "pending"
    assert pending["kind"] == "409", pending
    assert ready["kind"] == "200", ready
    assert served["kind"] == "200", served
    assert received == content
    assert scans == 1, f"scanned {scans} times"


# -- latency and resets between the service and each dependency -------------------------------
FAULT_SECONDS = 2.0 if smoke() else 10.0


async def _under(proxy: FaultProxy, fault: str, work: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """``work(n)``, again and again, for ``FAULT_SECONDS`` with ``fault`` on the proxy: latency
    (0.2 s a chunk each way), or resets (0.05 s of latency, so that every conversation lasts,
    and every open connection reset every 0.1 to 0.4 s)."""
    deadline = time.monotonic() + FAULT_SECONDS
    proxy.latency = 0.2 if fault == "latency" else 0.05
    done: list[Any] = []
    resets = 0

    async def worker() -> None:
        while time.monotonic() < deadline:
            done.append(await work(len(done)))

    async def resetter() -> None:
        nonlocal resets
        while fault == "resets" and time.monotonic() < deadline:
            await asyncio.sleep(random.uniform(0.1, 0.4))
            await asyncio.to_thread(proxy.reset_all)
            resets += 1

    try:
        await asyncio.gather(worker(), resetter())
    finally:
        proxy.heal()
        await asyncio.to_thread(proxy.reset_all)
    done.append({"resets": resets})
    return done


async def _redis_through(wired: Wired, clinic: Clinic, fault: str) -> dict[str, Any]:
    """Every authenticated request counts against the clinic's quota in Redis."""
    answers = await _under(
        wired.proxies["redis"], fault, lambda _: call(clinic.http, "GET", "/api/v1/customers")
    )
    resets = answers.pop()
    kinds = Counter(a["kind"] for a in answers)
    assert kinds == {"200": len(answers)}, kinds
    return {"answers": dict(kinds), **resets}


async def _stripe_through(wired: Wired, clinic: Clinic, fault: str) -> dict[str, Any]:
    answers = await _under(wired.proxies["stripe"], fault, lambda _: _checkout(clinic))
    resets = answers.pop()
    kinds = Counter(a["kind"] for a in answers)
    after = await _checkout(clinic)
    assert set(kinds) <= {"200", DOWN}, answers
    assert all(_problem(a, "billing-unavailable") for a in answers if a["kind"] == DOWN)
    assert after["kind"] == "200", after
    assert len(_customers_of(wired.stripe, clinic)) == 1
    return {"answers": dict(kinds), **resets}


async def _smtp_through(wired: Wired, clinic: Clinic, fault: str) -> dict[str, Any]:
    """A reset after the relay took the mail, before its answer reached the service, makes the
    job try again: a second mail, with a new link. In effect it is still once: only the last
    link works (the first try's was rolled back with it)."""
    async with httpx.AsyncClient(base_url=wired.url, timeout=10) as anonymous:
        asked = await anonymous.post("/api/v1/auth/password-reset", json={"email": clinic.email})
        assert asked.status_code == 202, asked.text

        async def idle(_: int) -> None:
            await asyncio.sleep(0.2)

        resets = (await _under(wired.proxies["smtp"], fault, idle)).pop()
        links, _ = await _mailed_once_due(wired, clinic)
        password = f"chaos {uuid.uuid4().hex}"
        used = [
            (
                await anonymous.post(
                    "/api/v1/auth/password-reset/complete",
                    json={"token": link, "password": password},
                )
            ).status_code
            for link in [*links[:-1], links[-1]]
        ]
    assert links, "no mail"
    assert used[-1] == 204, used
    assert all(status == 404 for status in used[:-1]), used
    return {"mails": len(links), "links_used": used, **resets}


async def _uploads_through(
    wired: Wired, clinic: Clinic, dependency: str, fault: str
) -> tuple[str, list[tuple[dict[str, Any], bytes]], dict[str, int]]:
    """Uploads to a new record, one after another, under ``fault`` on ``dependency``: the
    record, each answer with the bytes sent, and the resets."""
    record = await _record(clinic)
    sent: list[bytes] = []

    async def upload(_: int) -> dict[str, Any]:
        sent.append(_file(256 * 1024))
        return await _upload(clinic, record, sent[-1])

    answers = await _under(wired.proxies[dependency], fault, upload)
    resets = answers.pop()
    return record, list(zip(answers, sent, strict=True)), resets


async def _served_as_sent(clinic: Clinic, kept: dict[str, bytes]) -> None:
    for attachment, content in kept.items():
        served, received = await _download(clinic, attachment)
        assert served["kind"] == "200", served
        assert received == content


async def _s3_through(wired: Wired, clinic: Clinic, fault: str) -> dict[str, Any]:
    record, uploads, resets = await _uploads_through(wired, clinic, "s3", fault)
    kinds = Counter(a["kind"] for a, _ in uploads)
    assert set(kinds) <= {"201", DOWN}, uploads
    assert all(_problem(a, "storage-unavailable") for a, _ in uploads if a["kind"] == DOWN)
    kept = {a["body"]["id"]: content for a, content in uploads if a["kind"] == "201"}
    listed = {a["id"] for a in await _attachments(clinic, record)}
    assert listed == set(kept), "an upload answered 503 was kept, or a 201 was not"
    await _served_as_sent(clinic, kept)
    return {"answers": dict(kinds), **resets}


async def _clamd_through(wired: Wired, clinic: Clinic, fault: str) -> dict[str, Any]:
    record, uploads, resets = await _uploads_through(wired, clinic, "clamd", fault)
    kinds = Counter(f"{a['kind']} {(a.get('body') or {}).get('scan_status')}" for a, _ in uploads)
    assert set(kinds) <= {"201 clean", "201 pending"}, uploads
    await _due_now(wired)

    async def all_clean() -> bool:
        return {a["scan_status"] for a in await _attachments(clinic, record)} == {"clean"}

    await wait_for("every upload scanned", all_clean, JOBS_WITHIN)
    await _served_as_sent(clinic, {a["body"]["id"]: content for a, content in uploads})
    return {"answers": dict(kinds), **resets}


THROUGH = {
    "redis": _redis_through,
    "stripe": _stripe_through,
    "smtp": _smtp_through,
    "s3": _s3_through,
    "clamd": _clamd_through,
}


SMOKE_THROUGH = ("redis", "stripe", "s3")
"""Resets in smoke; the mail relay's and clamd's wait for a job's retry (their outages are in
smoke above), so they run in full, as does latency for all."""


@pytest.mark.parametrize(
    ("dependency", "fault"),
    [(d, "resets") for d in SMOKE_THROUGH]
    if smoke()
    else [(d, f) for d in DEPENDENCIES for f in ("resets", "latency")],
)
async def test_latency_and_resets_between_the_service_and_a_dependency(
    wired: Wired, clinic: Clinic, dependency: str, fault: str, chaos: Outcome
) -> None:
    """What uses the dependency answers as usual or, for a required call cut short, 503 with
    Retry-After; nothing acknowledged is lost, nothing happens twice in effect; readiness 200."""
    found = await THROUGH[dependency](wired, clinic, fault)
    ready = await _ready(wired)
    chaos.details.update(dependency=dependency, fault=fault, seconds=FAULT_SECONDS, **found)
    assert ready["kind"] == "200", ready


async def _event_status(wired: Wired, event_id: str) -> tuple[str, int]:
    rows = await sql(
        wired.live.database.superuser_url,
        "SELECT status::text AS status, attempts FROM stripe_events WHERE id = $1",
        event_id,
    )
    return (rows[0]["status"], rows[0]["attempts"]) if rows else ("absent", 0)


async def test_stripe_down_while_its_webhook_is_applied_the_event_waits_and_is_applied_once(
    wired: Wired, clinic: Clinic, stripe: FakeStripe, chaos: Outcome
) -> None:
    """A subscription event arrives (twice: Stripe redelivers what it thinks was lost) while
    Stripe's API, which applying it reads the subscription from, is out of reach: the webhook
    is acknowledged (stored once), the job fails and retries, and once Stripe is back the event
    is applied, once."""
    clinic_id = (await clinic.http.get("/api/v1/billing")).json()["clinic_id"]
    sub = stripe_objects.subscription(
        customer=stripe_objects.new_id("cus_"),
        status="active",
        price=PRICES[Plan.starter],
        clinic_id=clinic_id,
    )
    stripe.put_subscription(sub)
    evt = stripe_objects.event("customer.subscription.created", sub)
    proxy = wired.proxies["stripe"]
    proxy.refuse = True
    async with httpx.AsyncClient(base_url=wired.url, timeout=REQUEST_TIMEOUT) as http:
        deliveries = [await deliver(http, evt) for _ in range(2)]
        await wait_for(
            "a failed try of the event's job",
            lambda: _any(_event_status(wired, evt["id"]), lambda s: s[0] == "retrying"),
            JOBS_WITHIN,
        )
        _, attempts = await _event_status(wired, evt["id"])
        ready = await _ready(wired)
        proxy.heal()
        await _due_now(wired)
        _, applied_within = await wait_for(
            "the event applied",
            lambda: _any(_event_status(wired, evt["id"]), lambda s: s[0] == "processed"),
            JOBS_WITHIN,
        )
        late = await deliver(http, evt)
    billing = (await clinic.http.get("/api/v1/billing")).json()
    retrieved = stripe.calls("GET", f"/v1/subscriptions/{sub['id']}")
    chaos.details.update(
        deliveries=[d.json() for d in deliveries],
        attempts_while_down=attempts,
        applied_after_recovery_seconds=round(applied_within, 1),
        subscription_reads=len(retrieved),
        billing_status=billing["status"],
    )
    assert [d.status_code for d in deliveries] == [200, 200]
    assert [d.json()["duplicate"] for d in deliveries] == [False, True]
    assert ready["kind"] == "200", ready
    assert late.json()["duplicate"] is True
    assert billing["status"] == "active"
    assert billing["subscribed"] is True
    # Applied once: one read of the subscription reached Stripe (those refused never did).
    assert len(retrieved) == 1, retrieved
