"""A person's authenticator app, for tests: fresh TOTP codes without waiting half a minute.

The service accepts the current 30-second step and one either side, each at most once and in
increasing order. ``next_code`` hands out the next unused step that is still accepted (waiting
for the clock only when all three are spent), and never one that expires within a moment.
"""

from __future__ import annotations

import time

import pyotp

from app.auth.mfa import DRIFT_STEPS, STEP_SECONDS

_MARGIN = 2.0  # seconds: a code this close to leaving the window is not handed out


class Authenticator:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.totp = pyotp.TOTP(secret)
        self.last_step: int | None = None

    def next_code(self) -> str:
        while True:
            now = time.time()
            current = int(now // STEP_SECONDS)
            oldest = current - DRIFT_STEPS
            if now - current * STEP_SECONDS > STEP_SECONDS - _MARGIN:
                oldest += 1  # the oldest accepted step is about to drop out
            step = oldest if self.last_step is None else max(oldest, self.last_step + 1)
            if step <= current + DRIFT_STEPS:
                self.last_step = step
                return self.totp.at(step * STEP_SECONDS)
            time.sleep((current + 1) * STEP_SECONDS - now + 0.05)

    def code_at_offset(self, steps: int) -> str:
        """The code of the step ``steps`` away from now (outside the window when |steps| > 1),
        not so near a step's end that the window moves before the service checks it."""
        now = time.time()
        if now % STEP_SECONDS > STEP_SECONDS - _MARGIN:
            time.sleep(STEP_SECONDS - now % STEP_SECONDS + 0.05)
            now = time.time()
        return self.totp.at(now + steps * STEP_SECONDS)
