"""A fake Stripe for tests, speaking Stripe's wire format, built from Stripe's own objects.

* ``events``: Stripe's example objects (``official``), builders of subscriptions, invoices,
  checkout sessions and event envelopes, and Stripe-looking ids.
* ``signing``: ``Stripe-Signature`` headers (``sign``, ``sign_many``) and signed deliveries.
* ``forms``: Stripe's bracket-notation form bodies decoded into nested dicts and lists.
* ``server``: ``FakeStripe``, the HTTP server the real SDK talks to, and ``fake_stripe()``.
"""
