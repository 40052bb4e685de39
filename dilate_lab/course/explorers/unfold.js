// nn.Unfold (im2col) on the map 1..H*W: pick a query on the map (or a column of the
// matrix) and see its window become one column of the (k*k, H*W) unfold output; 0 is
// zero padding.

function matrixSvg(columns, query, cell) {
  const kk = columns.length, n = columns[0].length;
  const parts = [`<svg class="dl-matrix" width="${n * cell + 2}" height="${kk * cell + 2}" viewBox="-1 -1 ${n * cell + 2} ${kk * cell + 2}">`];
  columns.forEach((line, o) => line.forEach((value, j) => {
    const cls = `dl-cell${value === 0 ? " beyond" : ""}${j === query ? " win" : ""}`;
    parts.push(`<rect class="${cls}" data-entry="${o},${j}" data-column="${j}" data-value="${value}" x="${j * cell}" y="${o * cell}" width="${cell}" height="${cell}"/>`);
    parts.push(`<text x="${j * cell + cell / 2}" y="${o * cell + cell / 2}">${value}</text>`);
  }));
  parts.push(`<rect class="dl-frame" x="${query * cell}" y="0" width="${cell}" height="${kk * cell}"/></svg>`);
  return parts.join("");
}

function render({ model, el }) {
  const { root, controls, body } = frame(el, "unfold");
  const refreshers = [
    slider(controls, model, "kernel_size", "kernel k", 1, 5, 2),
    slider(controls, model, "dilation", "dilation r", 1, 3),
    slider(controls, model, "height", "height", 2, 6),
    slider(controls, model, "width", "width", 2, 6),
  ];
  const draw = timed(root, () => {
    refreshers.forEach((refresh) => refresh());
    const k = model.get("kernel_size"), r = model.get("dilation");
    const h = model.get("height"), w = model.get("width"), row = model.get("row"), col = model.get("col");
    const win = dilatedWindow(row, col, k, r, h, w);
    const inWindow = keySet(win.positions);
    const margin = r * Math.floor(k / 2);
    const map = gridSvg({
      height: h, width: w, margin, cell: 24, panel: "map",
      classOf: (a, b) => {
        const beyond = a < 0 || a >= h || b < 0 || b >= w;
        return (inWindow.has(`${a},${b}`) ? (beyond ? "pad" : "win") : "") + (a === row && b === col ? " query" : "");
      },
      label: (a, b) => (a < 0 || a >= h || b < 0 || b >= w ? "0" : String(a * w + b + 1)),
    });
    const query = row * w + col;
    const columns = unfoldColumns(h, w, k, r);
    const column = columns.map((line) => line[query]);
    body.innerHTML = `<div class="dl-x-panels"><figure>${map}<figcaption>the map 1..${h * w}; query ` +
      `(<b data-query="row">${row}</b>, <b data-query="col">${col}</b>) = pixel ${query + 1}</figcaption></figure>` +
      `<figure>${matrixSvg(columns, query, 20)}<figcaption>F.unfold(x, ${k}, dilation=${r}, padding=${margin}): ` +
      `(${k * k}, ${h * w}); column <b data-count="column">${query}</b> = [<span data-column-values>${column.join(", ")}</span>], ` +
      `<b data-count="padded">${win.nOutside}</b> zeros</figcaption></figure></div>`;
  });
  dragQuery(body, model, () => ({ height: model.get("height"), width: model.get("width") }));
  body.addEventListener("pointerdown", (event) => {
    const entry = event.target.closest && event.target.closest("rect[data-column]");
    if (!entry) return;
    const n = Number(entry.dataset.column), w = model.get("width");
    model.set("row", Math.floor(n / w));
    model.set("col", n % w);
    model.save_changes();
  });
  const stop = onChanges(model, ["kernel_size", "dilation", "height", "width", "row", "col"], draw);
  draw();
  return stop;
}

export default { render };
