"""A local S3 (and KMS): moto's server on a free port, spoken to over real HTTP by boto3 (no
patching)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from app.db.embedded import free_port

REGION = "eu-west-1"
ACCESS_KEY = "testing-key-id"
# pragma: allowlist nextline secret - moto's fake S3 takes any key: a placeholder
SECRET_KEY = "testing-secret"


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def client(self, service: str = "s3") -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def new_bucket(self, name: str) -> str:
        self.client().create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        return name


@contextmanager
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
