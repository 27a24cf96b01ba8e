# Loaded here (not with `-p`) so that coverage is already measuring when the app is imported.
pytest_plugins = ["tests.harness.plugin"]
