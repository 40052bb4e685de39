// Window geometry of sliding window dilated attention, in the browser.
//
// The same rules as dilate_lab/geometry.py (dilated_window, padding_counts,
// window_span), dilate_lab/course/figures/borders.py (shifted_window),
// figures/windows.py (head_groups, window_coverage), figures/unfold.py
// (unfold_integer_map), figures/architecture.py (dilateformer_stage_shapes) and
// course/_controls.py (parse_dilations), written again in
// JavaScript so that an explorer answers a drag in the same frame, with no
// kernel. tests/test_explorers.py runs these functions with node over a grid of
// settings and compares every number with the Python functions.
//
// Pure functions only: no DOM. Each explorer's ES module is this file, draw.js
// and its own file joined into one module (see explorers/_base.py).

export function windowSpan(kernelSize, dilation) {
  return (kernelSize - 1) * dilation + 1;
}

// The k*k (row, col) offsets in window order: row-major over (p, q), like nn.Unfold.
export function windowOffsets(kernelSize, dilation) {
  const half = Math.floor(kernelSize / 2);
  const offsets = [];
  for (let p = -half; p <= half; p++) {
    for (let q = -half; q <= half; q++) offsets.push([p * dilation, q * dilation]);
  }
  return offsets;
}

// The positions the query (row, col) attends to, which of them lie beyond the border.
export function dilatedWindow(row, col, kernelSize, dilation, height, width) {
  const positions = windowOffsets(kernelSize, dilation).map(([dr, dc]) => [row + dr, col + dc]);
  const outside = positions.map(([r, c]) => !(r >= 0 && r < height && c >= 0 && c < width));
  const nOutside = outside.filter(Boolean).length;
  return {
    positions, outside, nOutside, nInside: positions.length - nOutside,
    span: windowSpan(kernelSize, dilation),
  };
}

// For every query of the map, how many of its k*k window positions are zero padding.
export function paddingCounts(height, width, kernelSize, dilation) {
  const offsets = windowOffsets(kernelSize, dilation);
  const counts = [];
  for (let i = 0; i < height; i++) {
    const row = [];
    for (let j = 0; j < width; j++) {
      let n = 0;
      for (const [dr, dc] of offsets) {
        const r = i + dr, c = j + dc;
        if (r < 0 || r >= height || c < 0 || c >= width) n++;
      }
      row.push(n);
    }
    counts.push(row);
  }
  return counts;
}

// For each dilation, how many of every query's k*k window positions lie on the map (zero
// padding fills the rest), and what that comes to over the whole map: the padded keys, the
// queries whose whole window is on the map, the mean share of softmax mass on real keys when
// all logits are equal. The grids are figures/windows.py's window_coverage.
export function windowCoverage(height, width, kernelSize, dilations) {
  const kk = kernelSize * kernelSize;
  return dilations.map((dilation) => {
    const onMap = paddingCounts(height, width, kernelSize, dilation).map((line) => line.map((n) => kk - n));
    let paddedKeys = 0, fullQueries = 0;
    for (const line of onMap) {
      for (const n of line) {
        paddedKeys += kk - n;
        if (n === kk) fullQueries++;
      }
    }
    const keys = height * width * kk;
    return { dilation, onMap, paddedKeys, fullQueries, keys, meanShare: (keys - paddedKeys) / keys };
  });
}

// Python's repr() of a short string, for messages that quote what a learner typed.
function pyRepr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  const body = text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/\t/g, "\\t")
    .replace(new RegExp(quote, "g"), `\\${quote}`);
  return quote + body + quote;
}

// A typed dilation schedule, '1, 2, 3' -> {values: [1, 2, 3]} or {error}: the rules and the
// messages of dilate_lab.course._controls.parse_dilations (commas or semicolons between ints).
export function parseDilations(text, name = "dilations", maxCount = 8, maxDilation = 8) {
  const parts = String(text).replace(/;/g, ",").split(",").map((p) => p.trim()).filter((p) => p !== "");
  if (parts.some((p) => !/^[+-]?\d+(_\d+)*$/.test(p))) {
    return { values: null, error: `${name} must be ints separated by commas, e.g. 1, 2, 3; got ${pyRepr(String(text))}` };
  }
  const values = parts.map((p) => Number(p.replace(/_/g, "")));
  if (!values.length) {
    return { values: null, error: `${name} must name at least one dilation, e.g. 1, 2, 3; got ${pyRepr(String(text))}` };
  }
  if (values.length > maxCount) {
    return { values: null, error: `${name}: at most ${maxCount} entries here, got ${values.length}` };
  }
  if (values.some((r) => r < 1 || r > maxDilation)) {
    const tuple = values.length === 1 ? `(${values[0]},)` : `(${values.join(", ")})`;
    return { values: null, error: `${name}: every dilation must be an int in [1, ${maxDilation}] here; got ${tuple}` };
  }
  return { values, error: null };
}

function shiftedStart(index, length, kernelSize, dilation) {
  const residue = index % dilation;
  const subgridLength = Math.floor((length - residue + dilation - 1) / dilation);
  const centred = Math.floor(index / dilation) - Math.floor(kernelSize / 2);
  const start = Math.min(Math.max(centred, 0), subgridLength - kernelSize);
  return residue + start * dilation;
}

// NATTEN's window: the dilated window, shifted inward at the border so that no position
// is padding. Returns {positions} or {error} where the map is too small for it.
export function shiftedWindow(row, col, kernelSize, dilation, height, width) {
  for (const [name, size] of [["height", height], ["width", width]]) {
    if (kernelSize * dilation > size) {
      return {
        positions: [],
        error: `NATTEN's shifted window needs kernel_size * dilation <= ${name}; got ` +
          `${kernelSize} * ${dilation} = ${kernelSize * dilation} > ${name} = ${size}`,
      };
    }
  }
  const top = shiftedStart(row, height, kernelSize, dilation);
  const left = shiftedStart(col, width, kernelSize, dilation);
  const positions = [];
  for (let a = 0; a < kernelSize; a++) {
    for (let b = 0; b < kernelSize; b++) positions.push([top + a * dilation, left + b * dilation]);
  }
  return { positions, error: null };
}

// How MSDA splits heads and channels across dilations: {groups} or {error} (MSDA's rule).
export function headGroups(dim, numHeads, dilations, kernelSize) {
  if (dim % numHeads !== 0) {
    return { groups: [], error: `dim (${dim}) must be divisible by num_heads (${numHeads}), so that every head gets the same number of channels` };
  }
  if (numHeads % dilations.length !== 0) {
    return {
      groups: [],
      error: `num_heads (${numHeads}) must be a multiple of len(dilations) (${dilations.length}, from dilations=(${dilations.join(", ")})), so that every dilation gets the same number of heads`,
    };
  }
  const heads = numHeads / dilations.length, channels = dim / dilations.length;
  const groups = dilations.map((r, i) => ({
    index: i, dilation: r,
    heads: [i * heads, (i + 1) * heads], channels: [i * channels, (i + 1) * channels],
    span: windowSpan(kernelSize, r),
  }));
  return { groups, error: null };
}

// F.unfold of the map 1..H*W with padding r*(k//2): (k*k) rows, H*W columns; 0 = padding.
export function unfoldColumns(height, width, kernelSize, dilation) {
  const offsets = windowOffsets(kernelSize, dilation);
  return offsets.map(([dr, dc]) => {
    const line = [];
    for (let i = 0; i < height; i++) {
      for (let j = 0; j < width; j++) {
        const r = i + dr, c = j + dc;
        line.push(r >= 0 && r < height && c >= 0 && c < width ? r * width + c + 1 : 0);
      }
    }
    return line;
  });
}

// A 3x3 convolution with stride 2 and padding 1: n -> ceil(n / 2).
export function downsampledSide(side) {
  return Math.floor((side + 1) / 2);
}

// DilateFormer's stages for a square image: channels, side, depth, block kind, heads, dilation.
export function stageShapes(imageSize, embedDim, depths, numHeads, dilation, dilateAttention, downsamples) {
  let side = downsampledSide(downsampledSide(imageSize));
  let channels = embedDim;
  const stages = [];
  depths.forEach((depth, i) => {
    const dilated = dilateAttention[i];
    stages.push({
      index: i, channels, height: side, width: side, depth,
      kind: dilated ? "DilateBlock" : "GlobalBlock", numHeads: numHeads[i],
      dilation: dilated ? dilation.slice() : null,
    });
    if (downsamples[i]) {
      side = downsampledSide(side);
      channels *= 2;
    }
  });
  return stages;
}

const product = (shape) => shape.reduce((a, b) => a * b, 1);

// Every tensor of one MSDA forward pass (float32), in the order the module makes them:
// {rows: [{step, shape, nbytes, group, kkCopy, vsInput, note}]} or {error}. The same
// rows as dilate_lab.course.shapes.trace_msda_shapes, which traces a real forward pass.
export function msdaShapes(batch, channels, height, width, numHeads, kernelSize, dilations, impl) {
  const split = headGroups(channels, numHeads, dilations, kernelSize);
  if (split.error) return { rows: [], error: split.error.replace("len(dilations)", "len(dilation)").replace("dilations=", "dilation=") };
  const n = dilations.length, heads = numHeads / n, headDim = channels / numHeads;
  const kk = kernelSize * kernelSize, pixels = height * width;
  const input = batch * pixels * channels;
  const rows = [];
  const add = (step, shape, group = null, note = "", groupK = 0) => {
    const numel = product(shape);
    rows.push({
      step, shape, nbytes: 4 * numel, group, note, vsInput: numel / input,
      kkCopy: groupK > 0 && kk > 1 && numel === kk * groupK,
    });
  };
  add("input (B, H, W, C)", [batch, height, width, channels]);
  add("qkv", [batch, 3 * channels, height, width], null, "1x1 conv; channels [q | k | v], each split into groups");
  dilations.forEach((r, g) => {
    const qkvShape = [batch, heads, height, width, headDim], groupK = product(qkvShape);
    for (const name of ["q", "k", "v"]) add(`group ${g} ${name} (dilation ${r})`, qkvShape, g);
    if (impl === "unfold") {
      add(`group ${g} unfolded K (dilation ${r})`, [batch, heads, pixels, kk, headDim], g, "k*k copy of K", groupK);
      add(`group ${g} unfolded V (dilation ${r})`, [batch, heads, pixels, kk, headDim], g, "k*k copy of V", groupK);
      add(`group ${g} attention weights (dilation ${r})`, [batch, heads, pixels, 1, kk], g, "one weight per window position", groupK);
    } else {
      add(`group ${g} attention weights (dilation ${r})`, [batch, heads, height, width, kk], g, "", groupK);
    }
    add(`group ${g} output (dilation ${r})`, [batch, height, width, channels / n], g);
  });
  add("heads concatenated", [batch, height, width, channels]);
  add("output (after proj)", [batch, height, width, channels]);
  return { rows, error: null };
}
