// Rivet live updates: listen to the server's event stream and patch the page in place.
// The pages work without this script (they refresh themselves); it only makes them live.
(function () {
  "use strict";
  if (!window.EventSource) return;
  var badge = document.getElementById("live");
  var machinePage = document.getElementById("machine");
  var machineID = machinePage ? machinePage.getAttribute("data-id") : "";
  var refetching = false;

  function setCounts(b) {
    var total = document.getElementById("total");
    if (total) total.textContent = b.total;
    document.querySelectorAll(".counts .n[data-state]").forEach(function (el) {
      el.textContent = b.counts[el.getAttribute("data-state")] || 0;
    });
  }

  // newTile adds a machine that registered after the page loaded, when the grid shows
  // the whole fleet (unfiltered, one page).
  function newTile(u) {
    var grid = document.getElementById("grid");
    if (!grid || grid.getAttribute("data-append") !== "1" || u.gone) return null;
    var t = document.createElement("a");
    t.id = u.id;
    t.href = "/status/machines/" + encodeURIComponent(u.id);
    t.className = "t";
    grid.appendChild(t);
    return t;
  }

  function patchTile(u) {
    var t = document.getElementById(u.id) || newTile(u);
    if (!t || !t.classList.contains("t")) return;
    if (u.gone) { t.remove(); return; }
    t.className = "t " + u.state;
    t.title = u.title;
    var bar = t.querySelector("i");
    if (u.w < 0) { if (bar) bar.remove(); return; }
    if (!bar) { bar = document.createElement("i"); t.appendChild(bar); }
    bar.className = "w" + u.w;
  }

  // The machine page is re-rendered by the server and swapped in: one code path.
  function refetchMachine() {
    if (refetching) return;
    refetching = true;
    fetch(location.href, { credentials: "same-origin" }).then(function (r) {
      return r.ok ? r.text() : null;
    }).then(function (html) {
      refetching = false;
      if (!html) return;
      var doc = new DOMParser().parseFromString(html, "text/html");
      var fresh = doc.getElementById("main");
      if (fresh) document.getElementById("main").replaceWith(fresh);
    }).catch(function () { refetching = false; });
  }

  var es = new EventSource("/status/events" + (machineID ? "?machine=" + encodeURIComponent(machineID) : ""));
  es.onopen = function () { if (badge) badge.hidden = false; };
  es.onerror = function () { if (badge) badge.hidden = true; };
  es.addEventListener("machines", function (ev) {
    var b = JSON.parse(ev.data);
    if (b.reload) { location.reload(); return; }
    setCounts(b);
    b.machines.forEach(function (u) {
      patchTile(u);
      if (u.id === machineID) refetchMachine();
    });
  });
})();
