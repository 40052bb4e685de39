// The paper's Figure 4 as a browser-native widget: one query, every dilation group of MSDA
// at once, one colour per group; the table says which heads and channels each group gets.
// Nested squares (group 0 largest) only let a position shared by two groups show both.

const GROUP_COLOURS = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

function groupOverlays(groups, row, col, k, size, margin, cell) {
  const parts = [];
  const step = cell * 0.34 / groups.length;
  for (const g of groups) {
    const win = dilatedWindow(row, col, k, g.dilation, size, size);
    const inset = cell * 0.04 + step * g.index;
    win.positions.forEach(([r, c], i) => {
      const x = (c + margin) * cell + inset, y = (r + margin) * cell + inset;
      const cls = win.outside[i] ? "grp pad" : "grp";
      parts.push(`<rect class="${cls}" data-group="${g.index}" data-row="${r}" data-col="${c}" x="${x}" y="${y}" ` +
        `width="${cell - 2 * inset}" height="${cell - 2 * inset}" fill="${GROUP_COLOURS[g.index % 8]}" ` +
        `fill-opacity="${win.outside[i] ? 0.25 : 0.55}" pointer-events="none"/>`);
    });
  }
  return parts.join("");
}

function groupsTable(groups, k, size, row, col) {
  const lines = groups.map((g) => {
    const win = dilatedWindow(row, col, k, g.dilation, size, size);
    const range = ([a, b]) => (b - a === 1 ? `${a}` : `${a}-${b - 1}`);
    return `<tr data-group="${g.index}"><td style="color:${GROUP_COLOURS[g.index % 8]}">&#9632; ${g.dilation}</td>` +
      `<td>${range(g.heads)}</td><td>${range(g.channels)}</td><td>${g.span}x${g.span}</td>` +
      `<td data-count="padded">${win.nOutside}</td></tr>`;
  });
  return `<table class="dl-groups"><tr><th>dilation</th><th>heads</th><th>channels</th><th>span</th>` +
    `<th>padded</th></tr>${lines.join("")}</table>`;
}

function cleanDilations(text) {
  const parts = text.split(/[,;\s]+/).filter((p) => p !== "");
  const values = parts.map(Number);
  if (!values.length || values.length > 8 || values.some((r) => !Number.isInteger(r) || r < 1 || r > 8)) return null;
  return values;
}

function render({ model, el }) {
  const { root, controls, body } = frame(el, "multi-scale");
  const refreshers = [
    intList(controls, model, "dilations", "dilations", cleanDilations),
    slider(controls, model, "kernel_size", "kernel k", 1, 9, 2),
    slider(controls, model, "num_heads", "heads", 1, 24),
    slider(controls, model, "dim", "channels", 24, 384, 24),
    slider(controls, model, "size", "map size", 3, 32),
  ];
  const draw = timed(root, () => {
    refreshers.forEach((refresh) => refresh());
    const k = model.get("kernel_size"), size = model.get("size"), row = model.get("row"), col = model.get("col");
    const dilations = model.get("dilations");
    const split = headGroups(model.get("dim"), model.get("num_heads"), dilations, k);
    if (split.error) {
      body.innerHTML = `<div class="dl-x-error dl-error">Not possible: ${escapeHtml(split.error)}</div>`;
      return;
    }
    const margin = Math.max(...dilations) * Math.floor(k / 2);
    const cell = Math.max(8, Math.min(22, Math.floor(400 / (size + 2 * margin))));
    const svg = gridSvg({
      height: size, width: size, margin, cell, panel: "groups",
      classOf: (r, c) => (r === row && c === col ? "query" : ""),
    }).replace(/<rect class="dl-frame"/, groupOverlays(split.groups, row, col, k, size, margin, cell) + '<rect class="dl-frame"');
    body.innerHTML = `<div class="dl-x-panels"><figure>${svg}<figcaption>query (<b data-query="row">${row}</b>, ` +
      `<b data-query="col">${col}</b>): ${split.groups.length} dilation groups, kernel ${k}</figcaption></figure>` +
      groupsTable(split.groups, k, size, row, col) + "</div>";
  });
  dragQuery(body, model, () => ({ height: model.get("size"), width: model.get("size") }));
  const stop = onChanges(model, ["dilations", "kernel_size", "num_heads", "dim", "size", "row", "col"], draw);
  draw();
  return stop;
}

export default { render };
