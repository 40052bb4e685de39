// Every tensor of one MSDA forward pass: its shape, its size, and a bar for its memory;
// the k*k copies of K and V that unfold makes stand out. The shapes are those that
// dilate_lab.course.shapes.trace_msda_shapes records from a real forward pass.

function formatBytes(n) {
  const units = [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]];
  for (const [name, size] of units) if (n >= size) return `${(n / size).toFixed(1)} ${name}`;
  return `${n} B`;
}

function cleanDilations(text) {
  const values = text.split(/[,;\s]+/).filter((p) => p !== "").map(Number);
  if (!values.length || values.length > 8 || values.some((r) => !Number.isInteger(r) || r < 1 || r > 8)) return null;
  return values;
}

function render({ model, el }) {
  const { root, controls, body } = frame(el, "shape-tracer");
  const implBox = document.createElement("label");
  implBox.className = "dl-impl";
  implBox.innerHTML = 'impl <select><option value="unfold">unfold</option><option value="shift">shift</option></select>';
  const select = implBox.querySelector("select");
  select.addEventListener("change", () => { model.set("impl", select.value); model.save_changes(); });
  const refreshers = [
    slider(controls, model, "batch", "batch B", 1, 16),
    slider(controls, model, "channels", "channels C", 12, 768, 12),
    slider(controls, model, "num_heads", "heads", 1, 24),
    slider(controls, model, "height", "height H", 1, 224),
    slider(controls, model, "width", "width W", 1, 224),
    slider(controls, model, "kernel_size", "kernel k", 1, 9, 2),
    intList(controls, model, "dilations", "dilations", cleanDilations),
    () => { select.value = model.get("impl"); },
  ];
  controls.appendChild(implBox);
  const draw = timed(root, () => {
    refreshers.forEach((refresh) => refresh());
    const result = msdaShapes(model.get("batch"), model.get("channels"), model.get("height"), model.get("width"),
      model.get("num_heads"), model.get("kernel_size"), model.get("dilations"), model.get("impl"));
    if (result.error) {
      body.innerHTML = `<div class="dl-x-error dl-error">Not possible: ${escapeHtml(result.error)}</div>`;
      return;
    }
    const largest = Math.max(...result.rows.map((row) => row.nbytes));
    const total = result.rows.reduce((sum, row) => sum + row.nbytes, 0);
    const copies = result.rows.filter((row) => row.kkCopy).reduce((sum, row) => sum + row.nbytes, 0);
    const lines = result.rows.map((row) => `<tr data-step="${escapeHtml(row.step)}"${row.kkCopy ? ' class="kk"' : ""}>` +
      `<td style="text-align:left">${escapeHtml(row.step)}</td><td data-shape>(${row.shape.join(", ")})</td>` +
      `<td>${formatBytes(row.nbytes)}</td><td style="text-align:left"><svg width="160" height="10"><rect width="` +
      `${Math.max(1, (160 * row.nbytes) / largest).toFixed(1)}" height="10" fill="${row.kkCopy ? "#d62728" : "#4c9be8"}"/>` +
      `</svg></td></tr>`);
    body.innerHTML = `<table class="dl-shapes"><tr><th>tensor</th><th>shape</th><th>size</th><th>memory</th></tr>` +
      `${lines.join("")}</table><div class="dl-counts">all tensors: <b data-count="total">${formatBytes(total)}</b>; ` +
      `the k*k copies (red): <b data-count="copies">${formatBytes(copies)}</b> ` +
      `(${total ? Math.round((100 * copies) / total) : 0}%)</div>`;
  });
  const stop = onChanges(model, ["batch", "channels", "num_heads", "height", "width", "kernel_size", "dilations", "impl"], draw);
  draw();
  return stop;
}

export default { render };
