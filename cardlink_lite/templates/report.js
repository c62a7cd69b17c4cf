(function () {
  "use strict";
  var device = document.getElementById("filter-device");
  var card = document.getElementById("filter-card");
  var status = document.getElementById("filter-status");
  function list(el, name) {
    try { return JSON.parse(el.getAttribute("data-" + name) || "[]"); } catch (e) { return []; }
  }
  function matches(el) {
    var d = device ? device.value : "", c = card ? card.value : "";
    if (d && el.hasAttribute("data-devices") && list(el, "devices").indexOf(d) < 0) return false;
    if (c && el.hasAttribute("data-cards") && list(el, "cards").indexOf(c) < 0) return false;
    return true;
  }
  function redrawLine() {
    var line = document.getElementById("trend-line");
    if (!line) return;
    var points = [];
    document.querySelectorAll("svg.trend g.run").forEach(function (g) {
      if (g.classList.contains("filtered-out")) return;
      points.push(g.getAttribute("data-point"));
    });
    line.setAttribute("points", points.join(" "));
  }
  function apply() {
    var runs = 0, shownRuns = 0, sessions = 0, shownSessions = 0;
    document.querySelectorAll("[data-devices], [data-cards]").forEach(function (el) {
      var keep = matches(el);
      el.classList.toggle("filtered-out", !keep);
      if (el.classList.contains("run-row")) { runs++; if (keep) shownRuns++; }
      if (el.classList.contains("session-row")) { sessions++; if (keep) shownSessions++; }
    });
    redrawLine();
    document.body.classList.toggle("filtering", !!((device && device.value) || (card && card.value)));
    if (status) {
      var d = device ? device.value : "", c = card ? card.value : "";
      status.textContent = (!d && !c) ? "Showing everything." :
        "Showing " + shownRuns + " of " + runs + " runs and " + shownSessions + " of " +
        sessions + " newest sessions" + (d ? " on device " + d : "") + (c ? " with card " + c : "") + ".";
    }
  }
  [device, card].forEach(function (el) { if (el) el.addEventListener("change", apply); });
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll("details").forEach(function (d) { d.setAttribute("open", ""); });
  });
  apply();
})();
