// The standalone emulator (`npm run emulator`): configured from EMULATOR_* variables, stopped cleanly by SIGTERM.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { request } from 'undici';
import { freePort } from '../helpers/free-port';
import { ROOT, spawnNode } from '../helpers/node-process';
import { waitFor } from '../helpers/wait';

describe('npm run emulator', () => {
  it('listens where EMULATOR_PORT says, takes its faults from the environment, and exits 0 on SIGTERM', async () => {
    const port = await freePort();
    const key = 'standalone-key-0123456789';
    const p = spawnNode(['--import', 'tsx', join(ROOT, 'src', 'emulator', 'main.ts')], { EMULATOR_PORT: String(port), EMULATOR_API_KEY: key, EMULATOR_ERROR_RATE: '1', EMULATOR_FAULT_PATHS: '/omni/add/, /omni/process/' }, ['ignore', 'pipe', 'pipe']);
    let out = '';
    p.child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitFor(() => out.includes('listening'), 20_000, 50);
      const base = `http://127.0.0.1:${port}`;
      const faults = await request(`${base}/__emulator/faults`, { headers: { 'x-api-key': key } });
      expect(await faults.body.json()).toMatchObject({ errorRate: 1, faultPaths: ['/omni/add/', '/omni/process/'] });
      // Only those paths fail: a start still works, an upload does not.
      const start = await request(`${base}/omni/start`, { method: 'POST', headers: { 'x-api-key': key, 'api-version': '1.0', 'content-type': 'application/json' }, body: '{}' });
      expect(start.statusCode).toBe(200);
      const { token } = (await start.body.json()) as { token: string };
      const upload = await request(`${base}/omni/add/front-id/v2`, { method: 'POST', headers: { 'x-api-key': key, 'api-version': '1.0', 'x-incode-hardware-id': token, 'content-type': 'application/json' }, body: '{"base64Image":"AAAA"}' });
      expect(upload.statusCode).toBe(503);
      await upload.body.dump();
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
    } finally {
      await p.stop();
    }
  }, 30_000);

  it('takes the webhook retry schedule and timeout from the environment (none: a single delivery)', async () => {
    const port = await freePort();
    const key = 'standalone-key-0123456789';
    let hits = 0;
    const receiver = createServer((_req, res) => {
      hits++;
      res.writeHead(500).end();
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const hook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
    const p = spawnNode(['--import', 'tsx', join(ROOT, 'src', 'emulator', 'main.ts')], { EMULATOR_PORT: String(port), EMULATOR_API_KEY: key, EMULATOR_WEBHOOK_URL: hook, EMULATOR_WEBHOOK_RETRY_DELAYS_MS: '', EMULATOR_WEBHOOK_TIMEOUT_MS: '1000' }, ['ignore', 'pipe', 'pipe']);
    let out = '';
    p.child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitFor(() => out.includes('listening'), 20_000, 50);
      const base = `http://127.0.0.1:${port}`;
      const start = await request(`${base}/omni/start`, { method: 'POST', headers: { 'x-api-key': key, 'api-version': '1.0', 'content-type': 'application/json' }, body: '{}' });
      const { interviewId } = (await start.body.json()) as { interviewId: string };
      const expired = await request(`${base}/__emulator/sessions/${interviewId}/expire`, { method: 'POST', headers: { 'x-api-key': key } });
      await expired.body.dump();
      const failed = await waitFor(async () => {
        const r = await request(`${base}/__emulator/webhooks`, { headers: { 'x-api-key': key } });
        const body = (await r.body.json()) as { stats: { failed: number; retries: number } };
        return body.stats.failed === 1 ? body.stats : null;
      }, 10_000, 50);
      expect(failed.retries).toBe(0);
      expect(hits).toBe(1);
    } finally {
      await p.stop();
      await new Promise((r) => receiver.close(r));
    }
  }, 30_000);
});
