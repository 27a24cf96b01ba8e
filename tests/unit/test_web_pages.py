"""The web app's parts that need no server: its words, its vendored files, where a log-in may
send the browser, how a form is validated, and how a clinic writes times and numbers."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import FormData

from app.customers.schemas import CustomerIn
from app.pets.schemas import PetIn
from app.web import forms, text
from app.web.errors import safe_next
from app.web.pages import STATIC, TEMPLATES, Clinic

WEB = Path(text.__file__).parent
CALLS = re.compile(r"""\bt\(\s*["']([\w.]+)["'](?!\s*~)""")
PREFIXES = re.compile(r"""\bt\(\s*["']([\w.]+)["']\s*~""")


def _sources() -> list[str]:
    code = [p for p in WEB.glob("*.py") if p.name != "text.py"]
    return [p.read_text() for p in [*TEMPLATES.rglob("*.html"), *code]]


def test_every_word_a_page_asks_for_is_in_the_catalogue_and_none_is_unused() -> None:
    sources = _sources()
    asked = {key for source in sources for key in CALLS.findall(source)}
    prefixes = {prefix for source in sources for prefix in PREFIXES.findall(source)}
    assert sorted(asked - text.MESSAGES.keys()) == []
    unused = [
        key
        for key in text.MESSAGES
        if key not in asked and not any(key.startswith(prefix) for prefix in prefixes)
    ]
    assert unused == []


def test_no_page_writes_words_of_its_own_outside_the_catalogue() -> None:
    """Text between tags is a call to ``t``, a value, or punctuation: never English typed in."""
    for template in TEMPLATES.rglob("*.html"):
        source = re.sub(r"{#.*?#}|{%.*?%}|{{.*?}}", "", template.read_text(), flags=re.S)
        source = re.sub(r"<(script|style)\b.*?</\1>", "", source, flags=re.S)
        source = re.sub(r"""[\w-]+=("[^"]*"|'[^']*')""", "", source)  # a macro's attributes
        words = [w for w in re.findall(r">([^<]+)<", source) if re.search(r"[A-Za-z]{2}", w)]
        assert words == [], f"{template.name}: {words}"


def test_vendored_files_are_the_pinned_ones() -> None:
    pinned = tomllib.loads((STATIC / "VENDORED.toml").read_text())
    assert pinned, "nothing is pinned"
    for name, entry in pinned.items():
        digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()
        assert digest == entry["sha256"], f"{name} is not {entry['package']}'s {entry['source']}"
    ours = {"vetify.css", "vetify.js", "VENDORED.toml"}
    assert {p.name for p in STATIC.iterdir()} == ours | pinned.keys()


@given(st.text(max_size=60) | st.sampled_from(["//evil.example", "/\\evil", "https://x.y/"]))
def test_after_log_in_the_browser_stays_on_this_site(target: str) -> None:
    went = safe_next(target)
    parts = urlsplit(went)
    assert went.startswith("/")
    assert not went.startswith("//")
    assert "\\" not in went
    assert not parts.scheme
    assert not parts.netloc


def test_a_path_of_this_site_is_kept() -> None:
    assert safe_next("/clients?q=Rex") == "/clients?q=Rex"
    assert safe_next(None) == "/"


def test_a_form_is_held_to_the_apis_rules_with_its_messages() -> None:
    sent = FormData([("first_name", " Ana "), ("last_name", ""), ("email", "not an address")])
    errors = forms.validate(CustomerIn, forms.fields(sent, ("first_name", "last_name", "email")))
    assert isinstance(errors, dict)
    assert set(errors) == {"last_name", "email"}  # blank is missing; what was typed is stripped
    assert "email" in errors["email"].lower()


def test_a_forms_lines_and_boxes_become_the_bodys_list_and_booleans() -> None:
    sent = {
        "customer_id": "01a252d3-7a09-746a-8e24-56e55bacb21f",
        "name": "Rex",
        "species": "dog",
        "neutered": forms.checked(FormData([("neutered", "true")]), "neutered"),
        "alerts": ["Bites", "Diabetic"],
    }
    pet = forms.validate(PetIn, sent)
    assert isinstance(pet, PetIn)
    assert pet.neutered is True
    assert pet.alerts == ["Bites", "Diabetic"]
    too_many = forms.validate(PetIn, {**sent, "alerts": ["x" * 500]})
    assert isinstance(too_many, dict)
    assert set(too_many) == {"alerts"}  # a list's item is named by its list


def test_a_clinic_shows_times_in_its_zone_and_numbers_in_its_country() -> None:
    berlin = Clinic(name="A", timezone="Europe/Berlin", country="DE")
    moment = dt.datetime(2026, 7, 1, 10, 30, tzinfo=dt.UTC)
    assert berlin.time(moment) == "12:30"
    assert berlin.number(Decimal("1234.5")) == "1.234,50"
    unknown = Clinic(name="B", timezone="UTC", country="BR")  # no English locale for it
    assert unknown.number(Decimal("1234.5")) == "1,234.50"
    assert unknown.date(dt.date(2026, 7, 1)) == "Jul 1, 2026"
