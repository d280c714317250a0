// Small enhancements; every page works without them.
(function () {
  "use strict";

  // ---------------------------------------------------------------- time zone
  // The viewer's zone, for the server to print every time on the viewer's clock
  // (tenants/middleware.py). Set on every page, the login page included, so the first
  // page after logging in is already right. URL-encoded: "/" is not safe in a cookie.
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    var wanted = "tz=" + encodeURIComponent(zone || "");
    var have = document.cookie.split("; ").filter(function (c) { return c.indexOf("tz=") === 0; })[0];
    if (zone && have !== wanted) {
      var secure = window.location.protocol === "https:" ? "; secure" : "";
      document.cookie = wanted + "; path=/; max-age=31536000; samesite=lax" + secure;
    }
  } catch (e) {
    // No Intl support: the server shows UTC.
  }

  // ---------------------------------------------------------------- toasts
  // Close buttons, and auto-dismiss (not for errors) that waits while the pointer or focus is on the toast.
  function armToast(toast) {
    if (toast.dataset.armed) return;
    toast.dataset.armed = "1";
    var close = toast.querySelector(".toast-close");
    if (close) close.addEventListener("click", function () { toast.remove(); });
    var after = parseInt(toast.dataset.dismissAfter || "0", 10);
    if (!after) return;
    var timer = null;
    function start() { timer = window.setTimeout(function () { toast.remove(); }, after); }
    function stop() { if (timer) window.clearTimeout(timer); timer = null; }
    toast.addEventListener("mouseenter", stop);
    toast.addEventListener("mouseleave", start);
    toast.addEventListener("focusin", stop);
    toast.addEventListener("focusout", start);
    start();
  }
  // Plain <p class="message"> swapped into #messages by other templates become toasts too.
  function adoptMessage(message) {
    message.classList.add("toast");
    message.classList.forEach(function (name) {
      if (name.indexOf("message-") === 0) message.classList.add("toast-" + name.slice(8));
    });
    if (!message.classList.contains("message-error")) message.dataset.dismissAfter = "8000";
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss message");
    close.textContent = "×";
    message.appendChild(close);
  }
  function armToasts() {
    document.querySelectorAll("#messages > .message:not(.toast)").forEach(adoptMessage);
    document.querySelectorAll(".toast").forEach(armToast);
  }

  // ---------------------------------------------------------------- run log
  // Follow a running run's log: stay at the bottom if the reader was at the bottom.
  var followLog = true;
  function atBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 24; }
  function scrollLog() {
    var log = document.getElementById("run-log");
    if (log && followLog) log.scrollTop = log.scrollHeight;
  }

  // ---------------------------------------------------------------- menus
  // <details> menus close on Escape and on a click elsewhere.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      menu.removeAttribute("open");
      var summary = menu.querySelector("summary");
      if (summary) summary.focus();
    });
  });
  document.addEventListener("click", function (event) {
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      if (!menu.contains(event.target)) menu.removeAttribute("open");
    });
  });

  // ---------------------------------------------------------------- filters
  // A filter form sends every field; leave the empty ones out so the pushed URL
  // (the back button, a shared link) reads ?status=failed, not ?schedule=&status=failed&...
  document.addEventListener("htmx:configRequest", function (event) {
    if (event.detail.verb !== "get" || !event.detail.elt.matches("form.filters")) return;
    var params = event.detail.parameters;
    var empty = [];
    for (var key in params) { if (params[key] === "") empty.push(key); }
    empty.forEach(function (key) { delete params[key]; });
  });

  document.addEventListener("DOMContentLoaded", function () {
    armToasts();
    var log = document.getElementById("run-log");
    if (log && log.dataset.follow) scrollLog();
  });
  document.addEventListener("htmx:beforeSwap", function () {
    var log = document.getElementById("run-log");
    followLog = !log || atBottom(log);
  });
  document.addEventListener("htmx:afterSettle", function () {
    armToasts();
    scrollLog();
  });
  document.addEventListener("htmx:oobAfterSwap", armToasts);
})();
