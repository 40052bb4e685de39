// How much of each query's window lies on the map under the paper's zero padding, for several
// dilations at once (one map per dilation). Every cell of a map is a query, shaded by how many of
// its k*k keys are zero padding and labelled with how many are on the map. Click or drag a query:
// each map shows its window (blue: keys on the map, red dashed: zero padding beyond the border)
// and the caption counts them. With all logits equal and all values 1, SWDA outputs exactly the
// share of keys on the map: the padded keys take the rest of the softmax mass and add zeros.

const COVERAGE_STYLE = `
.dl-coverage rect.dl-cell.heat.win { fill: #4c9be8 !important; }
.dl-coverage rect.dl-cell.heat.query.win { fill: #ffcf40 !important; }
.dl-coverage .dl-x-error { margin: 2px 0 6px; }
.dl-coverage .dl-key { font-size: 12px; color: #444; margin-top: 6px; max-width: 760px; }
.dl-coverage .dl-swatch { display: inline-block; width: 10px; height: 10px; vertical-align: middle;
  border: 1px solid #999; margin: 0 2px; }
`;

// The shade of a query with ``padded`` of ``kk`` keys beyond the border: white when none, deep red when all.
function shade(padded, kk) {
  return `rgba(216, 67, 21, ${(0.85 * padded / kk).toFixed(3)})`;
}

function coveragePanel(stats, index, model) {
  const k = model.get("kernel_size"), size = model.get("size"), row = model.get("row"), col = model.get("col");
  const { dilation, onMap, paddedKeys, fullQueries, keys } = stats;
  const kk = k * k;
  const win = dilatedWindow(row, col, k, dilation, size, size);
  const inWindow = keySet(win.positions);
  const margin = dilation * Math.floor(k / 2);
  const cell = Math.max(4, Math.min(24, Math.floor(260 / (size + 2 * margin))));
  const beyond = (r, c) => r < 0 || r >= size || c < 0 || c >= size;
  const svg = gridSvg({
    height: size, width: size, margin, cell, panel: `g${index}`,
    classOf: (r, c) => {
      const parts = beyond(r, c) ? [] : ["heat"];
      if (inWindow.has(`${r},${c}`)) parts.push(beyond(r, c) ? "pad" : "win");
      if (r === row && c === col) parts.push("query");
      return parts.join(" ");
    },
    label: (r, c) => (!beyond(r, c) && cell >= 16 ? String(onMap[r][c]) : ""),
  }).replace(/<rect class="dl-cell heat([^"]*)" data-row="(\d+)" data-col="(\d+)"/g, (m, extra, r, c) =>
    `${m} style="fill: ${shade(kk - onMap[r][c], kk)}" data-on-map="${onMap[r][c]}"`);
  const share = win.nInside / kk;
  const queries = size * size;
  const caption = `<span class="dl-counts" data-dilation="${dilation}" data-group="${index}">` +
    `<b>dilation ${dilation}</b>, span ${win.span} x ${win.span}<br>` +
    `query: <b data-count="inside">${win.nInside}</b> of ${kk} keys on the map, ` +
    `<b data-count="padded">${win.nOutside}</b> padding (share <b data-count="share">${share.toFixed(3)}</b>)<br>` +
    `map: <b data-count="full">${fullQueries}</b> of ${queries} queries see all ${kk} keys; ` +
    `<b data-count="padded-keys">${paddedKeys}</b> of ${keys} keys are padding ` +
    `(mean share <b data-count="mean-share">${stats.meanShare.toFixed(3)}</b>)</span>`;
  const width = Math.max(230, (size + 2 * margin) * cell + 2);
  return `<figure style="width: ${width}px">${svg}<figcaption>${caption}</figcaption></figure>`;
}

function render({ model, el }) {
  const { root, controls, body } = frame(el, "coverage");
  root.insertAdjacentHTML("afterbegin", `<style>${COVERAGE_STYLE}</style>`);
  const refreshers = [
    slider(controls, model, "kernel_size", "kernel k", 1, 9, 2),
    slider(controls, model, "size", "map size", 3, 24),
  ];
  // The schedule box: a schedule the rules refuse shows their message and leaves the model as it
  // was (the maps keep the last valid schedule) until the text is corrected.
  const wrap = document.createElement("label");
  wrap.className = "dl-dilations";
  wrap.dataset.lmSuppressShortcuts = "true";  // keys typed here are text, not JupyterLab's shortcuts
  wrap.innerHTML = 'dilations <input type="text" size="14">';
  const input = wrap.querySelector("input");
  controls.appendChild(wrap);
  const message = document.createElement("div");
  message.className = "dl-x-error dl-error";
  message.hidden = true;
  controls.after(message);
  const showMessage = (text) => {
    message.textContent = text ? `Not possible: ${text} (the maps still show ${model.get("dilations").join(", ")})` : "";
    message.hidden = !text;
  };
  onCommit(input, () => {
    const parsed = parseDilations(input.value, "dilations", 4);
    if (parsed.error) {
      showMessage(parsed.error);
      return;
    }
    showMessage("");
    model.set("dilations", parsed.values);
    model.save_changes();
  });

  let cached = { key: "", stats: [] };  // the maps' counts depend on the settings, not on the query
  const coverage = (size, k, dilations) => {
    const key = `${size}|${k}|${dilations.join(",")}`;
    if (cached.key !== key) cached = { key, stats: windowCoverage(size, size, k, dilations) };
    return cached.stats;
  };

  let shownSchedule = null;
  const draw = timed(root, () => {
    refreshers.forEach((refresh) => refresh());
    const schedule = model.get("dilations").join(", ");
    if (schedule !== shownSchedule) {  // a new schedule (typed, or set from Python): the box shows it
      shownSchedule = schedule;
      showMessage("");
      input.value = schedule;
    }
    const k = model.get("kernel_size"), size = model.get("size"), dilations = model.get("dilations");
    const panels = coverage(size, k, dilations).map((stats, i) => coveragePanel(stats, i, model));
    const kk = k * k;
    body.innerHTML = `<div class="dl-x-panels">${panels.join("")}</div>` +
      `<div class="dl-query">query (<b data-query="row">${model.get("row")}</b>, ` +
      `<b data-query="col">${model.get("col")}</b>): click or drag on any map</div>` +
      `<div class="dl-key">Each cell is a query, labelled (where it fits) with how many of its ${kk} keys lie on ` +
      `the map and shaded by how many are zero padding (<span class="dl-swatch" style="background:${shade(0, kk)}">` +
      `</span> none, <span class="dl-swatch" style="background:${shade(kk, kk)}"></span> all). Blue: the ` +
      "query's keys on the map; red, dashed: its keys beyond the border. Share: the part of the softmax on " +
      "real keys when all logits are equal (q = k = 0); with values 1, zero-padded SWDA outputs exactly it.</div>";
  });
  dragQuery(body, model, () => ({ height: model.get("size"), width: model.get("size") }));
  const stop = onChanges(model, ["kernel_size", "size", "dilations", "row", "col"], draw);
  draw();
  return stop;
}

export default { render };
