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
  document.addEventListener("DOMContentLoaded", function () { wireSelectAll(document); });
  document.addEventListener("htmx:afterSettle", function (event) { wireSelectAll(event.target); });
})();
