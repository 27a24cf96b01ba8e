"""File kinds from bytes, safe names, Content-Disposition, clamd replies: pure functions."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.kit import clamd
from app.kit.files import ALLOWED, MAX_NAME, content_disposition, safe_filename, sniff
from fixtures import files

KINDS = st.sampled_from(ALLOWED)
DISPOSITION = re.compile(r'attachment; filename="[ -~]+"; filename\*=UTF-8\'\'[A-Za-z0-9%._~-]+')


@pytest.mark.parametrize(
    ("content", "media_type"),
    [
        (files.PNG, "image/png"),
        (files.JPEG, "image/jpeg"),
        (files.GIF, "image/gif"),
        (files.WEBP, "image/webp"),
        (files.PDF, "application/pdf"),
        (files.DICOM, "application/dicom"),
        (files.HTML, None),
        (files.SVG, None),
        (files.ELF, None),
        (files.EXE, None),
        (files.zip_of("a.png", files.PNG), None),
        (b"RIFF\0\0\0\0WAVEfmt ", None),
        (b"\0" * 128 + b"DICX", None),
        (b"", None),
    ],
)
def test_the_kind_is_read_from_the_first_bytes(content: bytes, media_type: str | None) -> None:
    kind = sniff(content[:132])
    assert (kind.media_type if kind else None) == media_type


@given(name=st.text(max_size=600), kind=KINDS)
def test_a_safe_name_is_one_segment_of_visible_nfc_text_with_the_kinds_extension(
    name: str, kind
) -> None:
    safe = safe_filename(name, kind)

    assert 0 < len(safe) <= MAX_NAME
    assert "/" not in safe
    assert "\\" not in safe
    assert safe not in {".", ".."}
    assert not any(unicodedata.category(c).startswith("C") for c in safe)
    assert unicodedata.is_normalized("NFC", safe)
    assert safe.lower().endswith((kind.extension, *kind.also))


@given(name=st.text(min_size=1, max_size=200), kind=KINDS)
def test_content_disposition_is_one_ascii_header_that_carries_the_exact_name(
    name: str, kind
) -> None:
    safe = safe_filename(name, kind)
    header = content_disposition(safe)

    assert DISPOSITION.fullmatch(header), header
    assert unquote(header.split("filename*=UTF-8''")[1]) == safe


def test_a_name_keeps_its_own_spelling_of_the_extension_or_gets_the_sniffed_one() -> None:
    png, jpeg = ALLOWED[0], ALLOWED[1]
    assert safe_filename("Photo.JPEG", jpeg) == "Photo.JPEG"
    assert safe_filename("scan.html", png) == "scan.html.png"
    assert safe_filename(None, png) == "attachment.png"
    assert safe_filename(" ../..", png) == "attachment.png"


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("stream: OK", clamd.Verdict(clean=True)),
        ("stream: Win.Test.EICAR_HDB-1 FOUND", clamd.Verdict(False, "Win.Test.EICAR_HDB-1")),
    ],
)
def test_clamd_verdicts(reply: str, verdict: clamd.Verdict) -> None:
    assert clamd._verdict(reply) == verdict


@pytest.mark.parametrize("reply", ["INSTREAM size limit exceeded. ERROR", "", "stream: "])
def test_anything_but_a_verdict_from_clamd_means_the_scanner_is_unavailable(reply: str) -> None:
    with pytest.raises(clamd.ScannerUnavailable):
        clamd._verdict(reply)


@pytest.mark.parametrize(
    ("name", "header"),
    [
        (
            "Relatório final.pdf",
            'attachment; filename="Relatorio final.pdf";'
            " filename*=UTF-8''Relat%C3%B3rio%20final.pdf",
        ),
        (
            'a"b\\c;d.png',
            "attachment; filename=\"a_b_c_d.png\"; filename*=UTF-8''a%22b%5Cc%3Bd.png",
        ),
        ("日本", "attachment; filename=\"attachment\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC"),
        ("X-ray.png", "attachment; filename=\"X-ray.png\"; filename*=UTF-8''X-ray.png"),
    ],
)
def test_the_ascii_name_is_the_name_as_near_as_ascii_gets(name: str, header: str) -> None:
    assert content_disposition(name) == header


def test_what_clamd_says_is_kept_to_200_characters() -> None:
    signature = "S" * 300
    assert clamd._verdict(f"stream: {signature} FOUND") == clamd.Verdict(False, "S" * 200)
    with pytest.raises(clamd.ScannerUnavailable) as raised:
        clamd._verdict("E" * 300)
    assert str(raised.value) == f"clamd answered {'E' * 200!r}"


@pytest.mark.parametrize(
    ("sent", "safe"),
    [
        # Windows' reserved characters, a bidi override, line and paragraph separators, a
        # private-use, an unassigned and a lone surrogate code point: all dropped, nothing added.
        ('a<b>c:d"e|f?g*h\u202ei\u2028j\u2029k\ue000l\u0378m\ud800n.png', "abcdefghijklmn.png"),
        ("C:\\Users\\ana\\scan.png", "scan.png"),
        (" ..  my \t scan .. .", "my scan.png"),
        ("report.v2.png", "report.v2.png"),
        (". .", "attachment.png"),
        ("XRAY..png", "XRAY.png"),  # dots between the stem and its extension go
        ("..png", "png.png"),  # a hidden file's leading dots go
        ("a" * 300 + ".png", "a" * (MAX_NAME - 4) + ".png"),
    ],
)
def test_a_safe_name_exactly(sent: str, safe: str) -> None:
    assert safe_filename(sent, ALLOWED[0]) == safe


@pytest.mark.parametrize(
    ("head", "media_type"),
    [
        (b"GIF87a" + b"\0" * 10, "image/gif"),
        (b"\0" * 128 + b"DICM" + b"more of the file", "application/dicom"),
    ],
)
def test_every_signature_is_known_by_its_bytes(head: bytes, media_type: str) -> None:
    kind = sniff(head)
    assert kind is not None
    assert kind.media_type == media_type
