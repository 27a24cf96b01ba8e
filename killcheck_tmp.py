"""python /tmp/killcheck.py KEY_PREFIX TEST...: does TEST fail with the mutant applied?"""
import sys
import pytest
from tests.mutation.mutants import mutants_of
from tests.mutation.worker import _apply
key, tests = sys.argv[1], sys.argv[2:]
(m,) = [m for m in mutants_of(key.split("::")[0]) if m.key == key]
print(m.diff)
class P:
    def pytest_sessionstart(self, session):
        self.restore = _apply(m)
code = pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests], plugins=[P()])
print("KILLED" if code == 1 else f"NOT KILLED ({code})")
