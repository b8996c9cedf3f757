// Injected on demand (chrome.scripting.executeScript) to let the user drag a rectangle over the
// visible page. It removes itself before the worker captures the tab.
(() => {
  const ID = "__lookalike_region_overlay";
  if (document.getElementById(ID)) return;
  const overlay = document.createElement("div");
  overlay.id = ID;
  Object.assign(overlay.style, {
    position: "fixed",
    inset: "0",
    zIndex: "2147483647",
    cursor: "crosshair",
    background: "rgba(0,0,0,0.2)",
    userSelect: "none",
  });
  const box = document.createElement("div");
  Object.assign(box.style, {
    position: "fixed",
    display: "none",
    border: "2px dashed #fff",
    outline: "1px solid #7c3aed",
    background: "rgba(124,58,237,0.12)",
    pointerEvents: "none",
  });
  const hint = document.createElement("div");
  hint.textContent = "Drag over the dress to find similar ones · Esc to cancel";
  Object.assign(hint.style, {
    position: "fixed",
    top: "12px",
    left: "50%",
    transform: "translateX(-50%)",
    padding: "6px 12px",
    borderRadius: "6px",
    background: "#1f1533",
    color: "#fff",
    font: "14px system-ui, sans-serif",
    pointerEvents: "none",
  });
  overlay.append(box, hint);
  document.documentElement.append(overlay);

  let start = null;
  const rectOf = (e) => ({
    x: Math.min(start.x, e.clientX),
    y: Math.min(start.y, e.clientY),
    w: Math.abs(e.clientX - start.x),
    h: Math.abs(e.clientY - start.y),
  });
  const cleanUp = () => {
    overlay.remove();
    window.removeEventListener("keydown", onKey, true);
  };
  const onKey = (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      cleanUp();
    }
  };
  window.addEventListener("keydown", onKey, true);
  overlay.addEventListener("mousedown", (e) => {
    e.preventDefault();
    start = { x: e.clientX, y: e.clientY };
    hint.style.display = "none";
  });
  overlay.addEventListener("mousemove", (e) => {
    if (!start) return;
    const r = rectOf(e);
    Object.assign(box.style, {
      display: "block",
      left: `${r.x}px`,
      top: `${r.y}px`,
      width: `${r.w}px`,
      height: `${r.h}px`,
    });
  });
  overlay.addEventListener("mouseup", (e) => {
    if (!start) return;
    const rect = rectOf(e);
    cleanUp();
    // A click or a sliver is no selection; the server refuses photos under 16 px a side.
    if (rect.w < 16 || rect.h < 16) return;
    // Let the page repaint without the overlay before the screenshot is taken.
    let sent = false;
    const send = () => {
      if (sent) return;
      sent = true;
      chrome.runtime.sendMessage({
        type: "region-selected",
        rect,
        viewport: { w: window.innerWidth, h: window.innerHeight },
      });
    };
    requestAnimationFrame(() => requestAnimationFrame(send));
    setTimeout(send, 200);
  });
})();
