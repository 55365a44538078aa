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

// A closed stdout or stderr (`| head`) must not turn the verdict into a crash: what could not be written is lost, the
// exit code is not.
for (const stream of [process.stdout, process.stderr])
  stream.on('error', (err) => {
    if (err.code !== 'EPIPE') throw err;
  });
// The first Ctrl-C or SIGTERM stops the run, which reports what it has (the session's interviewId above all); a second
// one quits at once.
const stop = new AbortController();
const interrupted = (signal) => {
  // 128 + the signal's number, as a shell reports it.
  if (stop.signal.aborted) process.exit(signal === 'SIGTERM' ? 143 : 130);
  process.stderr.write(`incode-broker: ${signal}: stopping (again to quit at once)\n`);
  stop.abort();
};
process.on('SIGINT', interrupted);
process.on('SIGTERM', interrupted);

main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env, signal: stop.signal }).then(
  (code) => {
    // Exit once stdout is flushed (pipes are asynchronous on some platforms); open handles must not keep us alive.
    process.stdout.write('', () => process.exit(code));
  },
  (err) => {
    process.stderr.write(`incode-broker: ${err && err.message ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
