// The explorer page's scripts, one section per "// == name" line (explorer_page.py reads them by name).
// A section's free names are the args its bokeh CustomJS passes; cb_obj is the model or event that
// fired, cb_data what a hover tool found. window.LX (page_setup) holds what the sections share.

// == page_setup
// Runs once the page's body exists, after window.LX_CONFIG (explorer_page.py's config) is set.
const setup = () => {
  const C = window.LX_CONFIG, urls = {}, per = C.side * C.side;
  // a file's URL: its embedded base64 text as a blob: URL (made once), else the tile folder beside the page
  const file = name => {
    if (urls[name]) return urls[name];
    const el = document.querySelector(`script[data-lx-file="${name}"]`);
    if (el) {
      const text = atob(el.textContent), bytes = new Uint8Array(text.length);
      for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
      urls[name] = URL.createObjectURL(new Blob([bytes], {type: name.endsWith('.png') ? 'image/png' : 'image/jpeg'}));
    } else {
      urls[name] = `${encodeURIComponent(C.tiles)}/${name}`;
    }
    return urls[name];
  };
  const esc = s => String(s).replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`);
  // image i of a set (test: the images; rec0, rec1: each model's reconstructions), as its tile's cell
  const thumb = (set, i, title = '') => {
    const t = Math.floor(i / per), j = i % per, w = C.tw, h = C.th;
    return `<div class="lx-${set}" data-i="${i}" title="${esc(title)}" style="width:${w}px;height:${h}px;`
      + `background-image:url('${file(`${set}_${t}.${set === 'test' ? 'png' : 'jpg'}`)}');`
      + `background-size:${C.side * w}px auto;background-position:-${(j % C.side) * w}px -${Math.floor(j / C.side) * h}px;`
      + 'image-rendering:pixelated;background-repeat:no-repeat;border:1px solid #ccc"></div>';
  };
  const name = (d, i) => `${C.splits[d.split[i]]} ${d.item[i]}`;
  const cls = (d, i) => C.classes[d.label[i]];
  const perModel = (d, i, col, text) => C.models.map((m, k) => d[`${col}_${k}`][i] < 0 ? null : `${text(d[`${col}_${k}`][i], k)} (${m})`)
    .filter(s => s !== null).join(', ');
  const card = document.createElement('div');
  card.className = 'lx-tooltip';
  card.style.cssText = 'position:fixed;display:none;z-index:1000;background:#fff;border:1px solid #888;padding:6px;'
    + 'font:12px sans-serif;pointer-events:none;box-shadow:0 2px 6px rgba(0,0,0,.3);max-width:420px';
  document.body.appendChild(card);
  let mouse = [0, 0];
  // pointermove, captured at the document: it runs before bokeh's own handler, so the card follows this move
  document.addEventListener('pointermove', e => { mouse = [e.clientX, e.clientY]; }, true);
  const caption = (img, text) => `<div style="text-align:center;font-size:10px">${img}${esc(text)}</div>`;
  const showCard = (d, i) => {
    if (card.dataset.i !== String(i)) {
      const lines = [`<b>${esc(cls(d, i))}</b>, <span class="lx-index">${name(d, i)}</span>`];
      if (C.files) lines.push(`file <span class="lx-file">${esc(C.files[i])}</span>`);
      const clusters = perModel(d, i, 'cluster', c => c), preds = perModel(d, i, 'pred',
        p => `${esc(C.classes[p])} ${p === d.label[i] ? '(right)' : '(WRONG)'}`);
      if (clusters) lines.push(`k-means cluster: ${clusters}`);
      if (preds) lines.push(`${esc(C.probe)} classifier: ${preds}`);
      lines.push('reconstruction MSE: ' + perModel(d, i, 'err', e => e.toFixed(4)));
      lines.push(`neighbours kept: ${Math.round(d.kept[i] * C.k)} of ${C.k}`);
      card.innerHTML = '<div style="display:flex;gap:4px">' + caption(thumb('test', i), 'image')
        + C.models.map((m, k) => caption(thumb(`rec${k}`, i), m)).join('') + '</div>'
        + lines.map(l => `<div>${l}</div>`).join('');
      card.dataset.i = String(i);
    }
    card.style.display = 'block';
    const r = card.getBoundingClientRect();
    card.style.left = `${Math.min(mouse[0] + 16, window.innerWidth - r.width - 4)}px`;
    card.style.top = `${mouse[1] + 16 + r.height > window.innerHeight ? mouse[1] - r.height - 8 : mouse[1] + 16}px`;
  };
  // the k nearest points of i in the right panel's picture, nearest first (ties: the lower index)
  const nearestInPicture = (d, i, k) => {
    const best = [];
    for (let j = 0; j < d.xp.length; j++) {
      if (j === i) continue;
      const dd = (d.xp[j] - d.xp[i]) ** 2 + (d.yp[j] - d.yp[i]) ** 2;
      if (best.length < k || dd < best[best.length - 1][0]) {
        best.push([dd, j]);
        best.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        if (best.length > k) best.pop();
      }
    }
    return best.map(([dd, j]) => [j, Math.sqrt(dd)]);
  };
  window.LX = {C, file, esc, thumb, name, cls, showCard, nearestInPicture,
    hideCard: () => { card.style.display = 'none'; }};
};
if (document.body) setup(); else document.addEventListener('DOMContentLoaded', setup);

// == hover
// source; panel: 0 (the 2-d latents) or 1 (the projection). Shows the card of the nearest point under the cursor.
const idx = cb_data.index.indices, d = source.data, g = cb_data.geometry;
if (!idx.length) {
  LX.hideCard();
} else {
  const x = panel ? d.xp : d.x2, y = panel ? d.yp : d.y2;
  let best = idx[0];
  for (const i of idx) if ((x[i] - g.x) ** 2 + (y[i] - g.y) ** 2 < (x[best] - g.x) ** 2 + (y[best] - g.y) ** 2) best = i;
  LX.showCard(d, best);
}

// == neighbours
// source, marks, div, plot, view; panel: 0 or 1. A click picks the drawn point within 10 screen pixels (none: clears).
const d = source.data, C = LX.C, shown = view.filter.booleans;
const x = panel ? d.xp : d.x2, y = panel ? d.yp : d.y2;
const fx = plot.inner_width / (plot.x_range.end - plot.x_range.start);
const fy = plot.inner_height / (plot.y_range.end - plot.y_range.start);
let at = -1, near = 100;
for (let i = 0; i < x.length; i++) {
  if (!shown[i]) continue;
  const dd = ((x[i] - cb_obj.x) * fx) ** 2 + ((y[i] - cb_obj.y) * fy) ** 2;
  if (dd < near) { near = dd; at = i; }
}
if (at < 0) {
  marks.data = {x2: [], y2: [], xp: [], yp: [], marker: [], line: []};
  div.text = '';
} else {
  const full = [...Array(C.k).keys()].map(j => [d[`nb_${j}`][at], d[`nd_${j}`][at]]);
  const pic = LX.nearestInPicture(d, at, C.k);
  const all = [at, ...full.map(e => e[0]), ...pic.map(e => e[0])];
  marks.data = {x2: all.map(i => d.x2[i]), y2: all.map(i => d.y2[i]), xp: all.map(i => d.xp[i]), yp: all.map(i => d.yp[i]),
    marker: ['diamond', ...full.map(() => 'circle'), ...pic.map(() => 'square')],
    line: ['#000000', ...full.map(() => '#000000'), ...pic.map(() => '#7f7f7f')]};
  const kept = full.filter(e => pic.some(p => p[0] === e[0])).length;
  const list = (rows, space) => '<div style="display:flex;flex-wrap:wrap;gap:6px">' + rows.map(([i, dist]) =>
    `<div class="lx-neighbour" data-space="${space}" data-i="${i}" style="text-align:center;font-size:10px">`
    + `${LX.thumb('test', i)}${LX.name(d, i)}<br>${LX.esc(LX.cls(d, i))}<br>d = ${dist.toPrecision(3)}</div>`).join('') + '</div>';
  div.text = `<b class="lx-picked" data-i="${at}">${LX.name(d, at)}</b> (${LX.esc(LX.cls(d, at))}): `
    + `<b>${kept} of ${C.k}</b> of its nearest neighbours in the ${C.models[1]} latents are among its ${C.k} nearest in the `
    + `picture (right panel). Diamond: the point; circles: its neighbours in the ${C.models[1]} latents; squares: in the picture.`
    + `<div><b>in the ${C.models[1]} latents</b> (Euclidean distance)${list(full, 'latent')}</div>`
    + `<div><b>in the picture</b> (distance in the right panel)${list(pic, 'picture')}</div>`;
}

// == colour_by
// source, legend, mapper, bar; table: one entry per colouring ({name, column, palette, low, high, number, legend})
const t = table.find(e => e.name === cb_obj.value);
mapper.palette = t.palette;
mapper.low = t.low;
mapper.high = t.high;
source.data.code = source.data[t.column];
source.change.emit();
legend.text = t.legend;
bar.title = t.name;
bar.visible = t.number;

// == show_split
// source, view, marks: the split menu draws one split or all of them
const want = LX.C.splits.indexOf(cb_obj.value);
view.filter.booleans = Array.from(source.data.split, s => want < 0 || s === want);
marks.data = {x2: [], y2: [], xp: [], yp: [], marker: [], line: []};

// == search
// source, plots, div, view: a class name (class 3: a class named by a number), an index (test 12,
// train 34 or 12), or a part of a file name
const q = cb_obj.value.trim().toLowerCase(), d = source.data, C = LX.C, shown = view.filter.booleans;
const named = q.startsWith('class ') ? q.slice(6).trim() : q;
const exact = C.classes.findIndex(c => String(c).toLowerCase() === named);
const num = exact >= 0 && named !== q ? null : q.match(/^(?:(test|train)\s+)?(\d+)$/);
const hits = [];
for (let i = 0; i < d.label.length && q; i++) {
  if (!shown[i]) continue;
  if (num ? d.item[i] === +num[2] && (!num[1] || C.splits[d.split[i]] === num[1])
      : exact >= 0 ? d.label[i] === exact
      : (C.files && C.files[i].toLowerCase().includes(q)) || String(C.classes[d.label[i]]).toLowerCase().includes(q))
    hits.push(i);
}
source.selected.indices = hits;
if (q && !hits.length) div.text = `nothing matches "${LX.esc(q)}": a class name, an index (test 12, train 34) or part of a file name`;
if (hits.length) {
  plots.forEach((p, k) => {  // zoom to the matches, with a margin
    const x = k ? d.xp : d.x2, y = k ? d.yp : d.y2;
    let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
    for (const i of hits) {
      x0 = Math.min(x0, x[i]); x1 = Math.max(x1, x[i]); y0 = Math.min(y0, y[i]); y1 = Math.max(y1, y[i]);
    }
    const mx = Math.max((x1 - x0) * 0.1, 1e-3 * (Math.abs(x0) + 1)), my = Math.max((y1 - y0) * 0.1, 1e-3 * (Math.abs(y0) + 1));
    p.x_range.setv({start: x0 - mx, end: x1 + mx});
    p.y_range.setv({start: y0 - my, end: y1 + my});
  });
}

// == decode_under_cursor
// div; xs, ys: the grid's coordinates (G each)
const C = LX.C.grid, G = xs.length;
const near = (v, a) => Math.min(G - 1, Math.max(0, Math.round((v - a[0]) / ((a[G - 1] - a[0]) / (G - 1) || 1))));
const c = near(cb_obj.x, xs), r = G - 1 - near(cb_obj.y, ys), k = r * G + c;
div.text = `<div class="lx-decoded" data-cell="${k}" style="width:${C.w}px;height:${C.h}px;`
  + `background-image:url('${LX.file('grid_0.jpg')}');background-size:${C.cols * C.w}px auto;`
  + `background-position:-${(k % C.cols) * C.w}px -${Math.floor(k / C.cols) * C.h}px;`
  + 'image-rendering:pixelated;background-repeat:no-repeat;border:1px solid #ccc"></div>'
  + `<div class="lx-where">(${cb_obj.x.toFixed(2)}, ${cb_obj.y.toFixed(2)}): cell row ${r + 1}, column ${c + 1} of ${G}x${G}</div>`;

// == film_epoch
// source, label; epochs: the recorded epochs (from 0); total: the training's; n: points;
// fx0, fy0, fx1, fy1: each model's coordinates, frame after frame
const e = cb_obj.value - 1, s = e * n;
source.data = {...source.data, x0: fx0.slice(s, s + n), y0: fy0.slice(s, s + n), x1: fx1.slice(s, s + n),
  y1: fy1.slice(s, s + n)};
label.text = `epoch ${epochs[e] + 1} of ${total}`;

// == film_play
// slider, button; ms: a frame's time. Play the film from where the slider is, round and round; again: stop
if (window.lxFilm) {
  clearInterval(window.lxFilm);
  window.lxFilm = null;
  button.label = 'play';
} else {
  button.label = 'stop';
  window.lxFilm = setInterval(() => { slider.value = slider.value % slider.end + 1; }, ms);
}

// == show_selection
// source, div; shown: thumbnails drawn at most
const idx = source.selected.indices, d = source.data;
let html = `<b>${idx.length}</b> selected (both panels)` + (idx.length > shown ? `, the first ${shown} shown` : '')
  + ':<div style="display:flex;flex-wrap:wrap;gap:2px">';
for (const i of idx.slice(0, shown)) html += LX.thumb('test', i, `${LX.name(d, i)}: ${LX.cls(d, i)}`);
div.text = html + '</div>';

// == export_selection
// source; filename: the CSV's
const d = source.data, idx = source.selected.indices, C = LX.C;
const rows = ['split,index,class,file,latent_1,latent_2,projection_1,projection_2'];
for (const i of idx)
  rows.push([C.splits[d.split[i]], d.item[i], JSON.stringify(String(LX.cls(d, i))), JSON.stringify(C.files ? C.files[i] : ''),
    d.x2[i], d.y2[i], d.xp[i], d.yp[i]].join(','));
const a = document.createElement('a');
a.href = 'data:text/csv;charset=utf-8,' + encodeURIComponent(rows.join('\n') + '\n');
a.download = filename;
document.body.appendChild(a); a.click(); a.remove();
