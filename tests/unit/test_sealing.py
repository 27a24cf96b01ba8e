"""Field-level encryption's primitives (app/kit/sealing.py, ADR 0028): a sealed value opens
only with its key and where it was sealed; its header cannot be changed; a keyring wraps with
its first key, unwraps with any, and a wrapped key opens only for its own scope and version."""

from __future__ import annotations

import base64
import io
import os
import uuid

import pytest

from app.keys import service as keys
from app.kit import sealing
from app.kit.sealing import AwsKms, Keyring, Unreadable
from app.settings import DEVELOPMENT_KEY_ID, Settings

ROW = uuid.uuid4()
AAD = sealing.field_aad("clinic", "customers.email", ROW)


def test_a_sealed_value_opens_with_its_key_and_where_it_was_sealed() -> None:
    key = sealing.new_data_key()
    sealed = sealing.seal(key, 7, b"ana@example.org", AAD)
    assert sealing.version_of(sealed) == 7
    assert sealing.unseal(key, sealed, AAD) == b"ana@example.org"
    assert b"ana" not in sealed
    elsewhere = [
        sealing.field_aad("other clinic", "customers.email", ROW),
        sealing.field_aad("clinic", "customers.phone", ROW),
        sealing.field_aad("clinic", "customers.email", uuid.uuid4()),
    ]
    for aad in elsewhere:
        with pytest.raises(Unreadable):
            sealing.unseal(key, sealed, aad)
    with pytest.raises(Unreadable):
        sealing.unseal(sealing.new_data_key(), sealed, AAD)


def test_a_sealed_values_header_and_body_cannot_be_altered() -> None:
    key = sealing.new_data_key()
    sealed = sealing.seal(key, 1, b"secret", AAD)
    other_version = sealed[:1] + (2).to_bytes(4, "big") + sealed[5:]
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    for altered in (other_version, flipped):
        with pytest.raises(Unreadable):
            sealing.unseal(key, altered, AAD)
    with pytest.raises(Unreadable, match="unknown format 9"):
        sealing.version_of(b"\x09" + sealed[1:])
    with pytest.raises(Unreadable, match="too short"):
        sealing.version_of(sealed[:32])
    assert len(sealed) == 33 + len(b"secret")  # header 5, nonce 12, tag 16


def test_a_keyring_wraps_with_its_first_key_and_unwraps_with_any() -> None:
    old, new = os.urandom(32), os.urandom(32)
    context = sealing.key_context("clinic", 1)
    data_key = sealing.new_data_key()
    kek_id, wrapped = Keyring.of({"old": old}).wrap(data_key, context)
    assert kek_id == "local:old"
    rotating = Keyring.of({"new": new, "old": old})
    assert rotating.active == "local:new"
    assert rotating.unwrap(kek_id, wrapped, context) == data_key
    assert rotating.wrap(data_key, context)[0] == "local:new"
    with pytest.raises(Unreadable, match="local:old is not in VETIFY_ENCRYPTION_KEYS"):
        Keyring.of({"new": new}).unwrap(kek_id, wrapped, context)
    for elsewhere in (sealing.key_context("other", 1), sealing.key_context("clinic", 2)):
        with pytest.raises(Unreadable):
            rotating.unwrap(kek_id, wrapped, elsewhere)
    with pytest.raises(Unreadable):
        rotating.unwrap("aws-kms:arn:aws:kms:eu-west-1:1:key/x", wrapped, context)


def test_the_settings_name_the_keys_that_wrap(monkeypatch: pytest.MonkeyPatch) -> None:
    # boto3 looks for credentials as it makes a client: these, not the instance's metadata.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unit-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-test")
    development = keys.wrapper_from(Settings())
    assert isinstance(development, Keyring)
    assert development.active == f"local:{DEVELOPMENT_KEY_ID}"
    ring = "k1:" + base64.b64encode(bytes(range(32))).decode()
    kms = keys.wrapper_from(
        Settings(kms_key_id="alias/vetify", kms_region="eu-west-1", encryption_keys=ring)
    )
    assert isinstance(kms, AwsKms)
    assert kms.key_id == "alias/vetify"
    assert kms.keyring is not None
    assert kms.keyring.keys == {"k1": bytes(range(32))}  # still unwraps what it wrapped
    alone = keys.wrapper_from(Settings(kms_key_id="alias/vetify", kms_region="eu-west-1"))
    assert isinstance(alone, AwsKms)
    assert alone.keyring is None  # not the development key beside a real KMS key


def test_a_process_without_keys_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "_wrapper", None)
    with pytest.raises(RuntimeError, match=r"keys.configure\(\) runs at start-up"):
        keys.wrapper()


def test_kms_refuses_a_key_wrapped_by_neither_it_nor_its_keyring() -> None:
    kms = AwsKms("alias/vetify", client=None)  # no call is made: refused before
    for kek_id in ("local:old", "vault:transit/vetify"):
        with pytest.raises(Unreadable, match="neither KMS's nor in the keyring"):
            kms.unwrap(kek_id, b"wrapped", sealing.key_context("clinic", 1))


SEGMENT = 16  # small segments, so a few bytes make several
HEADER = 28  # format, key version, salt, nonce prefix


def _sealed_stream(key: bytes, plaintext: bytes, aad: bytes = b"export") -> bytes:
    sink = io.BytesIO()
    sealing.seal_stream(key, 3, io.BytesIO(plaintext), sink, aad, segment=SEGMENT)
    return sink.getvalue()


def _opened(key: bytes, sealed: bytes, aad: bytes = b"export") -> bytes:
    sink = io.BytesIO()
    sealing.open_stream(key, io.BytesIO(sealed), sink, aad, segment=SEGMENT)
    return sink.getvalue()


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, 100])
def test_a_sealed_stream_opens_to_what_was_sealed_whatever_its_length(size: int) -> None:
    key, plaintext = sealing.new_data_key(), os.urandom(size)
    sealed = _sealed_stream(key, plaintext)
    assert sealing.stream_version(io.BytesIO(sealed)) == 3
    segments = max(1, -(-size // SEGMENT))  # an empty stream is one empty last segment
    assert len(sealed) == HEADER + size + 16 * segments
    assert _opened(key, sealed) == plaintext


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def test_a_sealed_stream_cut_reordered_or_altered_does_not_open() -> None:
    key, plaintext = sealing.new_data_key(), os.urandom(3 * SEGMENT + 5)
    sealed = _sealed_stream(key, plaintext)
    head, body = sealed[:HEADER], sealed[HEADER:]
    pieces = [body[i : i + SEGMENT + 16] for i in range(0, len(body), SEGMENT + 16)]
    assert len(pieces) == 4
    broken = {
        "cut at a segment's end": head + b"".join(pieces[:2]),
        "cut inside a segment": sealed[:-3],
        "a segment dropped": head + pieces[0] + b"".join(pieces[2:]),
        "two segments swapped": head + pieces[1] + pieces[0] + b"".join(pieces[2:]),
        "a segment repeated": head + pieces[0] + b"".join(pieces),
        "bytes added": sealed + b"\x00",
        "a byte flipped": flipped(sealed, 40),
        "another key version claimed": flipped(sealed, 4),
        "another salt": flipped(sealed, 12),
        "another nonce prefix": flipped(sealed, HEADER - 1),
        # The same bytes sealed again with the same key and data: another salt, another key.
        "another file's segments": head + _sealed_stream(key, plaintext)[HEADER:],
    }
    opened = []
    for what, stream in broken.items():
        try:
            _opened(key, stream)
        except Unreadable:
            continue
        opened.append(what)
    assert opened == []
    with pytest.raises(Unreadable):
        _opened(key, sealed, aad=b"another export")
    with pytest.raises(Unreadable):
        _opened(sealing.new_data_key(), sealed)
    for not_a_stream in (b"", b"\x02\x00", sealing.seal(key, 3, plaintext, b"export")):
        with pytest.raises(Unreadable):
            _opened(key, not_a_stream)
