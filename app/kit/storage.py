"""Where uploaded files' bytes live: a local directory by default, or an S3-compatible bucket.

Keys are made here (:func:`new_key`: the clinic's id and a random UUID), never from anything a
client sent, and every backend refuses any other shape of key, so a file name can never become a
path. Uploads are first written to a staging file (:meth:`Storage.staging_file`), then handed
over whole with :meth:`Storage.put`: locally a rename within the same file system (atomic, so a
reader never sees half a file), on S3 an upload that only appears when complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Protocol

from anyio import to_thread
from fastapi import Depends, Request

from app.kit.problems import ServiceUnavailable
from app.settings import ConfigurationError, Settings, StorageBackend

_KEY = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
KEY_SHAPE = re.compile(rf"{_KEY.pattern}/{_KEY.pattern}")


class ObjectMissing(Exception):
    """The key names nothing in the store."""


class StorageUnavailable(ServiceUnavailable):
    slug, title = "storage-unavailable", "File storage unavailable"


def new_key(tenant_id: uuid.UUID) -> str:
    """``{clinic}/{random}``: scoped to the clinic, unguessable, unrelated to the file's name."""
    return f"{tenant_id}/{uuid.uuid4()}"


def _checked(key: str) -> str:
    if not KEY_SHAPE.fullmatch(key):
        raise ValueError(f"not a storage key: {key!r}")
    return key


class Storage(Protocol):
    staging_dir: Path

    async def put(self, key: str, staged: Path) -> None:
        """Store the staged file under ``key`` (the staged file is consumed)."""

    async def get(self, key: str, into: Path) -> None:
        """Copy the object to the local file ``into``; :class:`ObjectMissing` if absent."""

    async def delete(self, key: str) -> None:
        """Remove the object; absent is fine."""

    async def delete_clinic(self, clinic_id: uuid.UUID) -> int:
        """Remove every object of the clinic (every key under its id); returns how many."""

    async def keys_of(self, clinic_id: uuid.UUID) -> set[str]:
        """Every object's key of the clinic."""


def staging_file(storage: Storage) -> Path:
    """A new empty file in the storage's staging directory, only the service may read."""
    storage.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, name = tempfile.mkstemp(dir=storage.staging_dir, prefix="upload-")
    os.close(descriptor)
    return Path(name)


class LocalStorage:
    """Files under ``root/{clinic}/{uuid}``; staging in ``root/.staging`` (same file system)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.staging_dir = self.root / ".staging"

    def _path(self, key: str) -> Path:
        # Two hexadecimal UUIDs and one slash: no dot, no second slash, so never outside root.
        return self.root / _checked(key)

    async def put(self, key: str, staged: Path) -> None:
        target = self._path(key)

        def move() -> None:
            target.parent.mkdir(exist_ok=True, mode=0o700)
            with staged.open("rb") as written:
                os.fsync(written.fileno())
            os.replace(staged, target)

        await to_thread.run_sync(move)

    async def get(self, key: str, into: Path) -> None:
        source = self._path(key)
        try:
            await to_thread.run_sync(shutil.copyfile, source, into)
        except FileNotFoundError as exc:
            raise ObjectMissing(key) from exc

    async def delete(self, key: str) -> None:
        await to_thread.run_sync(lambda: self._path(key).unlink(missing_ok=True))

    async def delete_clinic(self, clinic_id: uuid.UUID) -> int:
        folder = self.root / str(uuid.UUID(str(clinic_id)))  # a UUID: never outside root

        def remove() -> int:
            found = [path for path in folder.glob("*") if path.is_file()]
            shutil.rmtree(folder, ignore_errors=True)
            return len(found)

        return await to_thread.run_sync(remove)

    async def keys_of(self, clinic_id: uuid.UUID) -> set[str]:
        folder = self.root / str(uuid.UUID(str(clinic_id)))
        return await to_thread.run_sync(
            lambda: {f"{folder.name}/{path.name}" for path in folder.glob("*") if path.is_file()}
        )


class S3Storage:
    """Objects in one bucket, keyed ``{clinic}/{uuid}``; boto3's blocking calls run in threads."""

    list_page = 1000
    """Keys listed a page at a time when a clinic's objects are deleted: S3's most, and the
    most one ``delete_objects`` takes."""

    def __init__(self, settings: Settings, staging_dir: Path) -> None:
        import boto3  # only when configured: the local default needs no AWS SDK at start-up
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        if settings.s3_bucket is None:  # Settings refuse this already; a hand-made one may not
            raise ConfigurationError({"s3_bucket": "the s3 storage backend needs a bucket"})
        self.bucket = settings.s3_bucket
        secret = settings.s3_secret_access_key
        key_id = settings.s3_access_key_id
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=key_id.get_secret_value() if key_id else None,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            # boto3's defaults (60 s per wait, five tries) held a request for minutes while S3
            # did not answer (tests/chaos/test_dependencies.py, S3 silent).
            config=Config(
                connect_timeout=settings.s3_timeout_seconds,
                read_timeout=settings.s3_timeout_seconds,
                retries={"mode": "standard", "total_max_attempts": 2},
            ),
        )
        # An upload's parts in the thread it runs in, which carries the request's context: in
        # s3transfer's own threads its calls were traced apart from the request, and logged
        # without it (tests/integration/test_tracing.py).
        self.transfer = TransferConfig(use_threads=False)
        self.staging_dir = staging_dir

    async def reachable(self) -> None:
        """The bucket answers (HEAD), with these credentials."""
        await to_thread.run_sync(lambda: self.client.head_bucket(Bucket=self.bucket))

    async def put(self, key: str, staged: Path) -> None:
        try:
            with _unavailable():
                await to_thread.run_sync(
                    lambda: self.client.upload_file(
                        str(staged), self.bucket, _checked(key), Config=self.transfer
                    )
                )
        finally:
            await discard(staged)

    async def get(self, key: str, into: Path) -> None:
        from botocore.exceptions import ClientError

        def download() -> None:
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=_checked(key))["Body"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                    raise ObjectMissing(key) from exc
                raise
            with body, into.open("wb") as target:
                shutil.copyfileobj(body, target, 1024 * 1024)

        with _unavailable():
            await to_thread.run_sync(download)

    async def delete(self, key: str) -> None:
        with _unavailable():
            await to_thread.run_sync(
                lambda: self.client.delete_object(Bucket=self.bucket, Key=_checked(key))
            )

    def _pages(self, clinic_id: uuid.UUID) -> Iterator[list[str]]:
        """The clinic's keys, a page at a time (at most what one delete_objects takes)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket,
            Prefix=f"{uuid.UUID(str(clinic_id))}/",
            PaginationConfig={"PageSize": self.list_page},
        )
        for page in pages:
            yield [item["Key"] for item in page.get("Contents", [])]

    async def keys_of(self, clinic_id: uuid.UUID) -> set[str]:
        with _unavailable():
            return await to_thread.run_sync(
                lambda: {key for page in self._pages(clinic_id) for key in page}
            )

    async def delete_clinic(self, clinic_id: uuid.UUID) -> int:
        def remove() -> int:
            removed = 0
            for page in self._pages(clinic_id):
                keys = [{"Key": key} for key in page]
                if keys:
                    self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                    )
                    removed += len(keys)
            return removed

        with _unavailable():
            return await to_thread.run_sync(remove)


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """S3 out of reach, timing out, or failing on its side, as a 503 with Retry-After naming the
    storage: as an ``OSError`` in the chain it was taken for the database's (ADR 0010)."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, S3UploadFailedError) as exc:
        raise StorageUnavailable("File storage is not answering; try again shortly.") from exc
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500 or status == 429:
            raise StorageUnavailable("File storage is not answering; try again shortly.") from exc
        raise


async def discard(path: Path) -> None:
    """Remove a staging or download copy (absent is fine)."""
    await to_thread.run_sync(lambda: path.unlink(missing_ok=True))


def storage_from(settings: Settings) -> Storage:
    if settings.storage_backend is StorageBackend.s3:
        return S3Storage(settings, settings.data_dir / "staging")
    return LocalStorage(settings.attachments_root)


async def app_storage(request: Request) -> Storage:
    """The app's storage (made at start-up), as a route's dependency: :data:`Store`."""
    storage: Storage = request.app.state.storage
    return storage


Store = Annotated[Storage, Depends(app_storage)]
