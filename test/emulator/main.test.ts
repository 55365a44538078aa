// The standalone emulator (`npm run emulator`): configured from EMULATOR_* variables, stopped cleanly by SIGTERM.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { request } from 'undici';
import { freePort } from '../helpers/free-port';
import { ROOT, spawnNode } from '../helpers/node-process';
import { waitFor } from '../helpers/wait';

const KEY = 'standalone-key-0123456789';

/** `npm run emulator` with these variables, once it listens: its base URL, and the process to stop. */
async function standalone(env: Record<string, string>) {
  const port = await freePort();
  const p = spawnNode(['--import', 'tsx', join(ROOT, 'src', 'emulator', 'main.ts')], { EMULATOR_PORT: String(port), EMULATOR_API_KEY: KEY, ...env }, ['ignore', 'pipe', 'pipe']);
  let out = '';
  p.child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  try {
    await waitFor(() => out.includes('listening'), 20_000, 50);
  } catch (err) {
    await p.stop();
    throw err;
  }
  return { p, base: `http://127.0.0.1:${port}` };
}

describe('npm run emulator', () => {
  it('listens where EMULATOR_PORT says, takes its faults from the environment, and exits 0 on SIGTERM', async () => {
    const { p, base } = await standalone({ EMULATOR_ERROR_RATE: '1', EMULATOR_FAULT_PATHS: '/omni/add/, /omni/process/' });
    try {
      const faults = await request(`${base}/__emulator/faults`, { headers: { 'x-api-key': KEY } });
      expect(await faults.body.json()).toMatchObject({ errorRate: 1, faultPaths: ['/omni/add/', '/omni/process/'] });
      // Only those paths fail: a start still works, an upload does not.
      const start = await request(`${base}/omni/start`, { method: 'POST', headers: { 'x-api-key': KEY, 'api-version': '1.0', 'content-type': 'application/json' }, body: '{}' });
      expect(start.statusCode).toBe(200);
      const { token } = (await start.body.json()) as { token: string };
      const upload = await request(`${base}/omni/add/front-id/v2`, { method: 'POST', headers: { 'x-api-key': KEY, 'api-version': '1.0', 'x-incode-hardware-id': token, 'content-type': 'application/json' }, body: '{"base64Image":"AAAA"}' });
      expect(upload.statusCode).toBe(503);
      await upload.body.dump();
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
    } finally {
      await p.stop();
    }
  }, 30_000);

  it.each([
    ['EMULATOR_ERROR_RATE', '50'],
    ['EMULATOR_ERROR_RATE', 'abc'],
    ['EMULATOR_ERROR_STATUSES', '404,503'],
    ['EMULATOR_LATENCY_MS', '1s'],
    ['EMULATOR_PROCESSING_DELAY_MS', '-5'],
    ['EMULATOR_SEED', 'abc'],
    ['EMULATOR_WEBHOOK_RETRY_DELAYS_MS', '30000,soon'],
    // Past a Node timer's limit a delay fires after 1 ms: a latency fault that silently became none.
    ['EMULATOR_LATENCY_MS', '3000000000'],
    ['EMULATOR_PROCESSING_DELAY_MS', '3000000000'],
    ['EMULATOR_WEBHOOK_RETRY_DELAYS_MS', '3000000000'],
  ])('refuses to start with %s=%s, naming the variable (a fault silently clamped away would pass a fault test)', async (name, value) => {
    const p = spawnNode(['--import', 'tsx', join(ROOT, 'src', 'emulator', 'main.ts')], { EMULATOR_PORT: String(await freePort()), [name]: value, EMULATOR_WEBHOOK_URL: 'http://127.0.0.1:9/hook' }, ['ignore', 'pipe', 'pipe']);
    let err = '';
    p.child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    try {
      expect(await p.exited).toBe(1);
      expect(err).toContain(name);
    } finally {
      await p.stop();
    }
  }, 30_000);

  it('takes the webhook retry schedule and timeout from the environment (none: a single delivery, given up after 1 s)', async () => {
    let hits = 0;
    // A receiver that never answers: only the configured timeout (1 s, not the default 10 s) ends the delivery.
    const receiver = createServer(() => void hits++);
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const hook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
    try {
      const { p, base } = await standalone({ EMULATOR_WEBHOOK_URL: hook, EMULATOR_WEBHOOK_RETRY_DELAYS_MS: '', EMULATOR_WEBHOOK_TIMEOUT_MS: '1000' });
      try {
        const start = await request(`${base}/omni/start`, { method: 'POST', headers: { 'x-api-key': KEY, 'api-version': '1.0', 'content-type': 'application/json' }, body: '{}' });
        const { interviewId } = (await start.body.json()) as { interviewId: string };
        const expired = await request(`${base}/__emulator/sessions/${interviewId}/expire`, { method: 'POST', headers: { 'x-api-key': KEY } });
        await expired.body.dump();
        const failed = await waitFor(async () => {
          const r = await request(`${base}/__emulator/webhooks`, { headers: { 'x-api-key': KEY } });
          const body = (await r.body.json()) as { stats: { failed: number; retries: number } };
          return body.stats.failed === 1 ? body.stats : null;
        }, 5_000, 50);
        expect(failed.retries).toBe(0);
        expect(hits).toBe(1);
      } finally {
        await p.stop();
      }
    } finally {
      receiver.closeAllConnections();
      await new Promise((r) => receiver.close(r));
    }
  }, 30_000);
});
