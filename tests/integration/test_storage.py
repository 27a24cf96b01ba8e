"""The storage backends keep the same promises: one suite, run against each (local, S3).

S3 is moto's server on a local port, spoken to by boto3 over HTTP, as a real bucket would be.
"""

from __future__ import annotations

import http.server
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db.embedded import free_port
from app.kit.storage import (
    ObjectMissing,
    S3Storage,
    Storage,
    StorageUnavailable,
    new_key,
    staging_file,
    storage_from,
)
from app.settings import Settings
from tests.harness.plugin import s3_settings
from tests.harness.threaded import serve_in_thread


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, settings: Settings) -> Storage:
    if request.param == "s3":
        server = request.getfixturevalue("s3")
        settings = s3_settings(settings, server, f"files-{uuid.uuid4().hex[:12]}")
    return storage_from(settings)


def _staged(storage: Storage, content: bytes) -> Path:
    staged = staging_file(storage)
    staged.write_bytes(content)
    return staged


async def test_what_is_put_is_what_is_got(storage: Storage, tmp_path: Path) -> None:
    key = new_key(uuid.uuid4())
    content = b"\x89PNG" + bytes(range(256)) * 1000
    staged = _staged(storage, content)

    await storage.put(key, staged)
    await storage.get(key, tmp_path / "copy")

    assert (tmp_path / "copy").read_bytes() == content
    assert not staged.exists(), "the staged file is consumed"
    assert list(storage.staging_dir.iterdir()) == []


async def test_a_missing_or_deleted_object_is_reported_as_missing(
    storage: Storage, tmp_path: Path
) -> None:
    key = new_key(uuid.uuid4())
    with pytest.raises(ObjectMissing):
        await storage.get(key, tmp_path / "copy")
    await storage.put(key, _staged(storage, b"content"))

    await storage.delete(key)
    await storage.delete(key)  # deleting twice is fine

    with pytest.raises(ObjectMissing):
        await storage.get(key, tmp_path / "copy")


async def test_keys_of_two_clinics_never_collide(storage: Storage, tmp_path: Path) -> None:
    ours, theirs = new_key(uuid.uuid4()), new_key(uuid.uuid4())
    await storage.put(ours, _staged(storage, b"ours"))
    await storage.put(theirs, _staged(storage, b"theirs"))

    await storage.get(ours, tmp_path / "ours")

    assert (tmp_path / "ours").read_bytes() == b"ours"
    assert ours.split("/")[0] != theirs.split("/")[0]


async def test_a_clinics_objects_are_listed_and_deleted_and_none_of_another(
    storage: Storage, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(S3Storage, "list_page", 2)  # several pages of S3's listing
    leaving, staying = uuid.uuid4(), uuid.uuid4()
    theirs = new_key(staying)
    await storage.put(theirs, _staged(storage, b"theirs"))
    keys = {new_key(leaving) for _ in range(5)}
    for n, key in enumerate(sorted(keys)):
        await storage.put(key, _staged(storage, b"%d" % n))

    assert await storage.keys_of(leaving) == keys
    assert await storage.keys_of(staying) == {theirs}
    assert await storage.delete_clinic(leaving) == 5
    assert await storage.delete_clinic(leaving) == 0  # gone already: nothing to do
    assert await storage.keys_of(leaving) == set()

    await storage.get(theirs, tmp_path / "theirs")
    assert (tmp_path / "theirs").read_bytes() == b"theirs"


# Fixed ids (not uuid4()): every pytest-xdist worker must collect the same test names.
A, B = uuid.UUID(int=0xA), uuid.UUID(int=0xB)


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        "/etc/passwd",
        f"{A}/../../{B}",
        f"{A}/{B}/..",
        "x-ray.png",
        f"{A}",
        f"{A}/{B}\0",
    ],
)
async def test_anything_but_a_key_made_by_new_key_is_refused(
    storage: Storage, key: str, tmp_path: Path
) -> None:
    staged = _staged(storage, b"content")
    with pytest.raises(ValueError, match="not a storage key"):
        await storage.put(key, staged)
    with pytest.raises(ValueError, match="not a storage key"):
        await storage.get(key, tmp_path / "copy")
    with pytest.raises(ValueError, match="not a storage key"):
        await storage.delete(key)


async def test_local_files_live_under_the_root_by_clinic(settings: Settings) -> None:
    storage = storage_from(settings)
    clinic = uuid.uuid4()
    key = new_key(clinic)

    await storage.put(key, _staged(storage, b"content"))

    root = settings.attachments_root
    assert (root / str(clinic)).is_dir()
    assert [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()] == [key]


async def test_s3_objects_are_keyed_by_clinic(settings: Settings, s3) -> None:
    bucket = f"files-{uuid.uuid4().hex[:12]}"
    storage = storage_from(s3_settings(settings, s3, bucket))
    key = new_key(uuid.uuid4())

    await storage.put(key, _staged(storage, b"content"))

    listed = s3.client().list_objects_v2(Bucket=bucket)
    assert [item["Key"] for item in listed["Contents"]] == [key]


async def test_an_s3_failure_other_than_a_missing_object_is_not_taken_for_one(
    settings: Settings, s3, tmp_path: Path
) -> None:
    from botocore.exceptions import ClientError

    storage = storage_from(s3_settings(settings, s3, f"files-{uuid.uuid4().hex[:12]}"))
    storage.bucket = "no-such-bucket"  # type: ignore[attr-defined]

    with pytest.raises(ClientError) as raised:
        await storage.get(new_key(uuid.uuid4()), tmp_path / "copy")
    assert not isinstance(raised.value, ObjectMissing)


class _Failing(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint failing on its side (``status``: 503 SlowDown by default) to everything,
    in S3's error shape."""

    status = 503

    def _fail(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
        self.send_response(self.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _fail

    def log_message(self, *args: object) -> None:  # quiet: the test reads the answers
        pass


@pytest.fixture
def failing_s3(request: pytest.FixtureRequest) -> Iterator[str]:
    status = getattr(request, "param", 503)
    handler = type("_FailingWith", (_Failing,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    with serve_in_thread(server, "failing-s3"):
        yield f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("answer", ["nothing listens", "503 from S3"])
async def test_s3_out_of_reach_or_failing_is_storage_unavailable(
    settings: Settings, s3, answer: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A 503 with Retry-After naming the storage, within the S3 timeout (at most two tries),
    never the database's 503 nor a 500 (tests/chaos/test_dependencies.py found both)."""
    endpoint = (
        f"http://127.0.0.1:{free_port()}"
        if answer == "nothing listens"
        else request.getfixturevalue("failing_s3")
    )
    configured = s3_settings(settings, s3, f"files-{uuid.uuid4().hex[:12]}").model_copy(
        update={"s3_endpoint_url": endpoint, "s3_timeout_seconds": 2}
    )
    storage = storage_from(configured)
    key = new_key(uuid.uuid4())
    for attempt in (
        lambda: storage.put(key, _staged(storage, b"content")),
        lambda: storage.get(key, tmp_path / "copy"),
        lambda: storage.delete(key),
    ):
        with pytest.raises(StorageUnavailable) as raised:
            await attempt()
        assert raised.value.status == 503
        assert raised.value.slug == "storage-unavailable"
        assert raised.value.headers == {"Retry-After": "5"}


@pytest.mark.parametrize("failing_s3", [500, 429], indirect=True)
async def test_s3_failing_on_its_side_or_throttling_is_storage_unavailable(
    settings: Settings, s3, failing_s3: str, tmp_path: Path
) -> None:
    """Any 5xx and 429 are S3's trouble, not a fault of the request: retry later."""
    configured = s3_settings(settings, s3, f"files-{uuid.uuid4().hex[:12]}").model_copy(
        update={"s3_endpoint_url": failing_s3, "s3_timeout_seconds": 2}
    )
    storage = storage_from(configured)
    with pytest.raises(StorageUnavailable):
        await storage.get(new_key(uuid.uuid4()), tmp_path / "copy")
