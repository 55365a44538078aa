// src/util/undici.ts: undici's own classes and request(), and a broker process that never loads undici's index.
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import * as undici from 'undici';
import { errors, Pool, request } from '../../src/util/undici';
import { brokerEnv, startEmulator } from '../helpers/harness';
import { untilHealthy } from '../helpers/broker-process';
import { freePort } from '../helpers/free-port';
import { ROOT, spawnNode } from '../helpers/node-process';
import { tempDir } from '../helpers/temp';

describe('src/util/undici', () => {
  it("exports undici's own Pool and errors (an upgrade that moves its files fails here)", () => {
    expect(Pool).toBe(undici.Pool);
    expect(errors).toBe(undici.errors);
    expect(new errors.RequestAbortedError()).toBeInstanceOf(undici.errors.UndiciError);
  });

  it("request(url, options) sends what undici's own does: method, path with its query, headers and body", async () => {
    const seen: { method?: string; url?: string; headers?: IncomingMessage['headers']; body?: string } = {};
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        Object.assign(seen, { method: req.method, url: req.url, headers: req.headers, body });
        res.writeHead(202, { 'x-answer': 'yes' }).end('x'.repeat(200_000));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { port } = server.address() as AddressInfo;
      const res = await request(`http://127.0.0.1:${port}/hooks/in?a=1&b=two`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'r-1' }, body: '{"k":1}' });
      expect(res.statusCode).toBe(202);
      expect(res.headers['x-answer']).toBe('yes');
      // dump() is the api's: the body is read (or cut off) without being kept.
      await res.body.dump();
      expect(seen).toEqual({ method: 'POST', url: '/hooks/in?a=1&b=two', headers: expect.objectContaining({ 'content-type': 'application/json', 'x-request-id': 'r-1' }), body: '{"k":1}' });
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it("a broker process that starts sessions, answers readiness and shuts down never loads undici's index", async () => {
    const emu = await startEmulator();
    const dir = tempDir('undici-lean-');
    const preload = join(dir, 'report-modules.js');
    const report = join(dir, 'modules.json');
    // At exit, every module the process loaded (CommonJS: the broker's TypeScript through tsx's require hook too).
    writeFileSync(preload, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(report)}, JSON.stringify(Object.keys(require.cache))));\n`);
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const p = spawnNode(['--require', preload, '--import', 'tsx', join(ROOT, 'src', 'server.ts')], { ...brokerEnv(emu.url), PORT: String(port), HOST: '127.0.0.1', CALLBACK_URL: 'http://127.0.0.1:9/callbacks', CALLBACK_SECRET: 'whsec_' + Buffer.alloc(32, 7).toString('base64') }, ['ignore', 'pipe', 'pipe']);
    let out = '';
    p.child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    p.child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await untilHealthy({ ...p, output: () => out }, url);
      // The readiness probe (its own request through the global dispatcher) and a session (the Incode client's Pool).
      const ready = await undici.request(`${url}/readyz`);
      expect(ready.statusCode).toBe(200);
      await ready.body.dump();
      const s = await undici.request(`${url}/session`, { method: 'POST' });
      expect(s.statusCode).toBe(200);
      await s.body.dump();
      await p.stop();
      expect(await p.exited).toBe(0);
    } finally {
      await p.stop();
      await emu.close();
    }
    const loaded = (JSON.parse(readFileSync(report, 'utf8')) as string[]).map((f) => f.replaceAll('\\', '/'));
    // Not trivially: undici's parts were loaded, from the same package.
    expect(loaded).toEqual(expect.arrayContaining([expect.stringMatching(/\/node_modules\/undici\/lib\/dispatcher\/pool\.js$/), expect.stringMatching(/\/node_modules\/undici\/lib\/api\/api-request\.js$/)]));
    expect(loaded.filter((f) => /\/node_modules\/undici\/index\.js$/.test(f))).toEqual([]);
  }, 30_000);
});
