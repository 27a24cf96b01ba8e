"""detect-secrets over every file git tracks (and new files it does not ignore): any finding
fails. Exemptions are inline, one line each, with the reason beside them
(``# pragma: allowlist nextline secret - why``); there is no baseline to hide them in.

Run by the security stage: ``python -m tests.harness.secret_scan``. Prints where a finding
is and its kind, never the secret.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def repository_files(root: Path = ROOT) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (root / name).is_file()]


def scan(files: Sequence[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """detect-secrets' own pre-commit entry point, with its default plugins and filters."""
    return subprocess.run(  # noqa: S603 - our interpreter and the files named
        [sys.executable, "-m", "detect_secrets.pre_commit_hook", *files],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def main() -> int:
    files = repository_files()
    result = scan(files)
    print(result.stdout + result.stderr, end="")
    if result.returncode == 0:
        print(f"detect-secrets: {len(files)} files, no secrets")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
