#!/usr/bin/env node
// Launcher: runs the TypeScript CLI through tsx so a fresh clone needs `npm install` and no build.
'use strict';

require('tsx/cjs');
const { main } = require('../src/cli/main.ts');

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
