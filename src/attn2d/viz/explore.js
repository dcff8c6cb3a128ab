// attn2d explore: draws the maps embedded in #attn2d-data (see attn2d/viz/explorer.py).
// Every string from the data goes into the page as text (textContent), never as HTML.
"use strict";
(function () {
  const api = { ready: false };
  window.attn2dExplore = api;

  // ---------------------------------------------------------------- small helpers
  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  // "u8:<base64>", "u16:...", "f32:..." (little-endian) to a typed array; decoded once.
  const decoded = new Map();
  function arr(text) {
    let out = decoded.get(text);
    if (out) return out;
    const colon = text.indexOf(":");
    const type = text.slice(0, colon);
    const bin = atob(text.slice(colon + 1));
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    if (type === "u8") out = bytes;
    else if (type === "u16") out = new Uint16Array(bytes.buffer);
    else if (type === "f32") out = new Float32Array(bytes.buffer);
    else throw new Error("attn2d explore: unknown array type " + type);
    decoded.set(text, out);
    return out;
  }

  function fmt(v) {
    if (v === 0 || (Math.abs(v) >= 0.01 && Math.abs(v) < 1e4)) return v.toFixed(3);
    return v.toExponential(2);
  }

  const pct = (p) => (100 * p).toFixed(1) + "%";

  // ---------------------------------------------------------------- data and drawing
  const data = JSON.parse(document.getElementById("attn2d-data").textContent);
  const lut = arr(data.colormap);
  const H = data.image.height, W = data.image.width, C = data.image.channels;
  const classes = data.classes;
  const className = (k) => (k >= 0 && k < classes.length ? classes[k] : "class " + k);

  // Paint a rows x cols canvas, one pixel per cell: code(r, c) in 0..255 through the
  // colour map, or < 0 for a transparent cell. CSS scales the canvas over the image.
  function paint(canvas, rows, cols, code) {
    canvas.width = cols;
    canvas.height = rows;
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(cols, rows);
    const px = image.data;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const o = 4 * (r * cols + c);
        const v = code(r, c);
        if (v < 0) continue; // stays transparent
        const q = 3 * Math.max(0, Math.min(255, Math.round(v)));
        px[o] = lut[q];
        px[o + 1] = lut[q + 1];
        px[o + 2] = lut[q + 2];
        px[o + 3] = 255;
      }
    }
    ctx.putImageData(image, 0, 0);
  }

  function clear(canvas) {
    canvas.width = 1;
    canvas.height = 1;
  }

  function drawPicture(canvas, k) {
    const pixels = arr(data.images[k].pixels); // (H, W, C) uint8
    canvas.width = W;
    canvas.height = H;
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(W, H);
    for (let i = 0; i < H * W; i++) {
      for (let ch = 0; ch < 3; ch++) image.data[4 * i + ch] = pixels[C * i + (C === 1 ? 0 : ch)];
      image.data[4 * i + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
  }

  function ramp() {
    const canvas = el("canvas", { class: "ramp" });
    paint(canvas, 1, 256, (r, c) => c);
    return canvas;
  }

  // ---------------------------------------------------------------- state
  const state = {
    image: 0,
    query: [H >> 1, W >> 1], // image pixel (row, column)
    pinned: false,
  };
  api.state = state;
  api.colormap = Array.from(lut);

  // The feature cell under image pixel (y, x) on a rows x cols grid (as attn2d visualize).
  const featureCell = (rows, cols) => [
    Math.min(rows - 1, Math.floor((state.query[0] * rows) / H)),
    Math.min(cols - 1, Math.floor((state.query[1] * cols) / W)),
  ];

  function stage(scale, big) {
    const node = el("div", { class: "stage" + (big ? "" : " small") }, [
      el("canvas", { class: "image" }),
      el("canvas", { class: "map" }),
      el("div", { class: "cell" }),
      el("div", { class: "marker" }),
    ]);
    node.style.width = W * scale + "px";
    node.style.height = H * scale + "px";
    return node;
  }

  function pixelAt(event, node) {
    const box = node.getBoundingClientRect();
    const x = Math.floor(((event.clientX - box.left) / box.width) * W);
    const y = Math.floor(((event.clientY - box.top) / box.height) * H);
    return [Math.min(H - 1, Math.max(0, y)), Math.min(W - 1, Math.max(0, x))];
  }

  // ---------------------------------------------------------------- one panel per model
  const bigScale = Math.max(1, Math.floor(192 / Math.max(H, W)));
  const smallScale = Math.max(1, Math.floor(96 / Math.max(H, W)));

  // Shown first: where a query looks, else a map over the image, else the first map.
  function defaultLayer(model) {
    for (const views of [["query", "cross"], ["overlay"]]) {
      const i = model.layers.findIndex((l) => views.includes(l.view));
      if (i >= 0) return i;
    }
    return 0;
  }

  function buildPanel(model, m) {
    const panel = { model, layer: defaultLayer(model), channel: null };
    const select = el("select", { class: "layer", "aria-label": "attention map" });
    const groups = new Map();
    model.layers.forEach((layer, i) => {
      if (!groups.has(layer.mechanism)) {
        groups.set(layer.mechanism, el("optgroup", { label: layer.mechanism }));
        select.append(groups.get(layer.mechanism));
      }
      groups.get(layer.mechanism).append(el("option", { value: String(i), text: layer.label }));
    });
    if (!model.layers.length) {
      select.append(el("option", { text: "no attention maps" }));
      select.disabled = true;
    }
    select.value = String(panel.layer);
    select.addEventListener("change", () => {
      panel.layer = Number(select.value);
      panel.channel = null;
      select.blur(); // arrows go back to moving between images
      render(panel);
    });
    panel.stage = stage(bigScale, true);
    panel.bars = svg("svg", { class: "bars", preserveAspectRatio: "none" });
    panel.pred = el("p", { class: "pred" });
    panel.ptrue = el("p", { class: "ptrue" });
    panel.legend = el("p", { class: "legend" });
    panel.info = el("p", { class: "info" });
    panel.lo = el("span", { class: "lo" });
    panel.hi = el("span", { class: "hi" });
    panel.scale = el("div", { class: "scale" }, [panel.lo, ramp(), panel.hi]);
    panel.cams = [];
    const camBox = el("div", { class: "gradcam" });
    if (model.gradcam) {
      for (const key of ["predicted", "true"]) {
        const fig = { key, stage: stage(smallScale, false), caption: el("figcaption") };
        camBox.append(el("figure", {}, [fig.stage, fig.caption]));
        panel.cams.push(fig);
      }
    } else if (model.gradcamNote) {
      camBox.append(el("p", { class: "note", text: "Grad-CAM: " + model.gradcamNote }));
    }
    panel.root = el("section", { class: "panel", "data-model": String(m) }, [
      el("h3", { text: model.name }),
      el("p", { class: "source", text: model.source }),
      panel.pred, panel.ptrue, select, panel.stage, panel.scale, panel.legend,
      panel.bars, panel.info, camBox,
    ]);
    panel.select = select;
    for (const node of [panel.stage, ...panel.cams.map((f) => f.stage)]) {
      node.addEventListener("mousemove", (event) => {
        if (!state.pinned) setQuery(pixelAt(event, node), false);
      });
      node.addEventListener("click", (event) => setQuery(pixelAt(event, node), true));
    }
    return panel;
  }

  function part(node, name) {
    return node.querySelector("." + name);
  }

  function setScale(panel, lo, hi) {
    panel.scale.hidden = lo === null;
    panel.lo.textContent = lo === null ? "" : fmt(lo);
    panel.hi.textContent = hi === null ? "" : fmt(hi);
  }

  function showCell(panel, rows, cols, i, j) {
    const cell = part(panel.stage, "cell");
    cell.style.left = (100 * j) / cols + "%";
    cell.style.top = (100 * i) / rows + "%";
    cell.style.width = 100 / cols + "%";
    cell.style.height = 100 / rows + "%";
  }

  function drawBars(panel, values, order, selected, name) {
    const bars = panel.bars;
    while (bars.firstChild) bars.removeChild(bars.firstChild);
    const low = Math.min(0, ...values), top = Math.max(1, ...values);
    bars.setAttribute("viewBox", `0 0 ${order.length} 100`);
    order.forEach((c, rank) => {
      const height = (100 * (values[c] - low)) / (top - low);
      const rect = svg("rect", {
        x: rank + 0.1, y: 100 - height, width: 0.8, height: Math.max(height, 0.5),
        "data-channel": c, class: c === selected ? "selected" : "",
      });
      const label = `${name(c)}: ${fmt(values[c])} (rank ${rank + 1} of ${order.length})`;
      rect.append(svg("title"));
      rect.firstChild.textContent = label;
      rect.addEventListener("mouseenter", () => { panel.info.textContent = label; });
      if (panel.model.layers[panel.layer].view === "channel") {
        rect.addEventListener("click", () => {
          panel.channel = c;
          render(panel);
        });
      }
      bars.append(rect);
    });
  }

  function render(panel) {
    const k = state.image, model = panel.model;
    const [pred, conf, ptrue] = model.predictions[k];
    const label = data.images[k].label;
    panel.pred.textContent = `predicted ${className(pred)} (${pct(conf)}) ${pred === label ? "✓" : "✗"}`;
    panel.pred.className = "pred " + (pred === label ? "right" : "wrong");
    panel.ptrue.textContent = `true class ${className(label)}: ${pct(ptrue)}`;
    drawPicture(part(panel.stage, "image"), k);
    renderMap(panel);
    for (const fig of panel.cams) {
      const cam = model.gradcam;
      const codes = arr(cam[fig.key][k] || cam.predicted[k]);
      drawPicture(part(fig.stage, "image"), k);
      paint(part(fig.stage, "map"), H, W, (r, c) => codes[r * W + c]);
      fig.caption.textContent = fig.key === "predicted"
        ? `Grad-CAM (${cam.layer}): predicted ${className(pred)}`
        : cam.true[k] ? `Grad-CAM: true ${className(label)}` : "Grad-CAM: true = predicted";
    }
  }

  function renderMap(panel) {
    const k = state.image, layer = panel.model.layers[panel.layer];
    const map = part(panel.stage, "map");
    const view = layer ? layer.view : "none";
    panel.stage.className = "stage view-" + view;
    panel.bars.style.display = view === "channel" || view === "bars" ? "" : "none";
    panel.info.textContent = "";
    if (!layer) {
      clear(map);
      setScale(panel, null, null);
      panel.legend.textContent = "no attention maps: the image and Grad-CAM only";
      return;
    }
    const d = layer.images ? layer.images[k] : layer.shared;
    const q = arr(d.q);
    if (view === "overlay" || view === "matrix") {
      const [rows, cols] = layer.grid;
      paint(map, rows, cols, (r, c) => q[r * cols + c]);
      setScale(panel, d.lo, d.hi);
      panel.legend.textContent = view === "matrix"
        ? `${layer.kind} ${rows}×${cols} (row: output channel, column: input channel)`
        : `${layer.kind} gate ${rows}×${cols}` +
          (layer.kind === "spatial" ? "" : ", mean over channels") + ", upsampled over the image";
    } else if (view === "query" || view === "cross") {
      const [rows, cols] = layer.grid;
      let [i, j] = featureCell(rows, cols);
      let row = i * cols + j, stored = "";
      if (view === "query") {
        // Large maps keep the query at the centre of every s×s block: take the nearest.
        const s = layer.stride || 1, qc = Math.ceil(cols / s), qr = Math.ceil(rows / s);
        if (s > 1) {
          const a = Math.min(qr - 1, Math.floor(i / s)), b = Math.min(qc - 1, Math.floor(j / s));
          row = a * qc + b;
          i = Math.min(rows - 1, a * s + (s >> 1));
          j = Math.min(cols - 1, b * s + (s >> 1));
          stored = ` (the nearest stored query: one per ${s}×${s} cells)`;
        }
        const [kr, kc] = layer.keys, n = kr * kc;
        paint(map, kr, kc, (r, c) => q[row * n + r * kc + c]);
      } else {
        const base = row * (cols + rows);
        // its row's weights on row i, its column's on column j, nothing elsewhere
        paint(map, rows, cols, (r, c) =>
          r === i ? q[base + c] + (c === j ? q[base + cols + r] : 0)
            : c === j ? q[base + cols + r] : -1);
      }
      showCell(panel, rows, cols, i, j);
      setScale(panel, arr(d.lo)[row], arr(d.hi)[row]);
      const keys = view === "query" ? `${layer.keys[0]}×${layer.keys[1]} keys` : "its row and column";
      panel.legend.textContent = `query pixel (${state.query[0]}, ${state.query[1]}) → ` +
        `feature (${i}, ${j}) of ${rows}×${cols}${stored}: its weights over ${keys}`;
    } else if (view === "channel") {
      const order = arr(d.order);
      const values = Array.from(q, (v) => d.lo + (v / 255) * (d.hi - d.lo));
      const ch = panel.channel !== null ? panel.channel : order[0];
      drawBars(panel, values, order, ch, (c) => `channel ${c}`);
      // Large feature stacks keep the highest-weighted channels only (d.fch lists them).
      const slot = !d.f ? -1 : d.fch ? arr(d.fch).indexOf(ch) : ch;
      if (slot >= 0) {
        const [rows, cols] = layer.grid, f = arr(d.f), off = slot * rows * cols;
        paint(map, rows, cols, (r, c) => f[off + r * cols + c]);
        setScale(panel, arr(d.flo)[slot], arr(d.fhi)[slot]);
        panel.legend.textContent = `channel weights, sorted; shown: channel ${ch} of the ` +
          `input (${rows}×${cols}), weight ${fmt(values[ch])}. Click a bar for its channel.`;
      } else if (d.f) {
        clear(map);
        setScale(panel, null, null);
        panel.legend.textContent = `channel ${ch}, weight ${fmt(values[ch])}: its feature map ` +
          `is not stored (the page keeps the ${arr(d.fch).length} highest-weighted).`;
      } else {
        clear(map);
        setScale(panel, null, null);
        panel.legend.textContent = "channel weights, sorted";
      }
    } else if (view === "bars") {
      const values = Array.from(q, (v) => d.lo + (v / 255) * (d.hi - d.lo));
      drawBars(panel, values, values.map((_, i) => i), -1, (i) => `branch ${i}`);
      clear(map);
      setScale(panel, null, null);
      panel.legend.textContent = `${layer.kind} weights over ${values.length} branches`;
    }
  }

  // ---------------------------------------------------------------- the page
  const app = document.getElementById("app");
  const counter = el("span", { class: "counter" });
  const caption = el("h2", { class: "caption" });
  const queryInfo = el("span", { class: "query-info" });
  const opacity = el("input", { type: "range", min: "0", max: "100", value: "60", class: "opacity" });
  const smooth = el("input", { type: "checkbox", class: "smooth" });
  const prev = el("button", { class: "prev", title: "previous image (←)", text: "◀" });
  const next = el("button", { class: "next", title: "next image (→)", text: "▶" });
  const thumbs = el("nav", { class: "thumbs" });
  const panelsBox = el("div", { class: "panels" });
  const n = data.images.length;

  data.images.forEach((image, k) => {
    const canvas = el("canvas");
    drawPicture(canvas, k);
    const button = el("button", { class: "thumb", "data-image": String(k), title: `#${image.index}` },
      [canvas, el("span", { text: className(image.label) })]);
    button.addEventListener("click", () => go(k));
    thumbs.append(button);
  });

  const header = el("header", {}, [
    el("h1", { text: data.title }),
    el("p", { class: "sub", text: `${data.dataset}, ${data.split} split: ${n} image(s), ` +
      `${data.models.length} model(s)` }),
    el("p", { class: "help", text: "Hover or click the image: position attention (non-local, " +
      "DANet, criss-cross) follows the query pixel in every panel; a click pins it, Esc " +
      "releases it. ← / → move between images. Click a channel bar for its feature map." }),
  ]);
  if (data.gradcamNote) header.append(el("p", { class: "note", text: data.gradcamNote }));
  const controls = el("div", { class: "controls" }, [
    prev, counter, next,
    el("label", {}, ["overlay opacity ", opacity]),
    el("label", {}, [smooth, " smooth upsampling"]),
    queryInfo,
  ]);
  const sources = el("details", { class: "sources" }, [el("summary", { text: "Models" }),
    el("ul", {}, data.models.map((m) => el("li", {}, [
      el("strong", { text: m.name }), " ", el("code", { text: m.source || "(in memory)" })])))]);
  app.append(header, controls, thumbs, caption, panelsBox, sources);

  const panels = data.models.map(buildPanel);
  panels.forEach((p) => panelsBox.append(p.root));

  function setOpacity() {
    document.body.style.setProperty("--opacity", String(Number(opacity.value) / 100));
  }
  opacity.addEventListener("input", setOpacity);
  opacity.addEventListener("change", () => opacity.blur());
  smooth.addEventListener("change", () => {
    document.body.classList.toggle("smooth", smooth.checked);
    smooth.blur();
  });
  prev.addEventListener("click", () => go(state.image - 1));
  next.addEventListener("click", () => go(state.image + 1));

  function renderQuery() {
    const t0 = performance.now();
    const [y, x] = state.query;
    queryInfo.textContent = `query pixel (${y}, ${x})` +
      (state.pinned ? ", pinned (Esc releases)" : " (click to pin)");
    for (const node of document.querySelectorAll(".stage .marker")) {
      node.style.left = (100 * (x + 0.5)) / W + "%";
      node.style.top = (100 * (y + 0.5)) / H + "%";
    }
    for (const p of panels) {
      const layer = p.model.layers[p.layer];
      if (layer && (layer.view === "query" || layer.view === "cross")) renderMap(p);
    }
    api.lastRenderMs = performance.now() - t0;
  }

  function setQuery(pixel, pin) {
    state.query = pixel;
    state.pinned = pin || state.pinned;
    renderQuery();
  }

  function renderAll() {
    const t0 = performance.now();
    const image = data.images[state.image];
    counter.textContent = `image ${state.image + 1} / ${n}`;
    caption.textContent = `${data.split} #${image.index}: ${className(image.label)}`;
    for (const t of thumbs.children) t.classList.toggle("current", Number(t.dataset.image) === state.image);
    panels.forEach(render);
    renderQuery();
    api.lastRenderMs = performance.now() - t0;
  }

  function go(k) {
    state.image = Math.min(n - 1, Math.max(0, k));
    renderAll();
  }

  document.addEventListener("keydown", (event) => {
    const tag = event.target && event.target.tagName;
    if (tag === "SELECT" || tag === "INPUT" || tag === "TEXTAREA") return;
    if (event.key === "ArrowRight") go(state.image + 1);
    else if (event.key === "ArrowLeft") go(state.image - 1);
    else if (event.key === "Escape") {
      state.pinned = false;
      renderQuery();
    } else return;
    event.preventDefault();
  });

  setOpacity();
  renderAll();
  api.go = go;
  api.readyMs = performance.now();
  api.ready = true;
})();
