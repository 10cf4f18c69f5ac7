// Small numeric and markdown helpers.
const pct = (values, p) => {
  const sorted = values.slice().sort((a, b) => a - b);
  return sorted.length ? sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] : NaN;
};
const median = (values) => pct(values, 50);
const int = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–');
const fixed = (n, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '–');
const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}x` : '–');
const mb = (kb) => (Number.isFinite(kb) ? `${(kb / 1024).toFixed(1)} MB` : '–');

/** A markdown table from a header row and rows of cells. */
function table(header, rows) {
  const line = (cells) => `| ${cells.map((c) => String(c ?? '').replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/** "ECONNRESET 3, EPIPE 1" from {code: n}. */
const codes = (errors) => Object.entries(errors || {}).map(([c, n]) => `${c} ${n}`).join(', ');
const sum = (errors) => Object.values(errors || {}).reduce((a, b) => a + b, 0);

module.exports = { pct, median, int, fixed, ratio, mb, table, codes, sum };
