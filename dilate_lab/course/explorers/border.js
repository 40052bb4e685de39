// The border, three ways, for a query you drag to the edge: the paper's zero padding
// (padded keys are zero vectors that still take softmax mass), masking them out, and
// NATTEN's window shifted inward. A fourth map counts the padded positions of every query.

function borderPanels(model) {
  const k = model.get("kernel_size"), r = model.get("dilation"), size = model.get("size");
  const row = model.get("row"), col = model.get("col");
  const win = dilatedWindow(row, col, k, r, size, size);
  const inWindow = keySet(win.positions);
  const shifted = shiftedWindow(row, col, k, r, size, size);
  const inShifted = keySet(shifted.positions);
  const margin = r * Math.floor(k / 2);
  const cell = Math.max(7, Math.min(18, Math.floor(230 / (size + 2 * margin))));
  const isQuery = (a, b) => (a === row && b === col ? " query" : "");
  const beyond = (a, b) => a < 0 || a >= size || b < 0 || b >= size;
  const zeros = gridSvg({ height: size, width: size, margin, cell, panel: "zeros",
    classOf: (a, b) => (inWindow.has(`${a},${b}`) ? (beyond(a, b) ? "pad" : "win") : "") + isQuery(a, b) });
  const mask = gridSvg({ height: size, width: size, margin, cell, panel: "mask",
    classOf: (a, b) => (inWindow.has(`${a},${b}`) && !beyond(a, b) ? "win" : "") + isQuery(a, b) });
  const natten = gridSvg({ height: size, width: size, margin: 0, cell, panel: "shifted",
    classOf: (a, b) => (inShifted.has(`${a},${b}`) ? "win" : "") + isQuery(a, b) });
  const counts = paddingCounts(size, size, k, r);
  const most = Math.max(1, ...counts.flat());
  const heat = gridSvg({ height: size, width: size, margin: 0, cell, panel: "counts",
    classOf: (a, b) => `heat${isQuery(a, b)}`, label: (a, b) => (cell >= 14 ? String(counts[a][b]) : "") })
    .replace(/<rect class="dl-cell heat( query)?" data-row="(\d+)" data-col="(\d+)"/g, (m, q, a, b) =>
      `${m} style="fill: rgba(216, 67, 21, ${(counts[a][b] / most).toFixed(3)})" data-padded="${counts[a][b]}"`);
  const kk = k * k;
  const nattenText = shifted.error
    ? `<span class="dl-x-error">${escapeHtml(shifted.error)}</span>`
    : `<b data-count="shifted">${kk}</b> keys, all on the map: the window moves inward instead of padding`;
  const panel = (svg, title, text) => `<figure>${svg}<figcaption><b>${title}</b><br>${text}</figcaption></figure>`;
  return [
    panel(zeros, "zero padding (paper)", `<b data-count="zeros">${kk}</b> keys, <b data-count="padded">${win.nOutside}</b> of them zero padding (they still take softmax mass)`),
    panel(mask, "masking", `<b data-count="mask">${win.nInside}</b> keys: the ${win.nOutside} padded ones are left out of the softmax`),
    panel(natten, "NATTEN: shifted inward", nattenText),
    panel(heat, "padded positions of every query", `this query: <b data-count="query-padded">${counts[row][col]}</b>; most: ${Math.max(...counts.flat())}`),
  ].join("");
}

function render({ model, el }) {
  const { root, controls, body } = frame(el, "border");
  const refreshers = [
    slider(controls, model, "kernel_size", "kernel k", 1, 9, 2),
    slider(controls, model, "dilation", "dilation r", 1, 8),
    slider(controls, model, "size", "map size", 3, 32),
  ];
  const draw = timed(root, () => {
    refreshers.forEach((refresh) => refresh());
    body.innerHTML = `<div class="dl-x-panels">${borderPanels(model)}</div><div class="dl-query">query ` +
      `(<b data-query="row">${model.get("row")}</b>, <b data-query="col">${model.get("col")}</b>): click or drag on any map</div>`;
  });
  dragQuery(body, model, () => ({ height: model.get("size"), width: model.get("size") }));
  const stop = onChanges(model, ["kernel_size", "dilation", "size", "row", "col"], draw);
  draw();
  return stop;
}

export default { render };
