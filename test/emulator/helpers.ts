// Test helpers: a real emulator on a loopback port and a small JSON client over undici.
import { createHmac } from 'node:crypto';
import { request } from 'undici';
import type { EmulatorOptions } from '../../src/emulator/app';
import { buildEmulator } from '../../src/emulator/app';
import { waitFor as harnessWaitFor } from '../helpers/wait';

export const API_KEY = 'test-api-key';

export interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

export interface Emu {
  app: ReturnType<typeof buildEmulator>;
  base: string;
  call(method: string, path: string, opts?: { body?: unknown; raw?: Buffer; headers?: Record<string, string>; token?: string; key?: string | null; contentType?: string }): Promise<Res>;
  start(body?: Record<string, unknown>): Promise<{ token: string; interviewId: string; [k: string]: unknown }>;
  close(): Promise<void>;
}

export async function startEmulator(opts: Partial<EmulatorOptions> = {}): Promise<Emu> {
  const app = buildEmulator({ apiKey: API_KEY, clientId: 'acme', processingDelayMs: 5, executiveEmail: 'exec@example.com', executivePassword: 'secret', ...opts });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const addr = app.server.address() as { port: number };
  const base = `http://127.0.0.1:${addr.port}`;
  const call: Emu['call'] = async (method, path, o = {}) => {
    const headers: Record<string, string> = { 'api-version': '1.0', ...(o.headers ?? {}) };
    if (o.key !== null) headers['x-api-key'] = o.key ?? API_KEY;
    if (o.token) headers['x-incode-hardware-id'] = o.token;
    let body: string | Buffer | undefined;
    if (o.raw) {
      body = o.raw;
      headers['content-type'] = o.contentType ?? 'image/jpeg';
    } else if (o.body !== undefined) {
      body = JSON.stringify(o.body);
      headers['content-type'] = 'application/json';
    }
    const res = await request(base + path, { method: method as 'GET', headers, body });
    const text = await res.body.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON */
    }
    return { status: res.statusCode, headers: res.headers, body: parsed };
  };
  const start: Emu['start'] = async (body = {}) => {
    const r = await call('POST', '/omni/start', { body: { countryCode: 'ALL', ...body } });
    if (r.status !== 200) throw new Error(`start failed: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  return { app, base, call, start, close: () => app.close() };
}

export const b64 = (b: Buffer): string => b.toString('base64');

/** The shared waitFor, polling faster: the emulator's own processing delays here are a few ms. */
export const waitFor = <T>(fn: Parameters<typeof harnessWaitFor<T>>[0], timeoutMs = 5000, stepMs = 10): Promise<T> => harnessWaitFor(fn, timeoutMs, stepMs);

export function expectEnvelope(r: Res, http: number, code: number = http): void {
  expect(r.status).toBe(http);
  expect(r.body).toEqual({ timestamp: expect.any(Number), status: code, error: expect.any(String), message: expect.any(String), path: expect.stringMatching(/^\//) });
}

/** What the Web SDK camera sends with encrypted: true: a 64-hex HMAC spliced into the base64 (char i at i + 64 * (i + 1)). */
export function sdkTagged(b64: string): string {
  const tag = createHmac('sha256', '2c4c31a9cb31a23971792b8105187d21e0df9f28df26f35d97af140a770daa10').update(b64).digest('hex');
  let out = b64;
  for (let i = 0; i < tag.length; i++) {
    const at = i + 64 * (i + 1);
    out = out.slice(0, at) + tag[i] + out.slice(at);
  }
  return out;
}

/**
 * Records every status move the emulator's session machine makes, per interviewId (polling could miss a status
 * that lasts only a few ms). Call stop() to stop recording.
 */
export function recordStatusMoves(emu: Emu): { movesOf(interviewId: string): string[]; stop(): void } {
  const moves = new Map<string, string[]>();
  const stop = emu.app.emulator.sessions.watchStatus((s, status) => {
    moves.set(s.interviewId, [...(moves.get(s.interviewId) ?? []), status]);
  });
  return { movesOf: (id) => moves.get(id) ?? [], stop };
}
