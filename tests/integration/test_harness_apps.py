"""The harness starts one app again for tests with equal settings (tests/harness/plugin.py,
``_running``): what a test can change must not outlive it, and two apps a test runs at once
stay two."""

from __future__ import annotations

from argon2 import extract_parameters

from app.kit import crypto
from fixtures.factories import TEST_HASHING


async def test_equal_settings_start_the_same_app_again_with_fresh_state(configured_app):
    async with configured_app() as first:
        engine, limiter, storage = first.state.engine, first.state.limiter, first.state.storage
    async with configured_app() as second:
        assert second is first
        assert second.state.engine is not engine
        assert second.state.limiter is not limiter
        assert second.state.storage is not storage


async def test_two_apps_running_at_once_are_two_even_with_equal_settings(configured_app):
    async with configured_app() as one, configured_app() as other:
        assert one is not other
        assert one.state.engine is not other.state.engine


async def test_other_settings_make_another_app(configured_app):
    async with configured_app() as plain:
        pass
    async with configured_app(max_json_depth=7) as shallow:
        assert shallow is not plain
        assert shallow.state.settings.max_json_depth == 7


async def test_an_app_started_again_hashes_with_its_own_parameters(configured_app):
    """argon2id's parameters are the process's, set as an app starts: after an app with
    production's, the stage's app started again hashes cheaply again."""
    async with configured_app():
        pass
    async with configured_app(password_hash_time_cost=3, password_hash_memory_kib=64 * 1024):
        production = extract_parameters(crypto.hash_password("a password"))
    async with configured_app():
        stage = extract_parameters(crypto.hash_password("a password"))
    assert (production.time_cost, production.memory_cost) == (3, 64 * 1024)
    assert (stage.time_cost, stage.memory_cost) == (
        TEST_HASHING["time_cost"],
        TEST_HASHING["memory_cost"],
    )
