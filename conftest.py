import os

from hypothesis import settings

# Loaded here (not with `-p`) so that coverage is already measuring when the app is imported.
pytest_plugins = ["tests.harness.plugin", "pytester"]

# Pull requests replay the same examples every run (so their coverage is steady enough for the
# ratchet, and a failure reproduces), half Hypothesis' default of them: the pr set's budget
# (ADR 0018), every test and every strategy still run, fewer values drawn. The nightly run
# explores with random seeds, twenty times as many examples ("nightly") or the library's
# default (.ci/flakes' "random").
# No deadline: a per-example time limit is a timed assertion, and on a shared 2-core machine an
# example that once took 335 ms for a 200 ms deadline failed the unit stage as "flaky" (issue 17).
# Speed is measured by benchmarks instead.
settings.register_profile("pr", derandomize=True, max_examples=50, deadline=None)
settings.register_profile("nightly", max_examples=1000, deadline=None)
settings.register_profile("random", deadline=None)
settings.load_profile(os.environ.get("VETIFY_HYPOTHESIS_PROFILE", "pr"))
