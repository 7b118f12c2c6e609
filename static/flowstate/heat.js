// Heat map figures (templates/flowstate/_heat.html): show the data-heat text of the state
// or edge under the pointer or keyboard focus in #fs-heat-tip. No inline script: CSP-clean.
(function () {
  "use strict";
  function tip() { return document.getElementById("fs-heat-tip"); }
  function owner(node) {
    return node && node.closest ? node.closest(".flowstate-heat [data-heat]") : null;
  }
  function show(el) {
    var box = tip();
    if (!box) { return; }
    // Out of the diagram's sticky (stacking, scrolling) column, so nothing covers it.
    if (box.parentNode !== document.body) { document.body.appendChild(box); }
    box.textContent = el.getAttribute("data-heat");
    box.hidden = false;
    // Beside the element when there is room (the diagram stays visible), else below it.
    var r = el.getBoundingClientRect();
    var width = document.documentElement.clientWidth;
    var left = r.right + 10;
    var top = r.top;
    if (left + box.offsetWidth > width - 8) {
      left = Math.max(4, Math.min(r.left, width - box.offsetWidth - 8));
      top = r.bottom + 6;
    }
    if (top + box.offsetHeight > window.innerHeight) { top = Math.max(4, r.top - box.offsetHeight - 6); }
    box.style.left = left + "px";
    box.style.top = top + "px";
  }
  function hide() { var box = tip(); if (box) { box.hidden = true; } }
  document.addEventListener("mouseover", function (ev) {
    var el = owner(ev.target);
    if (el) { show(el); }
  });
  document.addEventListener("mouseout", function (ev) {
    var el = owner(ev.target);
    if (el && !el.contains(ev.relatedTarget)) { hide(); }
  });
  document.addEventListener("focusin", function (ev) {
    var el = owner(ev.target);
    if (el) { show(el); } else { hide(); }
  });
  document.addEventListener("focusout", hide);
  document.addEventListener("keydown", function (ev) { if (ev.key === "Escape") { hide(); } });
})();
