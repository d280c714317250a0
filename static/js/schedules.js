// Progressive enhancements for the schedule pages; every page works without this file.
(function () {
  "use strict";
  // Fields a strategy does not use are hidden only when scripts run (see schedules.css).
  document.documentElement.classList.add("js");

  // "Select all" for bulk actions, shown only when it can work.
  function wireSelectAll(root) {
    root.querySelectorAll("input.select-all").forEach(function (box) {
      box.hidden = false;
      box.addEventListener("change", function () {
        document.querySelectorAll('input[name="schedules"][form="bulk-form"]').forEach(function (pick) {
          pick.checked = box.checked;
        });
      });
    });
  }
  // Bulk actions ask first, naming the action and how many schedules it touches; with
  // none selected they ask nothing (the server answers "Select at least one schedule").
  // Without scripts the form posts at once and the answer reports on each schedule.
  document.addEventListener("htmx:confirm", function (event) {
    var form = event.detail.elt;
    if (!form.matches || !form.matches("form#bulk-form")) return;
    var count = document.querySelectorAll('input[name="schedules"][form="bulk-form"]:checked').length;
    var action = form.querySelector('select[name="action"]').value;
    var question = form.getAttribute("data-confirm-" + action);
    if (!count || !question) return;
    event.preventDefault();
    var text = question.replace("{count}", String(count)).replace(/\{s\}/g, count === 1 ? "" : "s");
    if (window.confirm(text)) event.detail.issueRequest(true);
  });

  // A settings block redrawn after a save stays open. Chromium closes an open
  // <details name> inserted while another of its group is open (htmx inserts the new
  // block before it removes the old one), so it is opened again once the swap settled.
  document.addEventListener("htmx:afterSettle", function () {
    document.querySelectorAll("details[data-keep-open]").forEach(function (details) {
      details.removeAttribute("data-keep-open");
      details.open = true;
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    wireSelectAll(document);
    // A page as loaded is already right; only later swaps need reopening.
    document.querySelectorAll("details[data-keep-open]").forEach(function (details) {
      details.removeAttribute("data-keep-open");
    });
  });
  document.addEventListener("htmx:afterSettle", function (event) { wireSelectAll(event.target); });
})();
