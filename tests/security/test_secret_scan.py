"""The secret scanner the security stage runs over the repository finds what it must: secrets
are planted in a scratch directory (built at run time, so this file holds none) and each is
reported by kind and place, never by value."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tools.secret_scan import VENDORED, repository_files, scan, unvendored

AWS_KEY = "AKIA" + "Z7QW3ERT5YUI9OPA"
PRIVATE_KEY = (
    "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n"
)
URL_CREDENTIAL = "Qm9" + "vZ2FzdHJvbmc4"


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("settings.py", f'AWS_ACCESS_KEY_ID = "{AWS_KEY}"\n', "AWS Access Key"),
        ("deploy.pem", PRIVATE_KEY, "Private Key"),
        (
            "compose.yml",
            f"DATABASE_URL: postgresql://vetify_app:{URL_CREDENTIAL}@db/vetify\n",
            "Basic Auth Credentials",
        ),
    ],
)
def test_planted_secrets_are_found(tmp_path: Path, name: str, content: str, kind: str) -> None:
    (tmp_path / name).write_text(content)
    result = scan([name], cwd=tmp_path)
    assert result.returncode == 1
    assert kind in result.stdout
    assert f"{name}:1" in result.stdout
    for secret in (AWS_KEY, "MIIEowIBAAKCAQEA", URL_CREDENTIAL):
        assert secret not in result.stdout + result.stderr


def test_a_justified_exemption_is_honoured(tmp_path: Path) -> None:
    (tmp_path / "clean.py").write_text(
        f'# pragma: allowlist nextline secret - documented example key\nKEY = "{AWS_KEY}"\n'
    )
    assert scan(["clean.py"], cwd=tmp_path).returncode == 0


def test_the_scan_covers_every_tracked_file() -> None:
    files = repository_files()
    assert {"app/settings.py", ".env.example", "README.md", "tox.ini"} <= set(files)


def test_a_vendored_file_is_skipped_only_while_unchanged(tmp_path: Path) -> None:
    [(name, _)] = VENDORED.items()
    assert unvendored([name, "README.md"]) == ["README.md"]
    copy = tmp_path / name
    copy.parent.mkdir(parents=True)
    copy.write_bytes((Path(__file__).resolve().parents[2] / name).read_bytes() + b"\n")
    assert unvendored([name], root=tmp_path) == [name]


def test_a_secret_in_any_share_of_a_split_scan_fails_it(tmp_path: Path) -> None:
    """The files are split across processes: a finding in any one of them fails the whole scan
    and is reported with the others' output."""
    names = [f"module_{index}.py" for index in range(9)]
    for index, name in enumerate(names):
        (tmp_path / name).write_text("VALUE = 1\n" * (index + 1))
    (tmp_path / names[4]).write_text(f'AWS_ACCESS_KEY_ID = "{AWS_KEY}"\n')
    result = scan(names, cwd=tmp_path)
    assert result.returncode == 1
    assert f"{names[4]}:1" in result.stdout
    assert AWS_KEY not in result.stdout
    assert scan([name for name in names if name != names[4]], cwd=tmp_path).returncode == 0
