"""The quotas a deployment configures (app/auth/quotas.py): each setting becomes the policy of
its name (the name a 429 and the RateLimit-Policy header give), scaled by
VETIFY_RATE_LIMIT_SCALE over its own window, and only log-in fails closed while Redis is away."""

from __future__ import annotations

import dataclasses

import pytest

from app.auth.quotas import Quotas
from app.settings import Settings

# field -> (the setting's name, its policy's name, a spec of its own)
POLICIES = {
    "anonymous": ("rate_limit_anonymous", "anonymous", "40/minute"),
    "user": ("rate_limit_user", "user", "42/minute"),
    "token": ("rate_limit_token", "token", "44/minute"),
    "login": ("rate_limit_login", "login", "46/hour"),
    "signup": ("rate_limit_signup", "signup", "48/hour"),
    "token_create": ("rate_limit_token_create", "token-create", "50/hour"),
    "upload": ("rate_limit_upload", "upload", "52/minute"),
    "password_reset": ("rate_limit_password_reset", "password-reset", "54/hour"),
    "password_reset_address": (
        "rate_limit_password_reset_address",
        "password-reset-address",
        "56/day",
    ),
    "verification_mail": ("rate_limit_verification_mail", "verification-mail", "58/hour"),
    "password_change": ("rate_limit_password_change", "password-change", "60/hour"),
}


@pytest.mark.mutation_targets("app/auth/quotas.py::Quotas.from_settings")
def test_each_setting_is_the_policy_of_its_name_scaled_and_only_login_fails_closed() -> None:
    settings = Settings(
        _env_file=None,
        rate_limit_scale=0.5,
        **{setting: spec for setting, _, spec in POLICIES.values()},
    )
    quotas = Quotas.from_settings(settings)
    assert {field.name for field in dataclasses.fields(Quotas)} == {*POLICIES, "scale"}
    assert quotas.scale == 0.5
    for field, (_, name, spec) in POLICIES.items():
        policy = getattr(quotas, field)
        amount, per = spec.split("/")
        assert policy.name == name
        assert (policy.item.amount, policy.item.GRANULARITY.name) == (int(amount) // 2, per)
        assert policy.fail_closed is (field == "login")
    clinic = quotas.clinic(600)
    assert (clinic.name, clinic.item.amount, clinic.item.GRANULARITY.name) == (
        "clinic",
        300,
        "minute",
    )
