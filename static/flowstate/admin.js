/* flowstate admin: small enhancements on top of server-rendered pages (every page works
   without them). Loaded from the admin's static folder, no inline script (CSP-clean).

   1. Live refresh: pausing it is remembered per browser (localStorage), so a paused
      operator stays paused from page to page until they resume.
   2. State diagrams: zoom (buttons, Ctrl + wheel), pan (drag, or the scrollbars), fit,
      actual size, and expand to the whole window (Escape closes). The view survives the
      diagram's live refresh, which replaces the element. */
(function () {
  "use strict";

  var LIVE_KEY = "flowstate.live";
  var MIN = 0.2;
  var MAX = 4;
  var STEP = 1.25;
  var LEGIBLE = 0.75; // below this scale edge labels get hard to read: scroll instead
  var views = {}; // diagram dom id -> {scale, expanded, left, top}

  function store() {
    try {
      return window.localStorage;
    } catch (e) {
      return null; // storage disabled: live refresh simply is not remembered
    }
  }

  // -- 1. live refresh ---------------------------------------------------------------

  document.addEventListener("click", function (ev) {
    var link = ev.target.closest ? ev.target.closest("a.fs-live") : null;
    var s = store();
    if (link && s) {
      // The toggle leads to the other mode.
      s.setItem(LIVE_KEY, link.classList.contains("fs-live-on") ? "paused" : "live");
    }
  });

  function keepPaused() {
    var s = store();
    var live = document.querySelector("a.fs-live.fs-live-on");
    if (s && live && s.getItem(LIVE_KEY) === "paused") {
      window.location.replace(live.href); // the same view, paused
      return true;
    }
    return false;
  }

  // -- 2. diagrams -------------------------------------------------------------------

  function natural(svg) {
    var box = svg.viewBox && svg.viewBox.baseVal;
    var w = svg.width.baseVal.value || (box && box.width) || 1;
    var h = svg.height.baseVal.value || (box && box.height) || 1;
    return { w: w, h: h };
  }

  function setup(fig) {
    var box = fig.querySelector(".flowstate-diagram-svg");
    var svg = box ? box.querySelector("svg") : null;
    var tools = fig.querySelector(".flowstate-diagram-tools");
    if (!svg || !tools || fig.getAttribute("data-zoom") === "on" || !box.clientWidth) {
      return; // nothing to zoom, done already, or folded away (set up when unfolded)
    }
    fig.setAttribute("data-zoom", "on");
    tools.hidden = false;
    var size = natural(svg);
    var label = tools.querySelector(".flowstate-diagram-scale");
    var expand = tools.querySelector('[data-diagram="expand"]');
    var view = views[fig.id] || (views[fig.id] = {});

    function fit(legible) {
      // The box grows with the diagram up to its max-height: fit into that, not into
      // the height it has right now.
      var most = parseFloat(window.getComputedStyle(box).maxHeight);
      var w = box.clientWidth / size.w;
      var h = (isNaN(most) ? box.clientHeight : most) / size.h;
      var s = Math.min(1, w, h);
      // Fitting a tall diagram into a short box makes it illegible: fit the width only.
      return legible ? Math.max(s, Math.min(w, LEGIBLE, 1)) : s;
    }

    function apply(scale) {
      view.scale = Math.min(MAX, Math.max(MIN, scale));
      svg.style.width = size.w * view.scale + "px";
      svg.style.height = size.h * view.scale + "px";
      if (label) {
        label.textContent = Math.round(view.scale * 100) + "%";
      }
    }

    function zoom(factor) {
      // Keep the centre of the visible part where it is.
      var cx = (box.scrollLeft + box.clientWidth / 2) / view.scale;
      var cy = (box.scrollTop + box.clientHeight / 2) / view.scale;
      apply(view.scale * factor);
      box.scrollLeft = cx * view.scale - box.clientWidth / 2;
      box.scrollTop = cy * view.scale - box.clientHeight / 2;
    }

    function setExpanded(on) {
      view.expanded = on;
      fig.classList.toggle("is-expanded", on);
      document.documentElement.classList.toggle("fs-diagram-open", on);
      if (expand) {
        expand.setAttribute("aria-pressed", on ? "true" : "false");
        expand.textContent = on ? "Close" : "Expand";
      }
      apply(fit(false));
    }

    tools.addEventListener("click", function (ev) {
      var button = ev.target.closest ? ev.target.closest("[data-diagram]") : null;
      if (!button) {
        return;
      }
      var what = button.getAttribute("data-diagram");
      if (what === "in") {
        zoom(STEP);
      } else if (what === "out") {
        zoom(1 / STEP);
      } else if (what === "fit") {
        apply(fit(false));
      } else if (what === "actual") {
        zoom(1 / view.scale);
      } else if (what === "expand") {
        setExpanded(!view.expanded);
      }
    });

    box.addEventListener(
      "wheel",
      function (ev) {
        if (ev.ctrlKey || ev.metaKey) {
          ev.preventDefault();
          zoom(ev.deltaY < 0 ? STEP : 1 / STEP);
        }
      },
      { passive: false }
    );

    // Drag to pan; a drag does not click the state it started on.
    var drag = null;
    box.addEventListener("pointerdown", function (ev) {
      if (ev.button !== 0) {
        return;
      }
      drag = { x: ev.clientX, y: ev.clientY, left: box.scrollLeft, top: box.scrollTop, moved: false };
    });
    box.addEventListener("pointermove", function (ev) {
      if (!drag) {
        return;
      }
      var dx = ev.clientX - drag.x;
      var dy = ev.clientY - drag.y;
      if (!drag.moved && Math.abs(dx) + Math.abs(dy) > 4) {
        drag.moved = true;
        box.classList.add("is-panning");
      }
      if (drag.moved) {
        box.scrollLeft = drag.left - dx;
        box.scrollTop = drag.top - dy;
      }
    });
    function endDrag() {
      if (drag && drag.moved) {
        box.setAttribute("data-dragged", "1");
      }
      drag = null;
      box.classList.remove("is-panning");
    }
    box.addEventListener("pointerup", endDrag);
    box.addEventListener("pointerleave", endDrag);
    box.addEventListener(
      "click",
      function (ev) {
        if (box.getAttribute("data-dragged")) {
          box.removeAttribute("data-dragged");
          ev.preventDefault();
          ev.stopPropagation();
        }
      },
      true
    );
    box.addEventListener("scroll", function () {
      view.left = box.scrollLeft;
      view.top = box.scrollTop;
    });

    if (view.expanded) {
      setExpanded(true);
    }
    apply(view.scale || fit(true));
    box.scrollLeft = view.left || 0;
    box.scrollTop = view.top || 0;
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.key !== "Escape") {
      return;
    }
    var open = document.querySelector(".flowstate-diagram.is-expanded");
    var button = open ? open.querySelector('[data-diagram="expand"]') : null;
    if (button) {
      button.click();
    }
  });

  function setupAll(root) {
    var figs = (root || document).querySelectorAll(".flowstate-diagram");
    for (var i = 0; i < figs.length; i++) {
      setup(figs[i]);
    }
    if (root && root.classList && root.classList.contains("flowstate-diagram")) {
      setup(root);
    }
  }

  // The type page's diagram section: folded away or not, per browser.
  var DIAGRAM_KEY = "flowstate.diagram";
  function rememberFold() {
    var section = document.getElementById("fs-type-diagram-section");
    var s = store();
    if (!section || !s) {
      return;
    }
    if (s.getItem(DIAGRAM_KEY) === "closed") {
      section.open = false;
    }
    section.addEventListener("toggle", function () {
      s.setItem(DIAGRAM_KEY, section.open ? "open" : "closed");
      if (section.open) {
        setupAll(section); // sized now that it has a size
      }
    });
  }

  function start() {
    if (keepPaused()) {
      return;
    }
    rememberFold();
    setupAll(document);
    // htmx swaps in a new diagram (live refresh, or a panel after a retry).
    document.body.addEventListener("htmx:load", function (ev) {
      setupAll(ev.target);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
