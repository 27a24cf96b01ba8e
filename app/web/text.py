"""Every word the pages show, in one catalogue, so that a translation can follow.

Templates call ``t("key")`` (or ``t("key", name=...)`` for a message with fields); a unit test
holds the templates and this catalogue to each other: no key missing, none unused.
"""

from __future__ import annotations

from typing import Final

from app.appointments.models import Status
from app.auth.models import Role
from app.pets.models import Sex, Species

MESSAGES: Final[dict[str, str]] = {
    "app.name": "Vetify",
    "app.skip": "Skip to main content",
    "app.nav": "Main",
    "app.signed_in_as": "Signed in as {name}, {role}",
    "app.read_only": (
        "This clinic's subscription has lapsed: you can read and export everything, but not"
        " change it until billing is settled."
    ),
    "nav.today": "Today",
    "nav.clients": "Clients",
    "nav.book": "Book",
    "nav.logout": "Log out",
    "form.errors_title": "There is a problem",
    "form.errors_intro": "Correct the fields below:",
    "form.optional": "optional",
    "login.title": "Log in",
    "login.email": "Email address",
    "login.password": "Password",  # pragma: allowlist secret (a label)
    "login.code": "Authentication code",
    "login.code_hint": "From your authenticator app, or one of your recovery codes.",
    "login.code_needed": "Enter the code from your authenticator app to finish logging in.",
    "login.submit": "Log in",
    "login.logged_out": "You have logged out.",
    "login.opened": "Your clinic is open, with its trial begun. Log in to start.",
    "login.no_account": "New to Vetify?",
    "login.sign_up": "Sign your clinic up",
    "signup.title": "Sign your clinic up",
    "signup.clinic_name": "Clinic's name",
    "signup.timezone": "Time zone",
    "signup.timezone_hint": "Where the clinic is, e.g. Europe/Lisbon: its book keeps that time.",
    "signup.owner_name": "Your name",
    "signup.email": "Your email address",
    "signup.email_hint": "If you already have a Vetify account, use it and its password.",
    "signup.password": "Password",  # pragma: allowlist secret (a label)
    # pragma: allowlist nextline secret - a hint, not a password
    "signup.password_hint": "At least 12 characters; a passphrase of a few words is best.",
    "signup.submit": "Open the clinic",
    "today.title": "Today",
    "today.heading": "Today, {date}",
    "today.none": "No appointments today.",
    "today.time": "Time",
    "today.patient": "Patient",
    "today.client": "Client",
    "today.vet": "Vet",
    "today.room": "Room",
    "today.status": "Status",
    "today.alerts": "Alerts",
    "today.arrived": "Arrived",
    "today.open_book": "Open the book for today",
    "book.title": "Appointment book",
    "book.heading": "Book, {date}",
    "book.days": "Other days",
    "book.before": "Previous day",
    "book.after": "Next day",
    "book.none": "No appointments on this day.",
    "book.updated": "The book is updated.",
    "book.actions": "Next step",
    "book.step_for": "{step}: {name} at {time}",
    "book.move": "Reschedule",
    "book.move_for": "Reschedule {name} at {time}",
    "book.new_title": "Book an appointment for {name}",
    "book.edit_title": "Reschedule the appointment",
    "book.now_at": "Now booked for {when}.",
    "book.date": "Date",
    "book.time": "Time",
    "book.time_hint": "In the clinic's time ({zone}), e.g. 09:30.",
    "book.vet": "Vet",
    "book.room": "Room",
    "book.type": "Kind of appointment",
    "book.reason": "Reason",
    "book.save": "Book",
    "book.clash_title": "That time is taken",
    "step.confirmed": "Confirm",
    "step.checked_in": "Check in",
    "step.in_exam": "Start consultation",
    "step.completed": "Done",
    "step.cancelled": "Cancel",
    "step.no_show": "No-show",
    "pet.book": "Book an appointment",
    "clients.title": "Clients",
    "clients.search": "Search clients",
    "clients.search_hint": "Part of a name, or a whole email address or phone number.",
    "clients.search_submit": "Search",
    "clients.new": "Add a client",
    "clients.none": "No clients match.",
    "clients.found": "{count} clients shown.",
    "clients.more": "More clients",
    "clients.name": "Name",
    "clients.email": "Email",
    "clients.phone": "Phone",
    "client.new_title": "Add a client",
    "client.first_name": "First name",
    "client.last_name": "Last name",
    "client.email": "Email address",
    "client.phone": "Phone",
    "client.phone_hint": "International format, e.g. +351912345678.",
    "client.address_line1": "Address",
    "client.address_line2": "Address, line 2",
    "client.city": "Town or city",
    "client.postcode": "Postcode",
    "client.country": "Country code",
    "client.country_hint": "Two letters, e.g. PT.",
    "client.consent": "May we contact this client by",
    "client.consent_email": "Email",
    "client.consent_whatsapp": "WhatsApp",
    "client.consent_sms": "Text message",
    "client.save": "Save client",
    "client.contact": "Contact",
    "client.consents": "Consent",
    "client.consent_given": "given",
    "client.consent_refused": "refused",
    "client.consent_unknown": "not asked",
    "client.pets": "Pets",
    "client.no_pets": "No pets yet.",
    "client.add_pet": "Add a pet",
    "pet.new_title": "Add a pet for {name}",
    "pet.name": "Name",
    "pet.species": "Species",
    "pet.breed": "Breed",
    "pet.sex": "Sex",
    "pet.neutered": "Neutered",
    "pet.date_of_birth": "Date of birth",
    "pet.microchip": "Microchip number",
    "pet.alerts": "Alerts",
    "pet.alerts_hint": "One per line, e.g. Bites when muzzled.",
    "pet.save": "Save pet",
    "pet.deceased": "Deceased",
    "pet.owner": "Owner",
    "pet.born": "Born",
    "pet.weights": "Weight history",
    "pet.no_weights": "No weights recorded.",
    "pet.weight_chart": "Weight of {name} over time, in kilograms",
    "pet.weight_date": "Date",
    "pet.weight_kg": "Weight (kg)",
    "pet.yes": "Yes",
    "pet.no": "No",
    "error.title": "{title}",
    "error.reference": "Reference: {request_id}",
    "error.home": "Go to today's page",
}

# The names the pages show for the values of the domain's enumerations.
VALUES: Final[dict[object, str]] = {
    **{status: status.value.replace("_", " ").capitalize() for status in Status},
    **{role: role.value.replace("_", " ") for role in Role},
    **{species: species.value.capitalize() for species in Species},
    **{sex: sex.value.capitalize() for sex in Sex},
}


def t(key: str, /, **fields: object) -> str:
    """The text for ``key``, its ``{fields}`` filled (escaped by the template, not here)."""
    message = MESSAGES[key]
    return message.format(**fields) if fields else message


def name_of(value: object) -> str:
    """How the pages name one of the domain's values (a status, a role, a species)."""
    return VALUES.get(value, str(value))
