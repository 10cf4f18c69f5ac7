#!/usr/bin/env node
// Builds dist/bundle/index.js: dist/index.js and every module it loads in a
// worker, in one file (a CommonJS module already in its wrapper function), which dist/main.js loads in the workers of a
// library-API master (see src/main.ts for why). The master's and single
// mode's runtimes stay out: in a worker they are never loaded, and if they
// were, they would load as the separate modules they are. Runs after tsc
// (`npm run build`); removes the code caches of earlier bundles.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const dist = path.resolve(__dirname, '..', 'dist');
const outdir = path.join(dist, 'bundle');

/** The modules server.js loads only outside a worker (run()'s master, single and upgrade-probe branches). */
const NOT_IN_A_WORKER = /^\.\/(master\/master|master\/upgrade|single)$/;

async function main() {
  let esbuild;
  try {
    esbuild = require('esbuild');
  } catch {
    console.error('handover: esbuild is not installed, so dist/bundle/ is not built; workers load the modules one by one (`npm install` installs it)');
    return;
  }
  fs.rmSync(outdir, { recursive: true, force: true });
  await esbuild.build({
    entryPoints: [path.join(dist, 'index.js')],
    outfile: path.join(outdir, 'index.js'),
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    logLevel: 'warning',
    external: ['*.node', '_http_common'],
    // Already in CommonJS's wrapper, which src/main.ts compiles as it is:
    // wrapping it there (Module.wrap) would copy the whole source a second
    // time into the young generation of every worker.
    banner: { js: '(function (exports, require, module, __filename, __dirname) {' },
    footer: { js: '});' },
    plugins: [{
      name: 'outside-a-worker',
      setup(build) {
        build.onResolve({ filter: NOT_IN_A_WORKER }, (args) => ({
          path: `./${path.relative(outdir, path.resolve(args.resolveDir, args.path)).split(path.sep).join('/')}.js`,
          external: true,
        }));
      },
    }],
  });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
