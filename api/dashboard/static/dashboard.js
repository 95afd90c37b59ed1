// LocalFlow dashboard: the little that htmx attributes do not cover. No dependencies.
(function () {
  "use strict";

  function toast(message) {
    var box = document.getElementById("toast");
    if (!box) return;
    box.textContent = message;
    box.hidden = false;
    clearTimeout(box._timer);
    box._timer = setTimeout(function () { box.hidden = true; }, 8000);
  }

  // Errors htmx did not swap (401, 403, 404, 5xx): say what happened instead of nothing.
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var detail = "";
    try { detail = JSON.parse(xhr.responseText).detail || ""; } catch (e) { detail = ""; }
    if (xhr.status === 403) {
      detail = (detail || "Forbidden") + " — reload the page to get a fresh form token.";
    }
    toast("Error " + xhr.status + ": " + (detail || xhr.statusText || "request failed"));
  });
  document.addEventListener("htmx:sendError", function () {
    toast("The server did not answer. Is LocalFlow still running?");
  });

  // "Select all on this page" for bulk actions.
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("[data-select-all]")) return;
    var form = box.closest("form");
    if (!form) return;
    form.querySelectorAll('input[name="ids"]').forEach(function (item) {
      item.checked = box.checked;
    });
  });
})();
