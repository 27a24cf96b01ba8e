"""detect-secrets over every file git tracks (and new files it does not ignore): any finding
fails. Exemptions are inline, one line each, with the reason beside them
(``# pragma: allowlist nextline secret - why``); there is no baseline to hide them in.
The one other exemption is a vendored third-party file that cannot carry a comment (JSON):
skipped only while its bytes are the published ones (``VENDORED``, by SHA-256).

Run by the security stage: ``python -m tests.tools.secret_scan``. Prints where a finding
is and its kind, never the secret.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Stripe's published example objects (stripe/openapi fixtures3.json, see fixtures/stripe):
# their placeholder values (`cs_test_...`, `..._secret_...`) look like secrets to the
# entropy and keyword plugins. Pinned by digest, so an edited copy is scanned again.
VENDORED = {
    "fixtures/stripe/fixtures3.json": (
        # pragma: allowlist nextline secret - a SHA-256 of a public file, not a secret
        "41486e14a5b930447f53ecc4e71e34e3184462ba3d18212a39d4a40f70eaba44"
    ),
}


def repository_files(root: Path = ROOT) -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (root / name).is_file()]


def unvendored(files: Sequence[str], root: Path = ROOT) -> list[str]:
    """``files`` less the vendored ones that still hash to their pinned digest."""

    def pristine(name: str) -> bool:
        digest = VENDORED.get(name)
        return (
            digest is not None and hashlib.sha256((root / name).read_bytes()).hexdigest() == digest
        )

    return [name for name in files if not pristine(name)]


def scan(files: Sequence[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """detect-secrets' own pre-commit entry point, with its default plugins and filters, over
    ``files`` split across the cores (one process took 10 s here, a quarter of it on the
    OpenAPI document): the largest files first, each to the least loaded process."""
    shares: list[list[str]] = [[] for _ in range(min(os.cpu_count() or 1, len(files)) or 1)]
    loads = [0] * len(shares)
    for name in sorted(files, key=lambda name: (cwd / name).stat().st_size, reverse=True):
        least = loads.index(min(loads))
        shares[least].append(name)
        loads[least] += (cwd / name).stat().st_size
    processes = [
        subprocess.Popen(  # noqa: S603 - our interpreter and the files named
            [sys.executable, "-m", "detect_secrets.pre_commit_hook", *share],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for share in shares
    ]
    outputs = [process.communicate()[0] for process in processes]
    failed = [process.returncode for process in processes if process.returncode]
    return subprocess.CompletedProcess(
        ["detect-secrets", *files], failed[0] if failed else 0, "".join(outputs), ""
    )


def main() -> int:
    files = unvendored(repository_files())
    result = scan(files)
    print(result.stdout + result.stderr, end="")
    if result.returncode == 0:
        print(f"detect-secrets: {len(files)} files, no secrets")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
