"""How a restore waits for PostgreSQL's replay: until it is done, or up to a bound."""

from __future__ import annotations

import pytest

from app.backup.repository import BackupError
from app.backup.restore import _until


def test_the_wait_asks_again_until_it_is_done() -> None:
    answers = iter([False, False, True])
    _until("recovery", lambda: next(answers), seconds=5)
    assert next(answers, "asked no more") == "asked no more"


def test_the_wait_gives_up_past_its_bound_naming_what_it_waited_for() -> None:
    with pytest.raises(BackupError, match="recovery still running after 0 s"):
        _until("recovery", lambda: False, seconds=0)
