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
