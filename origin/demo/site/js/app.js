// Edgeshield demo origin: shows the origin's request counters on the index page.
// The counters endpoint is served with Cache-Control: no-store, so an edge in
// front of the origin always forwards it.
(function () {
  "use strict";

  var el = document.getElementById("counts");
  if (!el) {
    return;
  }

  function render(data) {
    var lines = ["total " + data.total];
    Object.keys(data.paths || {}).sort().forEach(function (p) {
      lines.push(p + " " + data.paths[p]);
    });
    el.textContent = lines.join("\n");
  }

  function refresh() {
    fetch("/__origin/counts", { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) {
          throw new Error("HTTP " + r.status);
        }
        return r.json();
      })
      .then(render)
      .catch(function (err) {
        el.textContent = "counters unavailable: " + err.message;
      });
  }

  refresh();
  window.setInterval(refresh, 5000);
})();
