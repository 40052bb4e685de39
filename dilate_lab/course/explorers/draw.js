// What every explorer draws with: SVG grids of cells, controls bound to the model, and
// the query dragged on the map. No geometry here (that is geometry.js), no state (that
// is the model: the kernel's traitlets in JupyterLab, a plain object in the static page).

const STYLE = `
.dl-x { font: 13px/1.35 system-ui, sans-serif; color: #222; }
.dl-x .dl-x-controls { display: flex; flex-wrap: wrap; gap: 4px 18px; margin: 4px 0 6px; }
.dl-x label { display: inline-flex; align-items: center; gap: 6px; }
.dl-x input[type=range] { width: 120px; }
.dl-x output { min-width: 2ch; font-weight: 600; }
.dl-x .dl-x-panels { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
.dl-x figure { margin: 0; }
.dl-x figcaption { font-size: 12px; margin-top: 2px; max-width: 360px; }
.dl-x svg { touch-action: none; user-select: none; }
.dl-x rect.dl-cell { fill: #fff; stroke: #bbb; stroke-width: 0.5; }
.dl-x rect.dl-cell.beyond { fill: #eee; stroke: #ddd; }
.dl-x rect.dl-margin { fill: #eee; }
.dl-x rect.dl-cell.win { fill: #4c9be8; }
.dl-x rect.dl-cell.pad { fill: #f3a38f; stroke: #c0392b; stroke-dasharray: 2 2; }
.dl-x rect.dl-cell.query { stroke: #d89b00; stroke-width: 3; }
.dl-x rect.dl-cell.query.win { fill: #ffcf40; }
.dl-x rect.dl-frame { fill: none; stroke: #333; stroke-width: 1.5; pointer-events: none; }
.dl-x text { font-size: 10px; pointer-events: none; text-anchor: middle; dominant-baseline: central; }
.dl-x .dl-counts b { font-variant-numeric: tabular-nums; }
.dl-x .dl-x-error { color: #b00020; font-weight: 600; }
.dl-x table { border-collapse: collapse; font-size: 12px; }
.dl-x td, .dl-x th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
`;

export function escapeHtml(text) {
  return String(text).replace(/[&<>"]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[ch]);
}

// The explorer's root: a styled container with a controls row and a body.
export function frame(el, name) {
  el.innerHTML = "";
  const root = document.createElement("div");
  root.className = `dl-x dl-explorer dl-${name}`;
  root.innerHTML = `<style>${STYLE}</style><div class="dl-x-controls"></div><div class="dl-x-body"></div>`;
  el.appendChild(root);
  return { root, controls: root.querySelector(".dl-x-controls"), body: root.querySelector(".dl-x-body") };
}

// A range slider bound to the integer trait ``name``; returns a function that re-reads the model.
export function slider(parent, model, name, label, min, max, step = 1) {
  const wrap = document.createElement("label");
  wrap.className = `dl-${name.replace(/_/g, "-")}`;
  wrap.innerHTML = `${escapeHtml(label)} <input type="range" min="${min}" max="${max}" step="${step}"><output></output>`;
  const input = wrap.querySelector("input"), out = wrap.querySelector("output");
  input.addEventListener("input", () => {
    model.set(name, Number(input.value));
    model.save_changes();
  });
  parent.appendChild(wrap);
  return (maxNow = max) => {
    input.max = String(maxNow);
    input.value = String(model.get(name));
    out.textContent = String(model.get(name));
  };
}

// A checkbox bound to the boolean trait ``name``.
export function checkbox(parent, model, name, label) {
  const wrap = document.createElement("label");
  wrap.className = `dl-${name.replace(/_/g, "-")}`;
  wrap.innerHTML = `<input type="checkbox"> ${escapeHtml(label)}`;
  const input = wrap.querySelector("input");
  input.addEventListener("change", () => {
    model.set(name, input.checked);
    model.save_changes();
  });
  parent.appendChild(wrap);
  return () => { input.checked = Boolean(model.get(name)); };
}

// Call ``commit`` when the text in ``input`` is done: on change (focus leaves the box) and on
// Enter, which JupyterLab's notebook keeps from firing a change event.
export function onCommit(input, commit) {
  input.addEventListener("change", commit);
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    event.stopPropagation();
    commit();
  });
}

// A text box for a list of ints ("1, 2, 3") bound to the list trait ``name``.
export function intList(parent, model, name, label, clean) {
  const wrap = document.createElement("label");
  wrap.className = `dl-${name.replace(/_/g, "-")}`;
  wrap.dataset.lmSuppressShortcuts = "true";  // keys typed here are text, not JupyterLab's shortcuts
  wrap.innerHTML = `${escapeHtml(label)} <input type="text" size="12">`;
  const input = wrap.querySelector("input");
  onCommit(input, () => {
    const values = clean(input.value);
    if (values) {
      model.set(name, values);
      model.save_changes();
    }
    input.value = model.get(name).join(", ");
  });
  parent.appendChild(wrap);
  return () => { if (document.activeElement !== input) input.value = model.get(name).join(", "); };
}

// Redraw once for any number of changes made in one task (a drag sets row and col).
export function onChanges(model, names, draw) {
  let pending = false;
  const schedule = () => {
    if (pending) return;
    pending = true;
    queueMicrotask(() => { pending = false; draw(); });
  };
  for (const name of names) model.on(`change:${name}`, schedule);
  return () => { for (const name of names) model.off(`change:${name}`, schedule); };
}

// An SVG grid of the map (plus ``margin`` cells of border all round); ``classOf(r, c)``
// gives each cell's extra classes, ``label(r, c)`` its text (or ""). Beyond the border only
// the cells with a class or a label get a rectangle of their own (a margin of 32 around a
// 32 x 32 map is 8,192 cells, and drawing each one took 180 ms).
export function gridSvg({ height, width, margin = 0, cell = 20, classOf, label = () => "", panel = "" }) {
  const rows = height + 2 * margin, cols = width + 2 * margin;
  const parts = [`<svg class="dl-map" data-panel="${panel}" data-margin="${margin}" data-cell="${cell}" ` +
    `width="${cols * cell + 2}" height="${rows * cell + 2}" viewBox="-1 -1 ${cols * cell + 2} ${rows * cell + 2}">`,
    `<rect class="dl-margin" x="0" y="0" width="${cols * cell}" height="${rows * cell}"/>`];
  for (let r = -margin; r < height + margin; r++) {
    for (let c = -margin; c < width + margin; c++) {
      const beyond = r < 0 || r >= height || c < 0 || c >= width;
      const x = (c + margin) * cell, y = (r + margin) * cell;
      const extra = classOf(r, c);
      // beyond the border only the cells that show something: the grey margin is one rectangle
      if (beyond && !extra.trim() && label(r, c) === "") continue;
      parts.push(`<rect class="dl-cell${beyond ? " beyond" : ""}${extra ? " " + extra : ""}" data-row="${r}" ` +
        `data-col="${c}" x="${x}" y="${y}" width="${cell}" height="${cell}"/>`);
      const text = label(r, c);
      if (text !== "") parts.push(`<text x="${x + cell / 2}" y="${y + cell / 2}">${escapeHtml(text)}</text>`);
    }
  }
  parts.push(`<rect class="dl-frame" x="${margin * cell}" y="${margin * cell}" width="${width * cell}" height="${height * cell}"/>`);
  parts.push("</svg>");
  return parts.join("");
}

// Set of "r,c" keys, for O(1) membership while drawing.
export function keySet(positions) {
  return new Set(positions.map(([r, c]) => `${r},${c}`));
}

// Click or drag on any map inside ``container`` moves the query (row, col), clamped to the map.
export function dragQuery(container, model, size) {
  let dragging = false;
  const move = (event) => {
    const svg = event.target.closest && event.target.closest("svg.dl-map");
    if (!svg) return;
    const box = svg.getBoundingClientRect();
    const cell = Number(svg.dataset.cell), margin = Number(svg.dataset.margin);
    const scale = box.width / Number(svg.getAttribute("width"));
    const { height, width } = size();
    const clamp = (v, n) => Math.max(0, Math.min(n - 1, v));
    const col = clamp(Math.floor((event.clientX - box.left - scale) / (cell * scale)) - margin, width);
    const row = clamp(Math.floor((event.clientY - box.top - scale) / (cell * scale)) - margin, height);
    if (row === model.get("row") && col === model.get("col")) return;
    model.set("row", row);
    model.set("col", col);
    model.save_changes();
  };
  container.addEventListener("pointerdown", (event) => {
    if (!event.target.closest || !event.target.closest("svg.dl-map")) return;
    dragging = true;
    move(event);
  });
  container.addEventListener("pointermove", (event) => { if (dragging && event.buttons) move(event); });
  const stop = () => { dragging = false; };
  container.addEventListener("pointerup", stop);
  container.addEventListener("pointerleave", stop);
}

// Keep the last draw's duration on the root, for the browser test's timing.
export function timed(root, draw) {
  return () => {
    const start = performance.now();
    draw();
    root.dataset.drawMs = (performance.now() - start).toFixed(2);
    root.dataset.draws = String(Number(root.dataset.draws || 0) + 1);
  };
}
