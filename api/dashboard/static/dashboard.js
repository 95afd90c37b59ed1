// LocalFlow dashboard: the little that htmx attributes do not cover. No dependencies beyond the
// vendored htmx and idiomorph.
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

  function number(n) { return Number(n).toLocaleString("en-US"); }

  // Live regions are morphed (hx-swap="morph"), not replaced: what the user did to the page
  // stays. A tick, an opened <details>, a field being typed in belong to the user, not to the
  // server's copy; an element marked data-client-owned (a progress line, a message) is left
  // as the script last drew it.
  if (window.Idiomorph) {
    var callbacks = window.Idiomorph.defaults.callbacks;
    callbacks.beforeAttributeUpdated = function (name, element) {
      if (name === "checked" && element.type === "checkbox") return false;
      if (name === "open" && element.tagName === "DETAILS") return false;
      // (not ignoreActiveValue: it also freezes the text of a focused button)
      if (name === "value" && element === document.activeElement &&
          element.matches("input, textarea")) return false;
      return true;
    };
    callbacks.beforeNodeMorphed = function (oldNode) {
      if (oldNode.nodeType === 1 && oldNode.hasAttribute("data-client-owned")) return false;
      return true;
    };
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

  // The task list's poll waits while a bulk action runs: the rows are changing under it, and
  // its buttons stay disabled until the action is done.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    if (!elt || !elt.matches || !elt.matches("[data-live]")) return;
    if (elt.id === "tasks-live" && document.querySelector("[data-bulk-running]")) {
      event.preventDefault();
    }
    // The queues page waits while a limit box is being edited or holds a refused value
    // (its error beside it): the poll would put the saved limit back under the user.
    if (elt.id === "queues-live" && limitBeingEdited(elt)) event.preventDefault();
  });

  function limitBeingEdited(root) {
    return Array.prototype.some.call(root.querySelectorAll("[data-limit-input]"), function (box) {
      return box === document.activeElement || box.value !== box.getAttribute("data-saved");
    });
  }

  // -- The throughput chart: a tap (or click) on it says that minute's numbers ------------
  // Hover titles do nothing on a touch screen. The bars' numbers are in the SVG's
  // data-buckets ([start, succeeded, failed] each); the readout line is the page's, not the
  // server's (data-client-owned), so the 2-second refresh leaves it as the tap left it.
  function two(n) { return (n < 10 ? "0" : "") + n; }

  document.addEventListener("click", function (event) {
    var svg = event.target.closest && event.target.closest("svg.chart[data-buckets]");
    var out = document.getElementById("chart-readout");
    if (!svg || !out) return;
    var buckets = JSON.parse(svg.getAttribute("data-buckets"));
    if (!buckets.length) return;
    var box = svg.getBoundingClientRect();
    var i = Math.floor((event.clientX - box.left) / box.width * buckets.length);
    i = Math.max(0, Math.min(buckets.length - 1, i));
    // A tap is a fingertip wide: take the busiest bar within a few of the one under it.
    var reach = Math.max(1, Math.round(buckets.length / 60));
    for (var j = Math.max(0, i - reach); j <= Math.min(buckets.length - 1, i + reach); j++) {
      if (buckets[j][1] + buckets[j][2] > buckets[i][1] + buckets[i][2]) i = j;
    }
    var b = buckets[i];
    var at = new Date(b[0] * 1000);
    var minutes = Number(svg.getAttribute("data-bucket-seconds") || 60) / 60;
    out.textContent = two(at.getUTCHours()) + ":" + two(at.getUTCMinutes()) + " UTC" +
      (minutes > 1 ? " (" + minutes + " minutes)" : "") + ": " + number(b[1]) +
      " succeeded, " + number(b[2]) + " failed";
    out.setAttribute("data-i", String(i));
  });

  // -- A running task's output so far (_live_output.html) ---------------------------------
  // Like a terminal: a stream shown at its end stays at its end as lines come in; one the user
  // scrolled up in stays where it is; text selected in it is left alone until deselected.
  function liveTails() { return document.querySelectorAll("pre.live-tail"); }
  function atEnd(pre) { return pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4; }

  document.addEventListener("htmx:beforeRequest", function (event) {
    if (!event.detail.elt || event.detail.elt.id !== "task-live") return;
    var selection = window.getSelection();
    liveTails().forEach(function (pre) {
      var selecting = selection && !selection.isCollapsed && selection.rangeCount &&
        pre.contains(selection.getRangeAt(0).commonAncestorContainer);
      if (selecting) pre.setAttribute("data-client-owned", "");
      else pre.removeAttribute("data-client-owned");
    });
  });
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (!event.detail.target || event.detail.target.id !== "task-live") return;
    liveTails().forEach(function (pre) { pre._followEnd = atEnd(pre); });
  });
  function followEnds() {
    liveTails().forEach(function (pre) {
      if (pre._followEnd !== false) pre.scrollTop = pre.scrollHeight;
      pre._followEnd = undefined;
    });
  }
  document.addEventListener("htmx:afterSettle", followEnds);
  document.addEventListener("DOMContentLoaded", followEnds);

  // -- Bulk actions on the task list -----------------------------------------------------
  var VERBS = {retry: "Retry", cancel: "Cancel", "delete": "Delete"};
  var WARNINGS = {
    cancel: "Queued ones are cancelled now; running ones are asked to stop.",
    "delete": "Their attempts go too. This cannot be undone.",
  };

  function bulkStatus(form, text) {
    var box = form.querySelector("#bulk-status");
    if (box) box.textContent = text;
  }

  function bulkButtons(form, disabled) {
    form.querySelectorAll(".bulk-buttons button").forEach(function (b) { b.disabled = disabled; });
  }

  // How many tasks the pressed button would touch: the ticked rows, or the whole filter.
  function bulkCount(form) {
    var matching = form.querySelector('input[name="scope"][value="matching"]');
    if (matching && matching.checked) {
      if (form.dataset.matching === "") return {n: null, total: null};  // still being counted
      var total = Number(form.dataset.matching);
      var cap = Number(form.dataset.max || total);
      // A lower bound ("10,000+": past the count's cap): a whole batch, of more than that.
      if (form.dataset.atLeast === "1") return {n: cap, total: total, more: true};
      return {n: Math.min(total, cap), total: total};
    }
    var n = form.querySelectorAll('input[name="ids"]:checked').length;
    return {n: n, total: n};
  }

  document.addEventListener("htmx:confirm", function (event) {
    var form = event.detail.elt;
    if (!form || form.id !== "bulk-form") return;
    var submitter = event.detail.triggeringEvent && event.detail.triggeringEvent.submitter;
    var action = submitter ? submitter.value : "";
    var count = bulkCount(form);
    event.preventDefault();
    if (count.n === 0) {
      bulkStatus(form, "Tick at least one task first.");
      return;
    }
    if (WARNINGS[action]) {
      var what = count.n === null ? "every task matching this filter (still being counted)"
        : count.n === count.total && !count.more
        ? number(count.n) + " task" + (count.n === 1 ? "" : "s")
        : number(count.n) + " of the " + number(count.total) + (count.more ? "+" : "") +
          " matching tasks (at most " +
          number(count.n) + " at a time)";
      if (!window.confirm(VERBS[action] + " " + what + "? " + WARNINGS[action])) {
        bulkStatus(form, "Nothing was changed.");
        return;
      }
    }
    bulkStatus(form, VERBS[action] + ": starting…");
    bulkButtons(form, true);
    event.detail.issueRequest(true);
  });

  // The progress line the server sends while a bulk action runs keeps the buttons disabled;
  // any other answer (a message, an error) gives them back.
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt && event.detail.elt.closest && event.detail.elt.closest("#bulk-form");
    if (!form) return;
    bulkButtons(form, !!document.querySelector("[data-bulk-running]"));
  });

  // A form sent back with mistakes: every one is marked; put the cursor in the first, opening
  // the section it sits in.
  document.addEventListener("htmx:afterSettle", function (event) {
    var root = event.target;
    if (!root || !root.querySelector) return;
    var form = root.tagName === "FORM" ? root : null;
    if (!form || !form.matches("#submit-form, #schedule-form")) return;
    var bad = form.querySelector('[aria-invalid="true"]');
    if (!bad) return;
    var section = bad.closest("details");
    if (section) section.open = true;
    bad.focus();
  });

  // -- Session expiry: keep what was typed ---------------------------------------------
  // A request refused for want of a session (401) sends the page to the login form, which
  // comes back here afterwards. What is typed in the page's forms is kept in this tab's
  // sessionStorage until then, and put back on return.
  var KEPT = "localflow:typed:" + location.pathname + location.search;
  var FORMS = "#submit-form, #schedule-form";

  document.addEventListener("htmx:beforeOnLoad", function (event) {
    if (event.detail.xhr.status !== 401) return;
    var kept = [];
    document.querySelectorAll(FORMS).forEach(function (form) {
      var fields = {};
      Array.prototype.forEach.call(form.elements, function (el) {
        if (!el.name || el.name === "_csrf_token" || el.type === "submit") return;
        if (el.type === "checkbox" || el.type === "radio") {
          if (el.checked) fields[el.name + "=" + el.value] = true;
          else if (el.type === "checkbox") fields[el.name + "=" + el.value] = false;
        } else {
          fields[el.name] = el.value;
        }
      });
      kept.push({form: form.id, fields: fields});
    });
    try { sessionStorage.setItem(KEPT, JSON.stringify(kept)); } catch (e) { /* full: lost */ }
  });

  function restoreTyped() {
    var kept;
    try { kept = JSON.parse(sessionStorage.getItem(KEPT) || "null"); } catch (e) { kept = null; }
    sessionStorage.removeItem(KEPT);
    if (!kept || !kept.length) return;
    kept.forEach(function (entry) {
      var form = document.getElementById(entry.form);
      if (!form) return;
      Array.prototype.forEach.call(form.elements, function (el) {
        if (!el.name || el.name === "_csrf_token") return;
        if (el.type === "checkbox" || el.type === "radio") {
          var key = el.name + "=" + el.value;
          if (key in entry.fields) el.checked = entry.fields[key];
        } else if (el.name in entry.fields) {
          el.value = entry.fields[el.name];
        }
      });
      form.querySelectorAll("input, textarea").forEach(function (el) {
        el.dispatchEvent(new Event("input", {bubbles: true}));  // the cron preview follows
      });
      var note = document.createElement("p");
      note.className = "notice";
      note.setAttribute("role", "status");
      note.textContent = "Restored what you had typed before your session expired. " +
        "Nothing was sent: check it and submit again.";
      form.insertBefore(note, form.firstChild);
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", restoreTyped);
  } else {
    restoreTyped();
  }

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
