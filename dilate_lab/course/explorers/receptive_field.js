// The receptive field of one query (DilateFormer eq. 3): click or drag the query on the
// map; kernel, dilation and map size on sliders. With "compare" on, dilations 1, 2 and 3
// side by side for the same query. Blue: window positions on the map; red, dashed: zero
// padding beyond the border; gold outline: the query.

function receptiveFieldPanel(model, dilation) {
  const k = model.get("kernel_size"), size = model.get("size");
  const row = model.get("row"), col = model.get("col");
  const win = dilatedWindow(row, col, k, dilation, size, size);
  const inWindow = keySet(win.positions);
  const margin = dilation * Math.floor(k / 2);
  const cell = Math.max(8, Math.min(22, Math.floor(340 / (size + 2 * margin))));
  const svg = gridSvg({
    height: size, width: size, margin, cell, panel: `r${dilation}`,
    classOf: (r, c) => {
      const parts = [];
      const beyond = r < 0 || r >= size || c < 0 || c >= size;
      if (inWindow.has(`${r},${c}`)) parts.push(beyond ? "pad" : "win");
      if (r === row && c === col) parts.push("query");
      return parts.join(" ");
    },
  });
  const counts = `<span class="dl-counts" data-dilation="${dilation}">` +
    `dilation <b>${dilation}</b>: span <b data-count="span">${win.span}</b> x ${win.span}, ` +
    `<b data-count="inside">${win.nInside}</b> on the map, ` +
    `<b data-count="padded">${win.nOutside}</b> zero-padded of ${k * k}</span>`;
  return `<figure>${svg}<figcaption>${counts}</figcaption></figure>`;
}

function render({ model, el }) {
  const { root, controls, body } = frame(el, "receptive-field");
  const refreshers = [
    slider(controls, model, "kernel_size", "kernel k", 1, 9, 2),
    slider(controls, model, "dilation", "dilation r", 1, 8),
    slider(controls, model, "size", "map size", 3, 32),
    checkbox(controls, model, "compare", "dilations 1, 2, 3 side by side"),
  ];
  const draw = timed(root, () => {
    refreshers.forEach((refresh) => refresh());
    const dilations = model.get("compare") ? [1, 2, 3] : [model.get("dilation")];
    body.innerHTML = `<div class="dl-x-panels">${dilations.map((r) => receptiveFieldPanel(model, r)).join("")}</div>` +
      `<div class="dl-query">query (<b data-query="row">${model.get("row")}</b>, ` +
      `<b data-query="col">${model.get("col")}</b>): click or drag on the map</div>`;
  });
  dragQuery(body, model, () => ({ height: model.get("size"), width: model.get("size") }));
  const stop = onChanges(model, ["kernel_size", "dilation", "size", "row", "col", "compare"], draw);
  draw();
  return stop;
}

export default { render };
