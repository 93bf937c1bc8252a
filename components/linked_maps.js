// The linked pair of UMAPs, drawn and linked in the browser (no Python round trip on hover).
//
// One script serves two hosts: the Streamlit component (components/linked_maps.py wraps it in an ES
// module whose default export Streamlit calls on every script run) and the interactive HTML export
// (the same script inlined after plotly.js). Both call mountLinkedMaps(root, maps, view, Plotly, onSelect).
//
// maps: what a bundle's maps are (built once per bundle in Python, cached): per side the points
//   (base64 float32 x, y, corr; int32 feature ids; uint8 orphan flags; hover labels joined by "\n"),
//   the plotly trace and layout specs of the app's paper style, and the partner table (the
//   assignment's pairs with their kept flag and correlation).
// view: what the user chose (changes on every run): selection and search hits per side, and whether
//   dropped pairs link too.
//
// Rings are drawn in an SVG layer over each plot, positioned through the plot's axes, so a hover
// costs a few DOM nodes, not a replot of 16K WebGL points; the layer is redrawn after every plotly
// redraw (zoom, pan, resize).

const SVG_NS = "http://www.w3.org/2000/svg";
// ring kinds, drawn bottom to top: partners of the other map's selection, this map's selection,
// search hits, then the hovered point and the hovered point's partners
const RING_STYLE = {
  partner: { r: 7, stroke: "#f29e1f", width: 2.5, dash: "" },
  selection: { r: 7, stroke: "#f29e1f", width: 2.5, dash: "" },
  search: { r: 10, stroke: "#d6336c", width: 2, dash: "3,2" },
  hover: { r: 9, stroke: "#111111", width: 2.5, dash: "" },
};

function decode(b64, Type) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Type(bytes.buffer);
}

function buildSide(spec, maps) {
  const x = decode(spec.x, Float32Array);
  const y = decode(spec.y, Float32Array);
  const feature = decode(spec.feature, Int32Array);
  const corr = decode(spec.corr, Float32Array);
  const orphan = decode(spec.orphan, Uint8Array);
  const labels = spec.labels === "" && feature.length === 0 ? [] : spec.labels.split("\n");
  const index = new Map();
  for (let i = 0; i < feature.length; i++) index.set(feature[i], i);
  // each point's trace, from its category (paired / unpaired / orphan / dead) by the payload's table, so
  // these maps group points as the app's static figure does; a payload without categories: orphans or matched
  const traceOf = new Array(feature.length);
  if (spec.category && maps.categories && maps.trace_categories) {
    const codes = decode(spec.category, Uint8Array);
    const byCategory = {};
    for (const [name, cats] of Object.entries(maps.trace_categories)) for (const c of cats) byCategory[c] = name;
    for (let i = 0; i < feature.length; i++) traceOf[i] = byCategory[maps.categories[codes[i]]];
  } else {
    for (let i = 0; i < feature.length; i++) traceOf[i] = orphan[i] ? "orphans" : "matched";
  }
  return { spec, x, y, feature, corr, orphan, traceOf, labels, index };
}

function buildPartners(pairs) {
  // side -> feature -> [{partner, kept, corr}]
  const a = decode(pairs.a, Int32Array);
  const b = decode(pairs.b, Int32Array);
  const kept = decode(pairs.kept, Uint8Array);
  const corr = decode(pairs.corr, Float32Array);
  const out = { a: new Map(), b: new Map() };
  for (let i = 0; i < a.length; i++) {
    const rowA = { partner: b[i], kept: kept[i] === 1, corr: corr[i] };
    const rowB = { partner: a[i], kept: kept[i] === 1, corr: corr[i] };
    if (!out.a.has(a[i])) out.a.set(a[i], []);
    if (!out.b.has(b[i])) out.b.set(b[i], []);
    out.a.get(a[i]).push(rowA);
    out.b.get(b[i]).push(rowB);
  }
  return out;
}

function otherSide(side) {
  return side === "a" ? "b" : "a";
}

function traces(side, data) {
  // the traces from the Python specs (grey orphans and unpaired underneath, matched on top), filled with
  // this side's points
  const groups = {};
  for (const spec of data.spec.traces) groups[spec.name] = [];
  for (let i = 0; i < data.feature.length; i++) if (groups[data.traceOf[i]]) groups[data.traceOf[i]].push(i);
  const out = [];
  const pointFeatures = [];
  for (const spec of data.spec.traces) {
    const rows = groups[spec.name] || [];
    const n = rows.length;
    const x = new Float32Array(n);
    const y = new Float32Array(n);
    const feats = new Int32Array(n);
    const text = new Array(n);
    const color = new Float32Array(n);
    for (let j = 0; j < n; j++) {
      const i = rows[j];
      x[j] = data.x[i];
      y[j] = data.y[i];
      feats[j] = data.feature[i];
      text[j] = `${side.toUpperCase()}${data.feature[i]}<br>${data.labels[i] || ""}`;
      color[j] = Number.isNaN(data.corr[i]) ? 0 : data.corr[i];
    }
    const trace = { ...spec, x, y, text, hovertemplate: `%{text}<extra>${side.toUpperCase()}</extra>` };
    delete trace.customdata;
    if (spec.name === "matched") trace.marker = { ...spec.marker, color };
    out.push(trace);
    pointFeatures.push(feats);
  }
  return { traces: out, pointFeatures };
}

class LinkedMaps {
  constructor(root, maps, view, Plotly, onSelect) {
    this.root = root;
    this.Plotly = Plotly;
    this.onSelect = onSelect;
    this.key = maps.key;
    this.sides = { a: buildSide(maps.sides.a, maps), b: buildSide(maps.sides.b, maps) };
    this.partners = buildPartners(maps.pairs);
    this.view = normalizeView(view);
    this.hover = null; // {side, feature}
    this.hoverMs = null;
    this.ringedNow = { a: {}, b: {} };
    this.plots = {};
    this.pointFeatures = {};
    root.innerHTML = "";
    const row = document.createElement("div");
    row.className = "fb-maps-row";
    root.appendChild(row);
    this.status = document.createElement("div");
    this.status.className = "fb-maps-status";
    this.status.textContent = "Hover a point to see its partners; click, box or lasso to select.";
    root.appendChild(this.status);
    // both cells exist before either map is drawn, so each map sizes itself to half the row
    const height = maps.height || 520;
    const cells = {};
    for (const side of ["a", "b"]) {
      const cell = document.createElement("div");
      cell.className = "fb-map-cell";
      const gd = document.createElement("div");
      gd.className = "fb-map";
      gd.setAttribute("data-side", side);
      gd.style.height = `${height}px`;
      cell.appendChild(gd);
      row.appendChild(cell);
      cells[side] = gd;
    }
    this.ready = Promise.all(["a", "b"].map((side) => this.mountSide(cells[side], side, height)));
    this.ready.then(() => {
      root.setAttribute("data-fb-maps-ready", "1");
      this.drawAll();
    });
  }

  async mountSide(gd, side, height) {
    const data = this.sides[side];
    const { traces: ts, pointFeatures } = traces(side, data);
    this.pointFeatures[side] = pointFeatures;
    const layout = { ...data.spec.layout, height, autosize: true };
    await this.Plotly.newPlot(gd, ts, layout, {
      responsive: true,
      displaylogo: false,
      modeBarButtonsToRemove: ["toImage"],
    });
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", "fb-rings");
    svg.style.position = "absolute";
    svg.style.left = "0";
    svg.style.top = "0";
    svg.style.pointerEvents = "none";
    svg.style.overflow = "hidden";
    gd.style.position = "relative";
    gd.appendChild(svg);
    this.plots[side] = { gd, svg };
    gd.on("plotly_hover", (ev) => this.onHover(side, ev));
    gd.on("plotly_unhover", () => this.setHover(null));
    gd.on("plotly_click", (ev) => {
      const f = this.eventFeatures(side, ev)[0];
      if (f !== undefined) this.select(side, [f], "click");
    });
    gd.on("plotly_selected", (ev) => {
      if (!ev) return;
      const mode = ev.lassoPoints ? "lasso" : "box";
      this.select(side, this.eventFeatures(side, ev), mode);
    });
    gd.on("plotly_deselect", () => this.select(side, [], "clear"));
    gd.on("plotly_doubleclick", () => {
      if (this.view.selection[side].length) this.select(side, [], "clear");
    });
    gd.on("plotly_afterplot", () => this.draw(side));
  }

  eventFeatures(side, ev) {
    const out = [];
    for (const p of (ev && ev.points) || []) {
      const feats = this.pointFeatures[side][p.curveNumber];
      if (feats && p.pointNumber !== undefined && p.pointNumber < feats.length) out.push(feats[p.pointNumber]);
    }
    return Array.from(new Set(out)).sort((u, v) => u - v);
  }

  partnersOf(side, features) {
    const out = new Set();
    const table = this.partners[side];
    for (const f of features) {
      for (const row of table.get(f) || []) if (row.kept || this.view.include_dropped) out.add(row.partner);
    }
    return Array.from(out);
  }

  onHover(side, ev) {
    const f = this.eventFeatures(side, ev)[0];
    if (f === undefined) return;
    const stamp = ev.event && ev.event.timeStamp ? ev.event.timeStamp : performance.now();
    this.setHover({ side, feature: f }, stamp);
  }

  setHover(hover, stamp) {
    const same = this.hover && hover && this.hover.side === hover.side && this.hover.feature === hover.feature;
    if (same || (!this.hover && !hover)) return;
    this.hover = hover;
    this.drawAll();
    if (hover) {
      const rows = (this.partners[hover.side].get(hover.feature) || []).filter((r) => r.kept || this.view.include_dropped);
      const other = otherSide(hover.side).toUpperCase();
      const label = this.sides[hover.side].labels[this.sides[hover.side].index.get(hover.feature)] || "";
      this.status.textContent =
        `${hover.side.toUpperCase()}${hover.feature} (${label}) → ` +
        (rows.length
          ? rows.map((r) => `${other}${r.partner} corr ${r.corr.toFixed(3)}${r.kept ? "" : " (dropped)"}`).join(", ")
          : "no partner");
      requestAnimationFrame(() => {
        this.hoverMs = performance.now() - stamp;
        this.root.setAttribute("data-fb-hover-ms", this.hoverMs.toFixed(1));
      });
    }
  }

  select(side, features, mode) {
    if (mode === "clear" || !features.length) {
      // in the app the selection lives in Python, where only a new non-empty selection changes it (its
      // "Clear selection" button empties it): a deselect or an empty box changes nothing and is not sent.
      // The standalone export has no Python: there a deselect clears that map
      if (this.onSelect) return;
      this.view.selection[side] = [];
      this.drawAll();
      return;
    }
    // a new selection in one map replaces the whole selection (the other map then rings its partners),
    // as the app state does
    this.view.selection = { a: [], b: [], [side]: features };
    this.drawAll();
    if (this.onSelect) this.onSelect({ side, features, mode });
  }

  update(view) {
    this.view = normalizeView(view);
    this.drawAll();
  }

  rings(side) {
    const other = otherSide(side);
    const kinds = {
      partner: this.partnersOf(other, this.view.selection[other]),
      selection: this.view.selection[side],
      search: this.view.search[side],
      hover: [],
    };
    if (this.hover) {
      kinds.hover = this.hover.side === side ? [this.hover.feature] : this.partnersOf(other, [this.hover.feature]);
    }
    return kinds;
  }

  drawAll() {
    for (const side of ["a", "b"]) this.draw(side);
  }

  draw(side) {
    const plot = this.plots[side];
    if (!plot) return;
    const { gd, svg } = plot;
    const full = gd._fullLayout;
    if (!full || !full.xaxis || !full.yaxis) return;
    const xa = full.xaxis;
    const ya = full.yaxis;
    svg.setAttribute("width", full.width);
    svg.setAttribute("height", full.height);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const clip = document.createElementNS(SVG_NS, "clipPath");
    const clipId = `fb-clip-${side}-${Math.random().toString(36).slice(2)}`;
    clip.setAttribute("id", clipId);
    const rect = document.createElementNS(SVG_NS, "rect");
    rect.setAttribute("x", xa._offset);
    rect.setAttribute("y", ya._offset);
    rect.setAttribute("width", xa._length);
    rect.setAttribute("height", ya._length);
    clip.appendChild(rect);
    svg.appendChild(clip);
    const group = document.createElementNS(SVG_NS, "g");
    group.setAttribute("clip-path", `url(#${clipId})`);
    svg.appendChild(group);
    const data = this.sides[side];
    const kinds = this.rings(side);
    const now = {};
    for (const kind of ["partner", "selection", "search", "hover"]) {
      const style = RING_STYLE[kind];
      const drawn = [];
      for (const f of kinds[kind]) {
        const i = data.index.get(f);
        if (i === undefined) continue;
        const c = document.createElementNS(SVG_NS, "circle");
        c.setAttribute("cx", (xa._offset + xa.l2p(data.x[i])).toFixed(1));
        c.setAttribute("cy", (ya._offset + ya.l2p(data.y[i])).toFixed(1));
        c.setAttribute("r", style.r);
        c.setAttribute("fill", "none");
        c.setAttribute("stroke", style.stroke);
        c.setAttribute("stroke-width", style.width);
        if (style.dash) c.setAttribute("stroke-dasharray", style.dash);
        c.setAttribute("data-kind", kind);
        c.setAttribute("data-feature", f);
        group.appendChild(c);
        drawn.push(f);
      }
      now[kind] = drawn;
    }
    this.ringedNow[side] = now;
  }

  // what tests and benchmarks read
  ringed(side, what) {
    const now = this.ringedNow[side] || {};
    if (what === "selection") return [...(now.selection || []), ...(now.partner || [])];
    return now[what] || [];
  }

  pointPosition(side, feature, scroll) {
    const plot = this.plots[side];
    const data = this.sides[side];
    const i = data.index.get(feature);
    if (!plot || i === undefined) return null;
    if (scroll) plot.gd.scrollIntoView({ block: "center" });
    const xa = plot.gd._fullLayout.xaxis;
    const ya = plot.gd._fullLayout.yaxis;
    const r = plot.gd.getBoundingClientRect();
    return [r.left + xa._offset + xa.l2p(data.x[i]), r.top + ya._offset + ya.l2p(data.y[i])];
  }
}

function normalizeView(view) {
  const v = view || {};
  const sel = v.selection || {};
  const search = v.search || {};
  return {
    selection: { a: Array.from(sel.a || []), b: Array.from(sel.b || []) },
    search: { a: Array.from(search.a || []), b: Array.from(search.b || []) },
    include_dropped: !!v.include_dropped,
  };
}

function registerApi(instance) {
  // the last mounted pair of maps, for the browser test and the page benchmark
  window.featureBridgeMaps = {
    instance,
    ready: () => instance.root.isConnected && instance.root.getAttribute("data-fb-maps-ready") === "1",
    ringed: (side, what) => instance.ringed(side, what || "selection"),
    pointPosition: (side, feature, scroll) => instance.pointPosition(side, feature, scroll),
    lastHoverMs: () => instance.hoverMs,
  };
}

function mountLinkedMaps(root, maps, view, Plotly, onSelect) {
  // reuse the maps already drawn in this root when only the view changed
  const existing = root.__fbLinkedMaps;
  if (existing && existing.key === maps.key && existing.root.isConnected) {
    existing.onSelect = onSelect;
    existing.update(view);
    registerApi(existing);
    return existing;
  }
  const instance = new LinkedMaps(root, maps, view, Plotly, onSelect);
  root.__fbLinkedMaps = instance;
  registerApi(instance);
  return instance;
}
