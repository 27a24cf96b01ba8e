// Vetify's pages work without this file; with it, htmx requests carry the session's CSRF
// token, and what htmx swaps in is announced to screen readers and keeps the keyboard's place.
(function () {
  "use strict";
  function token() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : null;
  }
  document.addEventListener("htmx:configRequest", function (event) {
    var value = token();
    if (value) {
      event.detail.headers["X-CSRF-Token"] = value;
    }
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    var swapped = target && target.isConnected ? target : document.querySelector("[data-announce]");
    var message = swapped && swapped.getAttribute("data-announce");
    var announcer = document.getElementById("announcer");
    if (message && announcer) {
      // Cleared first, so that the same message twice is still read out.
      announcer.textContent = "";
      window.setTimeout(function () { announcer.textContent = message; }, 50);
    }
  });
  // An error summary takes the focus, so that a keyboard or screen reader user hears it first.
  document.addEventListener("DOMContentLoaded", function () {
    var summary = document.getElementById("error-summary");
    if (summary) {
      summary.focus();
    }
  });
})();
