// The explorer page's scripts, one section per "// == name" line (explorer.py reads them by name).
// A section's free names are the args its bokeh CustomJS passes; cb_obj is the model that fired.

// == sheets_to_blobs
// Runs in the page's head: each sheet's base64 text -> a blob: URL in the CSS property --lx-{name}.
for (const el of document.querySelectorAll('script[data-lx-sheet]')) {
  const text = atob(el.textContent), bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  const url = URL.createObjectURL(new Blob([bytes], {type: el.dataset.mime}));
  document.documentElement.style.setProperty('--lx-' + el.dataset.lxSheet, `url(${url})`);
}

// == decode_under_cursor
// div; xs, ys: the grid's coordinates (G each); cols: columns of its sheet; w, h: a cell's pixels; style: its div's
const G = xs.length;
const near = (v, a) => Math.min(G - 1, Math.max(0, Math.round((v - a[0]) / ((a[G - 1] - a[0]) / (G - 1) || 1))));
const c = near(cb_obj.x, xs), r = G - 1 - near(cb_obj.y, ys), k = r * G + c;
div.text = `<div class="lx-decoded" data-cell="${k}" style="${style}`
  + `background-position:-${(k % cols) * w}px -${Math.floor(k / cols) * h}px"></div>`
  + `<div class="lx-where">(${cb_obj.x.toFixed(2)}, ${cb_obj.y.toFixed(2)}): cell row ${r + 1}, column ${c + 1} of ${G}x${G}</div>`;

// == colour_by
// source, legend, mapper; names, legends, palettes: one entry per colouring, in the menu's order
const k = names.indexOf(cb_obj.value);
mapper.palette = palettes[k];
mapper.high = palettes[k].length - 0.5;
source.data.code = source.data['code_' + k];
source.change.emit();
legend.text = legends[k];

// == show_selection
// source, div; shown: thumbnails drawn at most; style: a thumbnail's div's
const idx = source.selected.indices, d = source.data;
let html = `<b>${idx.length}</b> selected (both panels)` + (idx.length > shown ? `, the first ${shown} shown` : '')
  + ':<div style="display:flex;flex-wrap:wrap;gap:2px">';
for (const i of idx.slice(0, shown))
  html += `<div title="test ${d.test_index[i]}: ${d.cls[i]}" style="${style}background-position:${d.pos[i]}"></div>`;
div.text = html + '</div>';

// == export_selection
// source; filename: the CSV's
const d = source.data, idx = source.selected.indices;
const rows = ['test_index,class,latent_1,latent_2,projection_1,projection_2'];
for (const i of idx) rows.push([d.test_index[i], JSON.stringify(d.cls[i]), d.x2[i], d.y2[i], d.xp[i], d.yp[i]].join(','));
const a = document.createElement('a');
a.href = 'data:text/csv;charset=utf-8,' + encodeURIComponent(rows.join('\n') + '\n');
a.download = filename;
document.body.appendChild(a); a.click(); a.remove();
