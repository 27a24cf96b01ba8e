"""The layout rules import-linter cannot see (ADR 0001): no imports inside functions in app/,
apart from the lazy imports of optional parts named here with their reason."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"

LAZY = {
    # boto3 is imported only when S3 storage is configured: the default needs no AWS SDK.
    ("kit/storage.py", "boto3"),
    ("kit/storage.py", "boto3.exceptions"),
    ("kit/storage.py", "boto3.s3.transfer"),
    ("kit/storage.py", "botocore.config"),
    ("kit/storage.py", "botocore.exceptions"),
    # boto3 again, only when a KMS key wraps the data keys (ADR 0028).
    ("keys/service.py", "boto3"),
    # botocore again, through its OpenTelemetry instrumentation: only when tracing is on.
    ("observability/tracing.py", "opentelemetry.instrumentation.botocore"),
    # sentry-sdk only where a DSN is set (error tracking is off by default).
    ("observability/errors.py", "sentry_sdk"),
    ("observability/errors.py", "sentry_sdk.integrations.asyncio"),
    ("observability/errors.py", "sentry_sdk.integrations.fastapi"),
    ("observability/errors.py", "sentry_sdk.integrations.logging"),
    ("observability/errors.py", "sentry_sdk.integrations.starlette"),
    # fixtures/ sits beside app/ in the source tree; only `vetify demo` seeds from it.
    ("cli.py", "fixtures.demo"),
}


def _imports_in_functions(path: Path) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    where = path.relative_to(APP).as_posix()
    for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                found |= {(where, alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                found.add((where, "." * node.level + (node.module or "")))
    return found


def test_no_imports_inside_functions_but_the_documented_lazy_ones() -> None:
    found = set().union(*(_imports_in_functions(p) for p in APP.rglob("*.py")))
    assert found - LAZY == set(), "import at the top of the module (or document it in LAZY)"
    # Each allowance is still needed (a stale one would hide a new import of the same name),
    # which also shows the finder sees imports inside functions.
    assert found >= LAZY
