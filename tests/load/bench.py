"""The hot paths' benchmark (issue 18): ``python -m tests.load.bench [--seconds 20]``.

Starts PostgreSQL and Redis as the test stages do (throwaway), a database with the demo clinic,
and ``vetify serve`` (one process, or ``--set VETIFY_WORKERS=2``; row-level security, the
tenant filter, rate limits (scaled 1000x, still counted), permission checks, security headers
and the access log all on), then drives each hot path with wrk at a fixed concurrency for a
fixed time, authenticated with an API token as an integration is. In the same run, the
ceiling: a bare FastAPI app under the same uvicorn answering the pets list's JSON from memory
(``tests/load/ceiling.py``).

Per path it prints requests per second, p50 and p99, the server's CPU per request (all its
processes), the RSS of its largest process (a worker's) after the path, the statements one
request sends (counted in process, deterministically: ``tests/harness/statements.py``), and
the ratio to the ceiling; and writes them as JSON to ``reports/bench.json``. A benchmark, not a
test: it passes or fails nothing, and its numbers mean something only on a quiet machine.

Tracing's cost (ADR 0025): ``--otlp-receiver`` starts the local OTLP/HTTP receiver
(``tests/harness/otlp.py``) and points the server's ``OTEL_EXPORTER_OTLP_ENDPOINT`` at it; the
rest is ``--set OTEL_TRACES_EXPORTER=otlp --set OTEL_TRACES_SAMPLER=parentbased_traceidratio
--set OTEL_TRACES_SAMPLER_ARG=0.1``. ``--only pets`` measures the paths whose name has "pets".

Cost growth: ``--size 10k|1m|10m`` measures the biggest clinic of a database built by
``tests/load/bigdata.py`` with that many appointments (the largest table; the rest in
proportion) instead of the demo clinic, and ``--connections 1`` gives latency without queueing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil

from app.db.embedded import free_port
from app.kit.pagination import encode_cursor
from app.main import create_app
from app.settings import Environment, Settings
from fixtures.factories import DEFAULT_PASSWORD
from tests.harness import canary, databases
from tests.harness.live import ROOT, LiveServer
from tests.harness.otlp import Receiver, otlp_receiver
from tests.harness.plugin import seed_demo_database
from tests.harness.services import choose_provider, postgres, redis
from tests.harness.statements import counting
from tests.load import bigdata
from tests.tools.report import git_commit

REPORT = ROOT / "reports" / "bench.json"
CONNECTIONS = 20
THREADS = 2


@dataclass(frozen=True)
class HotPath:
    name: str
    method: str
    path: str
    body: str = ""
    """A wrk Lua body for POST (``tests/load/bench_create.lua``), else none."""


@dataclass(frozen=True)
class Result:
    name: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    failed: int
    """Answers that were not 2xx or 3xx, and socket errors."""
    cpu_ms_per_request: float
    rss_mib: float
    """The largest resident set of the server's processes (the supervisor's and each worker's):
    pages a worker shares with the others counted in each."""
    pss_mib: float
    """The largest proportional set: each shared page divided among the processes sharing it,
    what one more worker costs."""
    statements: int | None


def wrk(
    url: str,
    seconds: int,
    token: str | None,
    script: Path | None = None,
    connections: int = CONNECTIONS,
) -> dict[str, float]:
    threads = min(THREADS, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run(  # noqa: S603 - wrk from PATH, our arguments
        [*command, url], capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    return parse_wrk(output)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(output: str) -> dict[str, float]:
    """wrk's --latency report: requests per second, p50 and p99 in ms, requests, failures."""

    def latency(percent: str) -> float:
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
        if found is None:
            raise ValueError(f"no {percent}% line in wrk's output:\n{output}")
        return float(found.group(1)) * _UNITS[found.group(2)]

    total = re.search(r"^\s+(\d+) requests in", output, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if total is None or rate is None:
        raise ValueError(f"not wrk's report:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    failed = int(non_2xx.group(1)) if non_2xx else 0
    failed += sum(map(int, errors.groups())) if errors else 0
    return {
        "requests_per_second": float(rate.group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "requests": int(total.group(1)),
        "failed": failed,
    }


def processes(pid: int) -> list[psutil.Process]:
    """The server's processes: itself and, with workers, its workers."""
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def cpu_seconds(pid: int) -> float:
    return sum(float(sum(p.cpu_times()[:2])) for p in processes(pid))  # user + system


def measure(
    path: HotPath,
    base: str,
    pid: int,
    seconds: int,
    token: str | None = None,
    statements: int | None = None,
    profile: Path | None = None,
    connections: int = CONNECTIONS,
) -> Result:
    before = cpu_seconds(pid)
    script = Path(__file__).with_name(path.body) if path.body else None
    with sampled(pid, seconds, profile / f"{slug(path.name)}.txt" if profile else None):
        numbers = wrk(base + path.path, seconds, token, script, connections)
    used = cpu_seconds(pid) - before
    return Result(
        name=path.name,
        requests_per_second=numbers["requests_per_second"],
        p50_ms=numbers["p50_ms"],
        p99_ms=numbers["p99_ms"],
        requests=int(numbers["requests"]),
        failed=int(numbers["failed"]),
        cpu_ms_per_request=1000 * used / max(numbers["requests"], 1),
        rss_mib=max(p.memory_info().rss for p in processes(pid)) / 2**20,
        pss_mib=max(p.memory_full_info().pss for p in processes(pid)) / 2**20,
        statements=statements,
    )


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@contextmanager
def sampled(pid: int, seconds: int, out: Path | None) -> Iterator[None]:
    """py-spy's samples of the server while the body runs, as collapsed stacks in ``out`` (a
    flame graph's input; ``--nonblocking``, so the server is not paused to be read)."""
    if out is None:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    command = ["py-spy", "record", "--pid", str(pid), "--subprocesses", "--duration", str(seconds)]
    command += ["--rate", "200", "--nonblocking", "--format", "raw", "--output", str(out)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: S603 - fixed arguments
    try:
        yield
    finally:
        spy.wait(timeout=seconds + 60)


@dataclass(frozen=True)
class Clinic:
    """What the paths need of the measured clinic (the demo's, or bigdata's biggest), read
    through the API with its owner's token."""

    token: str
    pet_id: str
    record_id: str
    vet_id: str
    day: str
    search: str
    email: str
    """A client's whole address (URL-quoted): found by its blind index."""


def clinic_of(server: LiveServer, token: str) -> Clinic:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        pets = http.get("/api/v1/pets", params={"limit": 20}).raise_for_status().json()
        records = http.get("/api/v1/medical-records", params={"limit": 1}).raise_for_status()
        staff = http.get("/api/v1/staff").raise_for_status().json()
        customers = http.get("/api/v1/customers", params={"limit": 1}).raise_for_status()
    vets = [member for member in staff["items"] if member["role"] in ("vet", "owner")]
    return Clinic(
        token=token,
        pet_id=pets["items"][0]["id"],
        record_id=records.json()["items"][0]["id"],
        vet_id=vets[0]["user_id"],
        day=dt.date.today().isoformat(),
        search=customers.json()["items"][0]["last_name"][:3],
        email=quote(customers.json()["items"][0]["email"]),
    )


DEEP_DAYS = 300
"""How far back the book's deep page starts: the middle of bigdata's history of appointments."""


def hot_paths(clinic: Clinic) -> list[HotPath]:
    back = dt.datetime.combine(dt.date.fromisoformat(clinic.day), dt.time(), dt.UTC)
    deep = encode_cursor([back - dt.timedelta(days=DEEP_DAYS), uuid.UUID(int=0)])
    return [
        HotPath("pets, a page of 20", "GET", "/api/v1/pets?limit=20"),
        HotPath("the day's appointment book", "GET", f"/api/v1/appointments?day={clinic.day}"),
        HotPath(
            f"the book, a page {DEEP_DAYS} days back",
            "GET",
            f"/api/v1/appointments?limit=20&cursor={deep}",
        ),
        HotPath("customers, a page of 20", "GET", "/api/v1/customers?limit=20"),
        HotPath("customer search", "GET", f"/api/v1/customers?q={clinic.search}&limit=20"),
        HotPath("customer by email", "GET", f"/api/v1/customers?q={clinic.email}"),
        HotPath("a medical record", "GET", f"/api/v1/medical-records/{clinic.record_id}"),
        HotPath("book an appointment", "POST", "/api/v1/appointments", "bench_create.lua"),
    ]


def appointment_body(clinic: Clinic, starts_at: dt.datetime) -> dict[str, Any]:
    """What the Lua script sends, less its start time (each request a slot of its own)."""
    return {
        "pet_id": clinic.pet_id,
        "vet_id": clinic.vet_id,
        "starts_at": starts_at.isoformat(),
        "ends_at": (starts_at + dt.timedelta(minutes=10)).isoformat(),
        "reason": "Benchmark",
    }


async def statements_per_request(
    settings: Settings, clinic: Clinic, paths: list[HotPath]
) -> dict[str, int]:
    """One request of each path to the app in process, after one to warm it: the statements it
    sent the database."""
    counts: dict[str, int] = {}
    app = create_app(settings)
    far = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=600)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="https://bench",
            headers={"Authorization": f"Bearer {clinic.token}"},
        ) as http,
    ):
        for index, path in enumerate(paths):
            for attempt in range(2):
                body = None
                if path.method == "POST":
                    starts = far + dt.timedelta(hours=2 * index + attempt)
                    body = appointment_body(clinic, starts)
                with counting() as counted:
                    answer = await http.request(path.method, path.path, json=body)
                answer.raise_for_status()
            counts[path.name] = counted.total
    return counts


@contextmanager
def ceiling(payload: bytes) -> Iterator[tuple[str, int]]:
    """The bare FastAPI app under uvicorn, answering ``payload``: its base URL and pid."""
    with tempfile.NamedTemporaryFile(suffix=".json") as body:
        body.write(payload)
        body.flush()
        port = free_port()
        process = subprocess.Popen(  # noqa: S603 - this interpreter's uvicorn, fixed arguments
            [sys.executable, "-m", "uvicorn", "tests.load.ceiling:app", "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, "VETIFY_CEILING_BODY": body.name},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(url + "/api/v1/pets", timeout=1).raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.2)
            yield url, process.pid
        finally:
            process.terminate()
            process.wait(timeout=30)


def table(results: list[Result], ceiling_rate: float) -> str:
    header = (
        f"{'path':32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7}"
        f" {'CPU ms':>7} {'stmts':>6} {'RSS MiB':>8} {'PSS MiB':>8} {'of ceiling':>10}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        statements = "-" if result.statements is None else str(result.statements)
        lines.append(
            f"{result.name:32} {result.requests_per_second:8.0f} {result.p50_ms:8.1f}"
            f" {result.p99_ms:8.1f} {result.failed:7d} {result.cpu_ms_per_request:7.2f}"
            f" {statements:>6} {result.rss_mib:8.0f} {result.pss_mib:8.0f}"
            f" {result.requests_per_second / ceiling_rate:10.1%}"
        )
    return "\n".join(lines)


def run(
    seconds: int,
    profile: Path | None,
    overrides: dict[str, str],
    only: str = "",
    receiver: Receiver | None = None,
    versus: Versus | None = None,
    size: str | None = None,
    connections: int = CONNECTIONS,
) -> dict[str, Any]:
    """Measures the paths on the demo clinic, or with ``size`` on bigdata's biggest clinic."""
    provider = choose_provider()
    if receiver is not None:
        overrides = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, **overrides}
    with (
        postgres(provider) as server,
        redis(provider) as cache,
        tempfile.TemporaryDirectory() as data,
    ):
        databases.prepare_template(server)
        database = asyncio.run(databases.clone(server, prefix="bench"))
        built = None
        if size:  # sealed with the keys of the server it starts
            built = asyncio.run(
                bigdata.build(database.owner_url, size, log=True, wrapper=canary.keyring())
            )
        if built is None:
            asyncio.run(seed_demo_database(database))
        live = LiveServer(database, None, cache.url, settings=overrides).start()
        try:
            assert live.serve is not None
            token = (
                live.token("bench", built.owner_email, DEFAULT_PASSWORD)
                if built
                else live.demo_token("bench")
            )
            clinic = clinic_of(live, token)
            paths = [path for path in hot_paths(clinic) if only in path.name]
            settings = Settings(
                # The server's settings; OTEL_* variables are its environment only.
                **{
                    key.removeprefix("VETIFY_").lower(): value
                    for key, value in overrides.items()
                    if key.startswith("VETIFY_")
                },
                _env_file=None,
                env=Environment.test,
                database_url=database.app_url,
                redis_url=cache.url,
                rate_limit_scale=1000,
                data_dir=Path(data),
                encryption_keys=canary.ENCRYPTION_KEYRING,  # as LiveServer gives the server
            )
            statements = asyncio.run(statements_per_request(settings, clinic, paths))
            os.environ["VETIFY_BENCH_THREADS"] = str(THREADS)
            os.environ["VETIFY_BENCH_BODY"] = json.dumps(
                appointment_body(clinic, dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
            )
            pid = live.serve.pid
            if versus is not None:
                reads = [path for path in paths if path.method == "GET"]
                return compare(live, database, cache.url, clinic, reads, seconds, versus)
            results = [
                measure(
                    path,
                    live.url,
                    pid,
                    seconds,
                    clinic.token,
                    statements[path.name],
                    profile,
                    connections,
                )
                for path in paths
            ]
            payload = httpx.get(
                live.url + paths[0].path, headers={"Authorization": f"Bearer {clinic.token}"}
            ).content
        finally:
            live.stop()
    with ceiling(payload) as (url, pid):
        bare = measure(
            HotPath("ceiling: bare FastAPI", "GET", "/api/v1/pets"),
            url,
            pid,
            seconds,
            connections=connections,
        )
    print(table([*results, bare], bare.requests_per_second))
    if receiver is not None:
        print(f"the OTLP receiver took {len(receiver.received())} spans")
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "seconds": seconds,
        "connections": connections,
        "cpus": os.cpu_count(),
        "size": size or "demo",
        "rows": built.rows if built else None,
        "paths": [asdict(result) for result in results],
        "ceiling": asdict(bare),
    }


@dataclass(frozen=True)
class Versus:
    """``--versus``: a second server, B, with these settings (beside A's ``--set``), measured
    in turn with A on the same database for ``rounds`` rounds."""

    overrides: dict[str, str]
    rounds: int


def compare(
    live: LiveServer,
    database: databases.Database,
    redis_url: str,
    clinic: Clinic,
    paths: list[HotPath],
    seconds: int,
    versus: Versus,
) -> dict[str, Any]:
    """A (``live``) against B, path by path, A B then B A in turn: on a shared machine whose
    speed drifts, only the ratio within a pair means much; the median ratio is the figure."""
    other = LiveServer(database, None, redis_url, settings=versus.overrides).start()
    try:
        assert live.serve is not None
        assert other.serve is not None
        pairs: dict[str, list[tuple[Result, Result]]] = {path.name: [] for path in paths}

        def one(server: LiveServer, path: HotPath) -> Result:
            assert server.serve is not None
            return measure(path, server.url, server.serve.pid, seconds, clinic.token)

        for round_ in range(versus.rounds):
            for path in paths:
                if round_ % 2 == 0:
                    a = one(live, path)
                    b = one(other, path)
                else:
                    b = one(other, path)
                    a = one(live, path)
                pairs[path.name].append((a, b))
                print(
                    f"round {round_ + 1} {path.name}: A {a.requests_per_second:.0f} req/s"
                    f" {a.cpu_ms_per_request:.2f} ms, B {b.requests_per_second:.0f} req/s"
                    f" {b.cpu_ms_per_request:.2f} ms",
                    flush=True,
                )
    finally:
        other.stop()
        live.stop()
    summary: dict[str, dict[str, Any]] = {}
    for name, runs in pairs.items():
        throughput = sorted(a.requests_per_second / b.requests_per_second for a, b in runs)
        cpu = sorted(a.cpu_ms_per_request / b.cpu_ms_per_request for a, b in runs)
        summary[name] = {
            "a_requests_per_second": statistics.median(a.requests_per_second for a, _ in runs),
            "b_requests_per_second": statistics.median(b.requests_per_second for _, b in runs),
            "throughput_a_over_b": throughput,
            "cpu_a_over_b": cpu,
        }
        print(
            f"{name}: A/B throughput median {statistics.median(throughput):.3f}"
            f" (from {throughput[0]:.3f} to {throughput[-1]:.3f}), CPU per request median"
            f" {statistics.median(cpu):.3f} (from {cpu[0]:.3f} to {cpu[-1]:.3f})"
        )
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "seconds": seconds,
        "rounds": versus.rounds,
        "b_settings": versus.overrides,
        "pairs": {name: [[asdict(a), asdict(b)] for a, b in runs] for name, runs in pairs.items()},
        "summary": summary,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20, help="each path's run (default 20)")
    parser.add_argument("--out", type=Path, default=REPORT)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="write py-spy's samples of the server per path to DIR (py-spy on PATH)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="VETIFY_NAME=VALUE",
        help="a setting of the measured server (a lever to compare), repeatable",
    )
    parser.add_argument("--only", default="", help="measure only the paths whose name has this")
    parser.add_argument(
        "--otlp-receiver",
        action="store_true",
        help="export the server's traces to a local OTLP/HTTP receiver (with OTEL_* --set)",
    )
    parser.add_argument(
        "--versus",
        action="append",
        metavar="NAME=VALUE",
        help="measure against a second server with this setting (repeatable; reads only): A/B",
    )
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds (default 5)")
    parser.add_argument(
        "--size",
        choices=sorted(bigdata.SIZES),
        help="measure bigdata's biggest clinic in a database of this size, not the demo clinic",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=CONNECTIONS,
        help=f"wrk's open connections (default {CONNECTIONS}; 1 for latency alone)",
    )
    arguments = parser.parse_args()
    overrides = dict(pair.split("=", 1) for pair in arguments.set)
    versus = None
    if arguments.versus is not None:
        versus = Versus(dict(pair.split("=", 1) for pair in arguments.versus), arguments.rounds)
    for tool in ["wrk", *(["py-spy"] if arguments.profile else [])]:
        if shutil.which(tool) is None:
            print(f"{tool} is not on PATH (wrk: apt-get install wrk; py-spy: pip)", file=sys.stderr)
            return 2
    with otlp_receiver() as receiver:
        result = run(
            arguments.seconds,
            arguments.profile,
            overrides,
            arguments.only,
            receiver if arguments.otlp_receiver else None,
            versus,
            arguments.size,
            arguments.connections,
        )
    result["settings"] = overrides
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
