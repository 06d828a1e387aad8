// A small line chart on a <canvas>: a rolling time window, several series, gaps where a value is missing.
// Hand-written so the page needs nothing from the network (it also runs in an OBS dock offline).
"use strict";

class LineChart {
  // series: [{key, label, color}]; opts: {title, unit, windowS, max (a fixed top, e.g. 1), digits}
  constructor(canvas, series, opts) {
    this.canvas = canvas;
    this.series = series;
    this.opts = Object.assign({windowS: 300, max: null, digits: 1, unit: ""}, opts);
  }

  // the smallest 1/2/5 x 10^n at or above v: round axis labels
  static niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  draw(samples) {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (w === 0 || h === 0) return;  // hidden: nothing to draw into
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);  // sharp lines on HiDPI screens
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const o = this.opts, left = 38, right = 6, top = 20, bottom = 16;
    const pw = w - left - right, ph = h - top - bottom;
    const tEnd = samples.length ? samples[samples.length - 1].t : 0;
    // the window grows with the data from 1 minute to windowS: a young daemon's line is not a dot at the edge
    const span = Math.min(o.windowS, Math.max(60, samples.length ? tEnd - samples[0].t : 0)), tStart = tEnd - span;
    let hi = 0;
    for (const s of samples) for (const ser of this.series) {
      const v = s[ser.key];
      if (typeof v === "number" && isFinite(v) && s.t >= tStart) hi = Math.max(hi, v);
    }
    const yMax = o.max !== null ? o.max : 4 * LineChart.niceCeil((hi * 1.1) / 4);  // 4 round grid steps
    const x = (t) => left + ((t - tStart) / span) * pw;
    const y = (v) => top + ph - (Math.min(v, yMax) / yMax) * ph;

    g.font = "11px system-ui, sans-serif";
    g.lineWidth = 1;
    g.strokeStyle = "#333";
    g.fillStyle = "#999";
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {  // horizontal grid with its values
      const v = (yMax * i) / 4, yy = Math.round(y(v)) + 0.5;
      g.beginPath(); g.moveTo(left, yy); g.lineTo(left + pw, yy); g.stroke();
      g.fillText(String(Number(v.toPrecision(3))), left - 4, yy);
    }
    g.textAlign = "left";
    g.textBaseline = "alphabetic";
    g.fillText(span >= 120 ? `-${Math.round(span / 60)} min` : `-${Math.round(span)} s`, left, h - 3);
    g.textAlign = "right";
    g.fillText("now", left + pw, h - 3);

    let lx = left;  // legend: label and latest value of each series, in its colour
    g.textAlign = "left";
    g.fillStyle = "#ddd";
    g.fillText(o.title, lx, 13);
    lx += g.measureText(o.title).width + 10;
    for (const ser of this.series) {
      const last = samples.length ? samples[samples.length - 1][ser.key] : null;
      const text = `${ser.label} ${typeof last === "number" ? last.toFixed(o.digits) + o.unit : "-"}`;
      g.fillStyle = ser.color;
      g.fillText(text, lx, 13);
      lx += g.measureText(text).width + 10;
    }

    g.lineWidth = 1.5;
    for (const ser of this.series) {
      g.strokeStyle = ser.color;
      g.beginPath();
      let pen = false;  // a missing value lifts the pen: no line across a gap
      for (const s of samples) {
        const v = s[ser.key];
        if (s.t < tStart || typeof v !== "number" || !isFinite(v)) { pen = false; continue; }
        if (pen) g.lineTo(x(s.t), y(v)); else g.moveTo(x(s.t), y(v));
        pen = true;
      }
      g.stroke();
    }
  }
}
