import os

from hypothesis import settings

# Loaded here (not with `-p`) so that coverage is already measuring when the app is imported.
pytest_plugins = ["tests.harness.plugin", "pytester"]

# Pull requests replay the same examples every run (so their coverage is steady enough for the
# ratchet, and a failure reproduces); the nightly run explores with random seeds, more examples
# ("nightly") or the pr set's number of them (.ci/flakes' "random").
# No deadline: a per-example time limit is a timed assertion, and on a shared 2-core machine an
# example that once took 335 ms for a 200 ms deadline failed the unit stage as "flaky" (issue 17).
# Speed is measured by benchmarks instead.
settings.register_profile("pr", derandomize=True, deadline=None)
settings.register_profile("nightly", max_examples=1000, deadline=None)
settings.register_profile("random", deadline=None)
settings.load_profile(os.environ.get("VETIFY_HYPOTHESIS_PROFILE", "pr"))
