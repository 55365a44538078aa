#!/usr/bin/env node
// Fetches only the UMD files of Incode's Web SDK and React 17 into vendor/web-sdk/ (the package's own deps weigh 645 MB).
'use strict';

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const DEST = path.join(__dirname, '..', 'vendor', 'web-sdk');

// [package spec, path inside the tarball, file name in vendor/web-sdk]
const FILES = [
  ['react@17.0.2', 'umd/react.production.min.js', 'react.production.min.js'],
  ['react-dom@17.0.2', 'umd/react-dom.production.min.js', 'react-dom.production.min.js'],
  ['@incodetech/welcome@1.51.0', 'dist/onBoarding.umd.js', 'onBoarding.umd.js'],
];

function present() {
  return FILES.every(([, , name]) => {
    try {
      return fs.statSync(path.join(DEST, name)).size > 0;
    } catch {
      return false;
    }
  });
}

function fetchAll() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'web-sdk-'));
  try {
    // npm pack downloads the tarballs only: no dependency tree, no install scripts.
    const out = execFileSync('npm', ['pack', '--json', '--ignore-scripts', ...FILES.map(([spec]) => spec)], {
      cwd: tmp,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      shell: process.platform === 'win32',
      timeout: 180_000,
    });
    const packed = JSON.parse(out);
    fs.mkdirSync(DEST, { recursive: true });
    FILES.forEach(([spec, inner, name], i) => {
      const pkgName = spec.slice(0, spec.lastIndexOf('@'));
      const entry = packed.find((p) => p.name === pkgName);
      if (!entry) throw new Error(`npm pack did not return ${spec}`);
      const tarball = path.join(tmp, entry.filename);
      const dir = path.join(tmp, `x${i}`);
      fs.mkdirSync(dir);
      execFileSync('tar', ['-xzf', tarball, '-C', dir, `package/${inner}`], { stdio: ['ignore', 'ignore', 'pipe'] });
      // Write then rename so an interrupted run never leaves a truncated file that looks present.
      const target = path.join(DEST, name);
      fs.copyFileSync(path.join(dir, 'package', inner), `${target}.tmp`);
      fs.renameSync(`${target}.tmp`, target);
      console.log(`web-sdk: ${spec} -> vendor/web-sdk/${name}`);
    });
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (present() && !process.argv.includes('--force')) {
  process.exit(0);
}
try {
  fetchAll();
} catch (err) {
  // Never fail `npm install`: only the sandbox demo page and the browser tests need these files.
  const detail = err && err.stderr ? String(err.stderr).trim().split('\n').slice(-3).join(' | ') : String(err && err.message);
  console.warn(`web-sdk: WARNING could not fetch the Web SDK UMD files (${detail}); the demo page and browser tests will be unavailable. Retry with: node scripts/fetch-web-sdk.js`);
}
process.exit(0);
