import os

from hypothesis import settings

# Loaded here (not with `-p`) so that coverage is already measuring when the app is imported.
pytest_plugins = ["tests.harness.plugin"]

# Pull requests replay the same examples every run (so their coverage is steady enough for the
# ratchet, and a failure reproduces); the nightly run explores with random seeds.
settings.register_profile("pr", derandomize=True)
settings.register_profile("nightly", max_examples=1000)
settings.load_profile(os.environ.get("VETIFY_HYPOTHESIS_PROFILE", "pr"))
