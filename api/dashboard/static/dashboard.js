// workqueue dashboard: live updates without a reload. No library, no build step.
(function () {
  "use strict";
  var FINAL = ["SUCCESS", "FAILURE", "REVOKED"];

  // Parts marked data-refresh="<seconds>" are read again from the server
  // (?fragment=1) while the tab is visible: new and changed tasks, queue
  // depths, workers appear without a reload.
  document.querySelectorAll("[data-refresh]").forEach(function (box) {
    var seconds = parseFloat(box.getAttribute("data-refresh")) || 5;
    var busy = false;
    function refresh() {
      if (document.hidden || busy) { return; }
      busy = true;
      var url = new URL(window.location.href);
      url.searchParams.set("fragment", "1");
      fetch(url.toString(), { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); return null; }  // signed out: to sign-in
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== undefined) {
            box.innerHTML = html;
            box.setAttribute("data-updated", String(Date.now()));
          }
        })
        .catch(function () { /* keep what is shown; the next turn tries again */ })
        .then(function () { busy = false; });
    }
    window.setInterval(refresh, seconds * 1000);
  });

  // A task page that is not final follows its task over Server-Sent Events,
  // and reloads once when it is, to show the result and the actions.
  var live = document.querySelector("[data-events]");
  if (live && window.EventSource) {
    var source = new EventSource(live.getAttribute("data-events"));
    var badge = document.getElementById("state");
    var bar = document.getElementById("progress");
    var label = document.getElementById("progress-label");
    source.addEventListener("state", function (event) {
      var view = JSON.parse(event.data);
      if (badge) { badge.textContent = view.state; badge.className = "state " + view.state; }
      var p = view.progress;
      if (bar && p && typeof p.total === "number" && p.total > 0) {
        var done = typeof p.elapsed === "number" ? p.elapsed : (typeof p.current === "number" ? p.current : 0);
        bar.max = p.total;
        bar.value = Math.min(done, p.total);
        bar.hidden = false;
        if (label) {
          label.textContent = Math.round(100 * bar.value / p.total) + "% (" + (Math.round(done * 10) / 10) + " of " + p.total + ")";
        }
      }
      if (FINAL.indexOf(view.state) >= 0) {
        source.close();
        if (bar && !bar.hidden && view.state === "SUCCESS") {
          bar.value = bar.max;
          if (label) { label.textContent = "done"; }
        }
        // A moment to see it done, then the page again with the result and the actions.
        window.setTimeout(function () { window.location.reload(); }, 1000);
      }
    });
    source.onerror = function () {
      // Refused (too many streams) or ended: fall back to reloading now and then.
      if (source.readyState === EventSource.CLOSED) { window.setTimeout(function () { window.location.reload(); }, 3000); }
    };
  }

  // Actions that change many tasks, or stop one, ask first.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
})();
