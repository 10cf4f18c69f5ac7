// Report pieces shared by run.js and soak.js: the machine lines, and sections
// of bench/RESULTS.md kept between markers (<!-- NAME:start --> ... <!-- NAME:end -->)
// so that one script rewriting the file does not destroy another's section.
const fs = require('node:fs');
const os = require('node:os');

/** date, machine (cores, model, RAM, load average), kernel and node, as markdown list items. */
function hostLines() {
  const cpus = os.cpus();
  return [
    `- date: ${new Date().toISOString()}`,
    `- machine: ${cpus.length} cores (${cpus[0]?.model.trim()}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, load average at start ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`,
    `- kernel: ${os.type()} ${os.release()}`,
    `- node: ${process.version}`,
  ];
}

const markers = (name) => [`<!-- ${name}:start -->`, `<!-- ${name}:end -->`];

/** The marked section NAME of `text`, markers included; undefined if absent. */
function markedSection(text, name) {
  const [start, end] = markers(name);
  const i = text.indexOf(start);
  const j = i < 0 ? -1 : text.indexOf(end, i);
  return j < 0 ? undefined : text.slice(i, j + end.length);
}

/** `block` (markers included) in place of NAME's section of `text`, or appended if it has none. */
function replaceOrAppend(text, name, block) {
  const old = markedSection(text, name);
  if (old !== undefined) return text.replace(old, () => block);
  return text.trim() ? `${text.replace(/\s*$/, '')}\n\n${block}\n` : `${block}\n`;
}

/** `body` between NAME's markers, replacing that section of `text`, or appended if it has none. */
function putMarkedSection(text, name, body) {
  const [start, end] = markers(name);
  return replaceOrAppend(text, name, `${start}\n${body.trim()}\n${end}`);
}

/** `text` with NAME's section carried over from `previous` (as is), if `previous` has one. */
function keepMarkedSection(text, previous, name) {
  const block = markedSection(previous, name);
  return block === undefined ? text : replaceOrAppend(text, name, block);
}

/** The names of every marked section of `text`, in order. */
function markedNames(text) {
  return [...text.matchAll(/<!-- ([\w.-]+):start -->/g)].map((m) => m[1]);
}

/** Reads `file`, '' if it does not exist. */
function readIfExists(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (error) {
    if (error.code === 'ENOENT') return '';
    throw error;
  }
}

module.exports = { hostLines, markedSection, markedNames, putMarkedSection, keepMarkedSection, readIfExists };
