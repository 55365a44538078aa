#!/usr/bin/env node
// Launcher: runs the TypeScript CLI through tsx so a fresh clone needs `npm install` and no build; where the dev
// dependencies were pruned (a deployment: `npm run build && npm prune --omit=dev`), the compiled one in dist/.
'use strict';

let tsx = true;
try {
  require.resolve('tsx/cjs');
} catch {
  tsx = false;
}
if (tsx) require('tsx/cjs');
const { main } = tsx ? require('../src/cli/main.ts') : require('../dist/cli/main.js');

main(process.argv.slice(2)).then(
  (code) => {
    // Exit once stdout is flushed (pipes are asynchronous on some platforms); open handles must not keep us alive.
    process.stdout.write('', () => process.exit(code));
  },
  (err) => {
    process.stderr.write(`incode-broker: ${err && err.message ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
