// headscale web admin: small enhancements only; every page works without this file.
"use strict";

// "Copy" buttons next to a key shown once (hidden unless this script runs).
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button.copy[data-copy]").forEach(function (b) {
    var target = document.getElementById(b.dataset.copy);
    if (!target || !navigator.clipboard) return;
    b.hidden = false;
    b.addEventListener("click", function () {
      navigator.clipboard.writeText(target.textContent).then(function () {
        b.textContent = "Copied";
      });
    });
  });
});

// Online state, live: every few seconds the badges marked data-live-node and the overview's
// online count follow the server (GET live.json, with this session's cookie). Without this
// script the page shows the state as it was when loaded.
var LIVE_EVERY_MS = 5000;

function applyLive(state) {
  document.querySelectorAll("[data-live-node]").forEach(function (b) {
    // only online nodes are listed; the rest are offline when the list is complete
    var on = state.nodes[b.dataset.liveNode] === true;
    if (!on && !state.complete) return;
    b.classList.toggle("on", on);
    b.classList.toggle("off", !on);
    b.textContent = on ? "online" : "offline";
  });
  var count = document.getElementById("count-online");
  if (count) count.textContent = String(state.online);
}

document.addEventListener("DOMContentLoaded", function () {
  if (!document.querySelector("[data-live-node], #count-online")) return;
  var url = document.body.dataset.base + "/live.json";
  var timer = setInterval(function () {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok || r.headers.get("Content-Type") !== "application/json") throw r;
        return r.json();
      })
      .then(applyLive)
      .catch(function () { clearInterval(timer); }); // signed out or gone: stop asking
  }, LIVE_EVERY_MS);
});
