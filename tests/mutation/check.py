"""Does a test kill a mutant? `python -m tests.mutation.check KEY [pytest arguments]`

Runs pytest with the mutant KEY (as in reports/mutation.json or equivalent.toml) applied for
the whole session, e.g. to see a new test fail on the survivor it was written for.
"""

from __future__ import annotations

import sys

import pytest

from tests.mutation.mutants import mutants_of
from tests.mutation.worker import _apply


class _Mutated:
    def __init__(self, key: str) -> None:
        (self.mutant,) = [m for m in mutants_of(key.split("::")[0]) if m.key == key]

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        _apply(self.mutant)


def main(argv: list[str]) -> int:
    key, *arguments = argv
    plugin = _Mutated(key)
    print(plugin.mutant.diff)
    code = pytest.main(["-p", "no:randomly", "-p", "no:cacheprovider", *arguments], [plugin])
    print("killed" if code == pytest.ExitCode.TESTS_FAILED else f"not killed (pytest: {code})")
    return 0 if code == pytest.ExitCode.TESTS_FAILED else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
