// The review UI's browser side: hotkeys, activity tracking, zoom/pan, heatmap overlay.
// Gradio has no hotkeys, so keys click the page's own buttons (by elem_id): the server
// handles a key exactly as it handles a click, with the same checks.
(() => {
  if (window.__inspectReview) return;
  window.__inspectReview = true;

  // -- activity: the lease is renewed only while someone is at the desk -------------------
  window.inspectLastActivity = Date.now();
  const touch = () => { window.inspectLastActivity = Date.now(); };
  for (const ev of ["keydown", "mousemove", "mousedown", "wheel", "touchstart", "pointerdown"]) {
    document.addEventListener(ev, touch, { passive: true, capture: true });
  }

  // -- hotkeys ------------------------------------------------------------------------------
  // key -> button id, written by the server from review_ui.views.VERDICT_KEYS
  const VERDICTS = window.inspectVerdictKeys || {};
  const click = (id) => {
    const el = document.getElementById(id);
    if (!el || el.disabled) return false;
    el.click();
    return true;
  };
  const inspectVisible = () => {
    const page = document.getElementById("inspect-page");
    return !!page && page.offsetParent !== null;
  };
  const typing = (t) => !!t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" ||
                                 t.tagName === "SELECT" || t.isContentEditable);
  const viewer = () => document.querySelector("#inspect-page .part-viewer");
  const flash = (id) => {
    const el = document.getElementById(id);
    if (!el) return;
    el.classList.add("key-flash");
    setTimeout(() => el.classList.remove("key-flash"), 180);
  };

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || !inspectVisible()) return;
    const t = e.target;
    if (typing(t)) {
      if (e.key === "Escape") { t.blur(); e.preventDefault(); }
      return;
    }
    if (e.repeat) return;  // a held key must not label the parts that follow
    const v = viewer();
    if (v && v.classList.contains("empty-paused")) {
      if (VERDICTS[e.key] || e.key === " " || e.key === "Enter") {
        e.preventDefault();
        click("cmd-resume");
      }
      return;
    }
    if (VERDICTS[e.key]) {
      e.preventDefault();
      flash(VERDICTS[e.key]);
      click(VERDICTS[e.key]);
      return;
    }
    switch (e.key.toLowerCase()) {
      case "u": e.preventDefault(); flash("cmd-undo"); click("cmd-undo"); break;
      case "s": e.preventDefault(); flash("cmd-skip"); click("cmd-skip"); break;
      case "n": {
        e.preventDefault();
        const note = document.querySelector("#verdict-note textarea, #verdict-note input");
        if (note) note.focus();
        break;
      }
      case "h": e.preventDefault(); toggleHeatmap(); break;
      case "escape": click("cmd-cancel"); break;
      case "+": case "=": e.preventDefault(); zoomCentre(1.25); break;
      case "-": case "_": e.preventDefault(); zoomCentre(0.8); break;
      case "0": e.preventDefault(); zoomReset(viewer()); break;
      default: break;
    }
  }, true);

  // -- heatmap: shown over the part it was computed for, toggled with h --------------------
  const HEAT_KEY = "inspectHeatmapOn";
  const applyHeatmapPref = () => {
    document.documentElement.classList.toggle("heatmap-on", localStorage.getItem(HEAT_KEY) === "1");
  };
  const toggleHeatmap = () => {
    localStorage.setItem(HEAT_KEY, localStorage.getItem(HEAT_KEY) === "1" ? "0" : "1");
    applyHeatmapPref();
  };
  applyHeatmapPref();
  document.addEventListener("click", (e) => {
    const t = e.target.closest && e.target.closest("[data-action=toggle-heatmap]");
    if (t) { e.preventDefault(); toggleHeatmap(); }
  });

  // The heatmap arrives after its part, in a hidden element naming the part (data-for).
  // Lay it over the viewer only if that viewer still shows the same part.
  const attachOverlay = () => {
    for (const v of document.querySelectorAll(".part-viewer[data-key]")) {
      const key = v.dataset.key;
      const img = v.querySelector(".part-overlay");
      if (!key || !img) continue;
      let src = null;
      for (const s of document.querySelectorAll("img.overlay-src")) {
        if (s.dataset.for === key) src = s.getAttribute("src");
      }
      if (src && img.getAttribute("src") !== src) {
        img.setAttribute("src", src);
        v.classList.add("has-overlay");
      }
    }
  };

  // -- zoom and pan -------------------------------------------------------------------------
  const zoomState = new WeakMap();  // viewer element -> {s, x, y}; a new part is a new element
  const layers = (v) => v && v.querySelector(".part-layers");
  const apply = (v) => {
    const st = zoomState.get(v) || { s: 1, x: 0, y: 0 };
    const l = layers(v);
    if (l) l.style.transform = `translate(${st.x}px, ${st.y}px) scale(${st.s})`;
    v.classList.toggle("zoomed", st.s > 1.001);
    const badge = v.querySelector(".zoom-level");
    if (badge) badge.textContent = st.s > 1.001 ? `${st.s.toFixed(1)}×` : "";
  };
  const zoomAt = (v, factor, px, py) => {
    if (!v || !layers(v)) return;
    const st = zoomState.get(v) || { s: 1, x: 0, y: 0 };
    const s = Math.min(16, Math.max(1, st.s * factor));
    const k = s / st.s;
    st.x = s === 1 ? 0 : px - (px - st.x) * k;
    st.y = s === 1 ? 0 : py - (py - st.y) * k;
    st.s = s;
    zoomState.set(v, st);
    apply(v);
  };
  const zoomCentre = (factor) => {
    const v = viewer();
    const stage = v && v.querySelector(".part-stage");
    if (!stage) return;
    zoomAt(v, factor, stage.clientWidth / 2, stage.clientHeight / 2);
  };
  const zoomReset = (v) => {
    if (!v) return;
    zoomState.set(v, { s: 1, x: 0, y: 0 });
    apply(v);
  };
  document.addEventListener("wheel", (e) => {
    const stage = e.target.closest && e.target.closest(".part-stage");
    if (!stage) return;
    e.preventDefault();
    const v = stage.closest(".part-viewer");
    const r = stage.getBoundingClientRect();
    zoomAt(v, e.deltaY < 0 ? 1.2 : 1 / 1.2, e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  let drag = null;
  document.addEventListener("pointerdown", (e) => {
    const stage = e.target.closest && e.target.closest(".part-stage");
    if (!stage || e.button !== 0) return;
    const v = stage.closest(".part-viewer");
    const st = zoomState.get(v);
    if (!st || st.s <= 1) return;
    drag = { v, st, x0: e.clientX - st.x, y0: e.clientY - st.y };
    stage.setPointerCapture(e.pointerId);
    e.preventDefault();
  });
  document.addEventListener("pointermove", (e) => {
    if (!drag) return;
    drag.st.x = e.clientX - drag.x0;
    drag.st.y = e.clientY - drag.y0;
    apply(drag.v);
  });
  document.addEventListener("pointerup", () => { drag = null; });
  document.addEventListener("dblclick", (e) => {
    const stage = e.target.closest && e.target.closest(".part-stage");
    if (stage) zoomReset(stage.closest(".part-viewer"));
  });

  // -- thumbnails on the Evidence page open large on click ---------------------------------
  document.addEventListener("click", (e) => {
    const thumb = e.target.closest && e.target.closest("[data-action=zoom-thumb]");
    const open = document.querySelector(".ia-lightbox");
    if (open) { open.remove(); return; }
    if (!thumb) return;
    const box = document.createElement("div");
    box.className = "ia-lightbox";
    const img = document.createElement("img");
    img.src = thumb.getAttribute("src");
    box.appendChild(img);
    document.body.appendChild(box);
  });

  // Gradio re-renders HTML components by replacing their content: watch for new viewers
  // and heatmaps, at most once per frame.
  let pending = false;
  new MutationObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; attachOverlay(); });
  }).observe(document.documentElement, { childList: true, subtree: true });
})();
