// `handover start --watch`: reload when a file under the watched paths
// changes (development). Directories are walked once and each is watched on
// its own, skipping node_modules and dot-directories, so a big dependency
// tree costs nothing; a new subdirectory is picked up when it appears.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Changes closer together than this make one reload. */
export const WATCH_DEBOUNCE_MS = 300;

const SKIPPED = (name: string) => name === 'node_modules' || name.startsWith('.');

/** Calls `onChange` with the changed file, debounced; returns a function that stops watching. */
export function watchPaths(paths: string[], onChange: (file: string) => void): () => void {
  const watchers = new Map<string, fs.FSWatcher>();
  let timer: NodeJS.Timeout | undefined;
  const changed = (file: string) => {
    clearTimeout(timer);
    timer = setTimeout(() => onChange(file), WATCH_DEBOUNCE_MS);
  };
  const watchDir = (dir: string) => {
    if (watchers.has(dir)) return;
    let watcher: fs.FSWatcher;
    try {
      watcher = fs.watch(dir, (_event, name) => {
        if (name === null || SKIPPED(String(name))) return;
        const file = path.join(dir, String(name));
        if (fs.statSync(file, { throwIfNoEntry: false })?.isDirectory()) walk(file);
        changed(file);
      });
    } catch {
      return; // gone or unreadable: nothing to watch there
    }
    watcher.on('error', () => {
      watcher.close();
      watchers.delete(dir);
    });
    watchers.set(dir, watcher);
  };
  const walk = (dir: string) => {
    watchDir(dir);
    let entries: fs.Dirent[] = [];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) if (entry.isDirectory() && !SKIPPED(entry.name)) walk(path.join(dir, entry.name));
  };
  for (const p of paths) {
    const stat = fs.statSync(p); // a missing path is the caller's error to report
    if (stat.isDirectory()) walk(path.resolve(p));
    else {
      // A file: watch its directory for it, so an editor's rename-over still counts.
      const file = path.resolve(p);
      const dir = path.dirname(file);
      const watcher = fs.watch(dir, (_event, name) => {
        if (name !== null && path.join(dir, String(name)) === file) changed(file);
      });
      watchers.set(`${file}\0file`, watcher);
    }
  }
  return () => {
    clearTimeout(timer);
    for (const watcher of watchers.values()) watcher.close();
    watchers.clear();
  };
}
