// The source form shows only the fields of the chosen kind; without JavaScript both groups show.
(function () {
  "use strict";
  function arm(form) {
    var kind = form.querySelector("select[name=kind]");
    if (!kind) return;
    function show() {
      form.querySelectorAll("[data-kinds]").forEach(function (group) {
        group.hidden = group.dataset.kinds.split(" ").indexOf(kind.value) < 0;
      });
    }
    kind.addEventListener("change", show);
    show();
  }
  document.querySelectorAll("form.source-form").forEach(arm);
})();
