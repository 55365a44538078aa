// The Incode client against the real emulator over loopback, plus small real servers for failure modes.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent } from 'undici';
import { IncodeClient, type IncodeClientOptions } from '../../src/incode/client';
import { IncodeError } from '../../src/incode/errors';
import { ExecutiveTokenProvider } from '../../src/incode/executive-token';
import { idBack, idFront, selfie } from '../../src/emulator/sample-images';
import type { EmulatorApp } from '../../src/emulator/app';
import { EXEC_EMAIL, EXEC_PASSWORD, TEST_API_KEY, startEmulator, waitFor, type Running } from '../helpers/harness';

const b64 = (b: Buffer) => b.toString('base64');

function client(baseUrl: string, extra: Partial<IncodeClientOptions> = {}) {
  return new IncodeClient({ baseUrl, apiKey: TEST_API_KEY, timeoutMs: 2000, connectTimeoutMs: 1000, connections: 8, maxRetries: 2, retryBaseMs: 5, ...extra });
}

/** A real HTTP server whose answers the test scripts, counting the requests it gets. */
async function scripted(handler: (req: IncomingMessage, res: ServerResponse, n: number) => void): Promise<{ url: string; hits: () => number; close: () => Promise<void> }> {
  let n = 0;
  const server: Server = createServer((req, res) => {
    n += 1;
    req.resume();
    req.on('end', () => handler(req, res, n));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    hits: () => n,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** The IncodeError a call failed with (a call that succeeded fails the test). */
async function errorOf(call: Promise<unknown>): Promise<IncodeError> {
  return call.then(
    () => {
      throw new Error('expected the call to fail');
    },
    (e: unknown) => e as IncodeError,
  );
}

const envelope = (res: ServerResponse, status: number, code = status) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ timestamp: Date.now(), status: code, error: 'Oops', path: '/omni/x' }));
};

describe('IncodeClient against the emulator', () => {
  let emu: Running<EmulatorApp>;
  let c: IncodeClient;
  beforeAll(async () => {
    emu = await startEmulator({ processingDelayMs: 20 });
    c = client(emu.url);
  });
  afterAll(async () => {
    await c.close();
    await emu.close();
  });

  it('runs every operation of the flow with Incode headers and shapes', async () => {
    const s = await c.start({ countryCode: 'ALL', externalCustomerId: 'cust-1' });
    expect(s.token).toMatch(/^eyJ/);
    expect(s.interviewId).toMatch(/^[0-9a-f]{24}$/);
    const front = await c.addFrontId(s.token, b64(idFront()));
    expect(front.classification).toBe(true);
    expect(typeof front.sharpness).toBe('number');
    const back = await c.addBackId(s.token, b64(idBack()));
    expect(back.classification).toBe(true);
    expect((await c.processId(s.token)).success).toBe(true);
    const face = await c.addFace(s.token, b64(selfie()));
    expect(face.confidence).toBe(0);
    const match = await c.processFace(s.token);
    expect(match.confidence).toBe(1);
    const status = await waitFor(async () => {
      const r = await c.getOnboardingStatus(s.token, s.interviewId);
      return r.onboardingStatus === 'ONBOARDING_FINISHED' && r;
    });
    expect(status.onboardingStatus).toBe('ONBOARDING_FINISHED');
    expect(await c.isPostProcessFinished(s.token, s.interviewId)).toEqual({ finished: true });
    // Finished with an OK score: the flow's verdict is approved; no redirection URL was given at start.
    expect(await c.finishStatus(s.token)).toEqual({ redirectionUrl: null, customerId: null, action: 'approved' });
    const score = await c.getScore(s.token, s.interviewId);
    expect(score.overall?.status).toBe('OK');
    expect(typeof score.overall?.value).toBe('string');
    const ocr = await c.getOcrData(s.token, s.interviewId);
    expect(ocr.name).toEqual(expect.objectContaining({ fullName: expect.any(String) }));
    expect(typeof ocr.birthDate).toBe('number');
    const url = await c.getOnboardingUrl(s.token, 'testclient');
    expect(url.url).toMatch(/^https?:\/\//);
  });

  it('reads any session with an executive token', async () => {
    const s = await c.start({ countryCode: 'ALL' });
    const exec = new ExecutiveTokenProvider(c, { email: EXEC_EMAIL, password: EXEC_PASSWORD });
    const [t1, t2] = await Promise.all([exec.get(), exec.get()]);
    expect(t1).toBe(t2);
    const r = await c.getOnboardingStatus(t1, s.interviewId);
    expect(r.onboardingStatus).toBe('UNKNOWN');
  });

  it('keeps serving a still-valid executive token when its early renewal fails, until it expires', async () => {
    let now = Date.now();
    const exec = new ExecutiveTokenProvider(c, { email: EXEC_EMAIL, password: EXEC_PASSWORD }, 60 * 60 * 1000, () => now);
    const t1 = await exec.get();
    // 30 minutes of its 24 h left: inside the renewal hour, and Incode's login is failing.
    now += 23.5 * 3600 * 1000;
    emu.app.emulator.setFaults({ errorRate: 1 });
    try {
      expect(await exec.get()).toBe(t1);
      // Expired: nothing to fall back on.
      now += 3600 * 1000;
      await expect(exec.get()).rejects.toMatchObject({ code: 'INCODE_UNAVAILABLE' });
    } finally {
      emu.app.emulator.resetFaults();
    }
    // Incode answers again: once the 30 s a failed login holds callers off are over, a login gives a token.
    await expect(exec.get()).rejects.toMatchObject({ code: 'INCODE_UNAVAILABLE' });
    now += 31_000;
    expect(await exec.get()).toMatch(/^eyJ/);
  });

  it('turns a wrong API key into INCODE_FORBIDDEN without the key in the error', async () => {
    const bad = new IncodeClient({ baseUrl: emu.url, apiKey: 'wrong-key-SECRET', timeoutMs: 2000, connectTimeoutMs: 1000, connections: 2, maxRetries: 0 });
    const err = await bad.start({ countryCode: 'ALL' }).catch((e: unknown) => e);
    await bad.close();
    expect(err).toBeInstanceOf(IncodeError);
    expect((err as IncodeError).code).toBe('INCODE_FORBIDDEN');
    expect((err as IncodeError).details.httpStatus).toBe(403);
    expect(JSON.stringify(err) + (err as Error).message + (err as Error).stack).not.toContain('wrong-key-SECRET');
  });

  it('turns a bad token into INCODE_UNAUTHORIZED without the token in the error', async () => {
    const err = await errorOf(c.getScore('eyJhbGciOiJIUzI1NiJ9.bm9wZQ.c2ln', 'abc'));
    expect(err.code).toBe('INCODE_UNAUTHORIZED');
    expect(JSON.stringify(err) + err.message).not.toContain('bm9wZQ');
  });

  it('keeps Incode selfie codes from the error envelope', async () => {
    const s = await c.start({ countryCode: 'ALL', externalCustomerId: 'emu:selfie-error-3006' });
    const err = await errorOf(c.addFace(s.token, b64(selfie())));
    expect(err).toBeInstanceOf(IncodeError);
    expect(err.details.incodeStatus).toBe(3006);
    expect(err.isClientError).toBe(true);
  });

  it('works through an injected dispatcher', async () => {
    const agent = new Agent({ connections: 1 });
    const viaAgent = client(emu.url, { dispatcher: agent });
    expect((await viaAgent.start({ countryCode: 'BRA' })).interviewId).toHaveLength(24);
    await viaAgent.close();
    await agent.close();
  });
});

describe('IncodeClient failure handling', () => {
  it('retries reads on 503 with backoff, then succeeds', async () => {
    const srv = await scripted((_req, res, n) => {
      if (n < 3) return envelope(res, 503);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"onboardingStatus":"UNKNOWN"}');
    });
    const c = client(srv.url);
    expect((await c.getOnboardingStatus('t', 'i')).onboardingStatus).toBe('UNKNOWN');
    expect(srv.hits()).toBe(3);
    await c.close();
    await srv.close();
  });

  it('passes a long Retry-After on a read back to the caller instead of retrying sooner', async () => {
    const srv = await scripted((_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '60' });
      res.end(JSON.stringify({ timestamp: 1, status: 503, error: 'Service Unavailable' }));
    });
    const c = client(srv.url, { maxRetries: 3, retryBaseMs: 1 });
    const err = await errorOf(c.getOnboardingStatus('t', 'i'));
    expect([err.code, err.details.retryAfterMs, srv.hits()]).toEqual(['INCODE_UNAVAILABLE', 60_000, 1]);
    await c.close();
    await srv.close();
  });

  it("stops waiting out a retry's backoff when the caller's signal aborts (a job's deadline, a shutdown), with the answer it had", async () => {
    const srv = await scripted((_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '5' });
      res.end(JSON.stringify({ timestamp: 1, status: 503, error: 'Service Unavailable' }));
    });
    const c = client(srv.url, { maxRetries: 3, retryBaseMs: 1 });
    const ac = new AbortController();
    try {
      let settled = false;
      const call = errorOf(c.getOnboardingStatus('t', 'i', { signal: ac.signal })).finally(() => (settled = true));
      // The first answer came back and the retry is waiting its 5 s.
      await waitFor(() => srv.hits() === 1, 5000, 10);
      await new Promise((r) => setTimeout(r, 50));
      expect(settled).toBe(false);
      ac.abort();
      await new Promise((r) => setImmediate(r));
      expect(settled).toBe(true);
      const err = await call;
      expect([err.code, srv.hits()]).toEqual(['INCODE_UNAVAILABLE', 1]);
    } finally {
      ac.abort();
      await c.close();
      await srv.close();
    }
  });

  /** A server that holds its first answer until released (the answers are sessions s1, s2...), behind a one-connection client. */
  async function heldFirst() {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const srv = await scripted((_req, res, n) => {
      void (n === 1 ? held : Promise.resolve()).then(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ token: 'tok', interviewId: `s${n}` }));
      });
    });
    // One connection: a second start waits in the pool behind the first.
    const c = client(srv.url, { connections: 1, maxConcurrency: 1 });
    const first = c.start({});
    await waitFor(() => srv.hits() === 1, 5000, 10);
    return { srv, c, first, release, close: async () => (await c.close(), await srv.close()) };
  }

  it('a start its caller stops while it still waits for a connection is answered at once, never sent: Incode certainly did nothing', async () => {
    const h = await heldFirst();
    const stop = new AbortController();
    const queued = errorOf(h.c.start({}, { signal: stop.signal }));
    stop.abort();
    expect(await queued).toMatchObject({ code: 'INCODE_TIMEOUT', certainlyNotDone: true });
    h.release();
    expect((await h.first).interviewId).toBe('s1');
    // The pool's next call is the next one Incode sees: the stopped one was dropped, not sent.
    expect((await h.c.start({})).interviewId).toBe('s2');
    expect(h.srv.hits()).toBe(2);
    await h.close();
  });

  it('a start past its send deadline when its turn comes is dropped unsent, and one already past it is not dispatched', async () => {
    const h = await heldFirst();
    const late = errorOf(h.c.start({}, { sendBefore: Date.now() + 100 }));
    await new Promise((r) => setTimeout(r, 300));
    h.release();
    expect((await h.first).interviewId).toBe('s1');
    expect(await late).toMatchObject({ code: 'INCODE_TIMEOUT', certainlyNotDone: true });
    expect(await errorOf(h.c.start({}, { sendBefore: Date.now() - 1 }))).toMatchObject({ code: 'INCODE_TIMEOUT', certainlyNotDone: true });
    // A call whose turn comes in time is sent as usual, and is the second Incode sees.
    expect((await h.c.start({}, { sendBefore: Date.now() + 5000 })).interviewId).toBe('s2');
    expect(h.srv.hits()).toBe(2);
    await h.close();
  });

  it('a start stopped once sent is not "certainly nothing": a session may exist', async () => {
    const silent = await scripted(() => undefined);
    const c = client(silent.url);
    const stop = new AbortController();
    const inFlight = errorOf(c.start({}, { signal: stop.signal }));
    await waitFor(() => silent.hits() === 1, 5000, 10);
    stop.abort();
    expect((await inFlight).certainlyNotDone).toBe(false);
    await c.close().catch(() => undefined);
    await silent.close();
  });

  it('never retries start once it was sent (a retry could bill a second session)', async () => {
    const srv = await scripted((_req, res) => envelope(res, 503));
    const c = client(srv.url);
    const err = await errorOf(c.start({}));
    expect(err.code).toBe('INCODE_UNAVAILABLE');
    expect(srv.hits()).toBe(1);
    await c.close();
    await srv.close();
  });

  it('retries a start that names an existing session (a resume: another token, no new session) like a read', async () => {
    const srv = await scripted((_req, res, n) => {
      if (n === 1) return envelope(res, 503);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token: 'tok-2', interviewId: '665f00000000000000000001' }));
    });
    const c = client(srv.url, { maxRetries: 1, retryBaseMs: 1 });
    expect(await c.start({ interviewId: '665f00000000000000000001' })).toMatchObject({ token: 'tok-2' });
    expect(srv.hits()).toBe(2);
    await c.close();
    await srv.close();
  });

  it('retries a start Incode turned away with 429 (nothing was created), but not past a long Retry-After', async () => {
    // Throttled once (429 with this Retry-After), then a session.
    const throttledOnce = (retryAfter: string) =>
      scripted((_req, res, n) => {
        if (n === 1) {
          res.writeHead(429, { 'content-type': 'application/json', 'retry-after': retryAfter });
          return res.end(JSON.stringify({ timestamp: 1, status: 429, error: 'Too Many Requests' }));
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ token: 'tok', interviewId: 'abc' }));
      });
    const srv = await throttledOnce('0');
    const c = client(srv.url, { maxRetries: 2, retryBaseMs: 1 });
    expect(await c.start({})).toMatchObject({ token: 'tok', interviewId: 'abc' });
    expect(srv.hits()).toBe(2);
    // Never sooner than Incode's Retry-After, however short the backoff.
    const waited = await throttledOnce('1');
    const c3 = client(waited.url, { maxRetries: 2, retryBaseMs: 1 });
    const t0 = Date.now();
    await c3.start({});
    expect(Date.now() - t0).toBeGreaterThanOrEqual(990);
    await c3.close();
    await waited.close();
    const slow = await scripted((_req, res) => {
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '60' });
      res.end(JSON.stringify({ timestamp: 1, status: 429, error: 'Too Many Requests' }));
    });
    const c2 = client(slow.url, { maxRetries: 2, retryBaseMs: 1 });
    const err = await errorOf(c2.start({}));
    expect([err.code, err.details.retryAfterMs, slow.hits()]).toEqual(['INCODE_RATE_LIMITED', 60_000, 1]);
    await c.close();
    await c2.close();
    await srv.close();
    await slow.close();
  });

  it('does not retry client errors', async () => {
    const srv = await scripted((_req, res) => envelope(res, 400, 4019));
    const c = client(srv.url);
    const err = await errorOf(c.getScore('t', 'i'));
    expect(err.code).toBe('INCODE_BAD_REQUEST');
    expect(err.details.incodeStatus).toBe(4019);
    expect(srv.hits()).toBe(1);
    await c.close();
    await srv.close();
  });

  it('times out a call that never answers', async () => {
    const srv = await scripted(() => undefined);
    const c = client(srv.url, { timeoutMs: 200, maxRetries: 0 });
    const started = Date.now();
    const err = await errorOf(c.getScore('t', 'i'));
    expect(err.code).toBe('INCODE_TIMEOUT');
    expect(Date.now() - started).toBeLessThan(5000);
    await c.close();
    await srv.close();
  });

  it('closes within its wind-down though a call is still out, dropping that call, instead of waiting out its timeout', async () => {
    const srv = await scripted(() => undefined);
    // A start sent just before a shutdown, which Incode never answers: only its 60 s timeout would end it.
    const c = client(srv.url, { timeoutMs: 60_000, maxRetries: 0 });
    const call = errorOf(c.start({ countryCode: 'ALL' }));
    await waitFor(() => srv.hits() === 1, 5000, 10);
    const started = Date.now();
    await c.close(300);
    expect(Date.now() - started).toBeLessThan(3000);
    expect((await call).code).toBe('INCODE_CONNECTION');
    await srv.close();
  }, 15_000);

  it('gives the capture and processing calls their own, longer timeout (INCODE_CAPTURE_TIMEOUT_MS)', async () => {
    // Answers after 1.5 s: past the 200 ms of reads, within the 10 s of captures.
    const srv = await scripted((_req, res) => void setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"success":true}'), 1500));
    const c = client(srv.url, { timeoutMs: 200, captureTimeoutMs: 10_000, maxRetries: 0 });
    expect((await errorOf(c.getScore('t', 'i'))).code).toBe('INCODE_TIMEOUT');
    expect(await c.processId('t')).toEqual({ success: true });
    await c.close();
    // And it is what bounds a capture: a shorter one than the answer times the capture out.
    const short = client(srv.url, { timeoutMs: 10_000, captureTimeoutMs: 200, maxRetries: 0 });
    expect((await errorOf(short.processId('t'))).code).toBe('INCODE_TIMEOUT');
    await short.close();
    await srv.close();
  });

  it('times out a body that stalls after the headers, and reports it as a timeout', async () => {
    const srv = await scripted((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"score":');
    });
    const outcomes: string[] = [];
    const c = client(srv.url, { timeoutMs: 200, maxRetries: 0, onCall: (_op, outcome) => outcomes.push(outcome) });
    const err = await errorOf(c.getScore('t', 'i'));
    expect(err.code).toBe('INCODE_TIMEOUT');
    expect(outcomes).toEqual(['timeout']);
    await c.close();
    await srv.close();
  });

  it('reads a body that arrives in many chunks, with multi-byte characters split between them', async () => {
    const name = 'JOSÉ ÁLVARO NÚÑEZ '.repeat(2000);
    const json = Buffer.from(JSON.stringify({ name: { fullName: name } }), 'utf8');
    const srv = await scripted((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      // Odd-sized writes with a pause between them, so the client gets several chunks cut inside characters.
      let at = 0;
      const next = () => {
        if (at >= json.length) return res.end();
        res.write(json.subarray(at, (at += 4093)));
        setImmediate(next);
      };
      next();
    });
    const c = client(srv.url);
    expect(await c.getOcrData('t', 'i')).toEqual({ name: { fullName: name } });
    await c.close();
    await srv.close();
  });

  it('cuts off an answer longer than maxResponseBytes instead of buffering it, and stays usable', async () => {
    const srv = await scripted((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      if (req.url?.includes('ocr')) return void res.end('{"x":"' + 'a'.repeat(2 * 1024 * 1024) + '"}');
      res.end('{"overall":{"status":"OK"}}');
    });
    const outcomes: string[] = [];
    const c = client(srv.url, { maxResponseBytes: 1024 * 1024, onCall: (_op, outcome) => outcomes.push(outcome) });
    const err = await errorOf(c.getOcrData('t', 'i'));
    expect(err).toBeInstanceOf(IncodeError);
    expect(err.code).toBe('INCODE_BAD_RESPONSE');
    expect(err.message).toMatch(/more than 1048576 bytes/);
    expect(outcomes).toEqual(['bad_response']);
    // The next call (a new connection if the cut one was dropped) is answered.
    expect(await c.getScore('t', 'i')).toEqual({ overall: { status: 'OK' } });
    await c.close();
    await srv.close();
  });

  it('stops a call when its signal aborts, in flight or still queued behind the pool, as a timeout the circuit does not count', async () => {
    const srv = await scripted(() => undefined);
    const outcomes: string[] = [];
    const c = client(srv.url, { connections: 1, maxRetries: 0, timeoutMs: 30_000, onCall: (_op, outcome) => outcomes.push(outcome), circuit: { failureThreshold: 1, resetMs: 60_000 } });
    const inFlight = new AbortController();
    const queued = new AbortController();
    const first = c.getScore('t', 'i', { signal: inFlight.signal }).catch((e: unknown) => e);
    const second = c.getScore('t', 'i', { signal: queued.signal }).catch((e: unknown) => e);
    await waitFor(async () => srv.hits() === 1, 5000, 10);
    const t = Date.now();
    queued.abort();
    inFlight.abort();
    expect(((await first) as IncodeError).code).toBe('INCODE_TIMEOUT');
    expect(((await second) as IncodeError).code).toBe('INCODE_TIMEOUT');
    expect(Date.now() - t).toBeLessThan(5000);
    // Given up on by the caller: recorded apart from Incode's own timeouts, and the circuit stays closed.
    expect(outcomes).toEqual(['aborted', 'aborted']);
    expect(c.circuitState('read')).toBe('closed');
    // An already-aborted signal never reaches Incode.
    expect((await errorOf(c.getScore('t', 'i', { signal: AbortSignal.abort() }))).code).toBe('INCODE_TIMEOUT');
    expect(srv.hits()).toBe(1);
    await c.close();
    await srv.close();
  });

  it('drops a call still queued behind the pool once its caller has gone, unsent: a start no one would receive is never billed', async () => {
    let held: import('node:http').ServerResponse | null = null;
    const srv = await scripted((_req, res, n) => {
      if (n === 1) return void (held = res);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token: 'tok', interviewId: '665f00000000000000000002' }));
    });
    const c = client(srv.url, { connections: 1, maxRetries: 0, timeoutMs: 30_000 });
    const first = c.start({});
    let gone = false;
    const second = errorOf(c.start({}, { callerGone: () => gone }));
    await waitFor(async () => held !== null, 5000, 10);
    // The second caller leaves while its start waits for the only connection; then the first is answered.
    gone = true;
    held!.writeHead(200, { 'content-type': 'application/json' });
    held!.end(JSON.stringify({ token: 'tok', interviewId: '665f00000000000000000001' }));
    expect((await first).interviewId).toBe('665f00000000000000000001');
    const err = await second;
    expect([err.code, err.certainlyNotDone]).toEqual(['INCODE_TIMEOUT', true]);
    expect(srv.hits()).toBe(1);
    // A caller still there is served on the same connection.
    expect((await c.start({}, { callerGone: () => false })).interviewId).toBe('665f00000000000000000002');
    await c.close();
    await srv.close();
  });

  it('reports a refused connection as not sent', async () => {
    const srv = await scripted(() => undefined);
    const url = srv.url;
    await srv.close();
    const c = client(url, { maxRetries: 1 });
    const err = await errorOf(c.start({}));
    expect(err.code).toBe('INCODE_CONNECTION');
    expect(err.details.notSent).toBe(true);
    await c.close();
  });

  it('answers a body that is not JSON as INCODE_BAD_RESPONSE', async () => {
    const srv = await scripted((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html>maintenance</html>');
    });
    const c = client(srv.url);
    expect((await errorOf(c.getScore('t', 'i'))).code).toBe('INCODE_BAD_RESPONSE');
    await c.close();
    await srv.close();
  });

  it('counts a 2xx start or executive login without what it must hold as bad_response, never ok', async () => {
    const srv = await scripted((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(req.url?.includes('start') ? '{"interviewId":"665f00000000000000000001"}' : '{"expiresAt":1}');
    });
    const outcomes: string[] = [];
    const c = client(srv.url, { maxRetries: 0, onCall: (op, outcome) => outcomes.push(`${op}:${outcome}`) });
    const started = await errorOf(c.start({ countryCode: 'ALL' }));
    expect([started.code, started.message]).toEqual(['INCODE_BAD_RESPONSE', 'Incode start answered without token or interviewId']);
    expect((await errorOf(c.executiveLogin('e', 'p'))).message).toBe('Incode executiveLogin answered without token');
    expect(outcomes).toEqual(['start:bad_response', 'executiveLogin:bad_response']);
    await c.close();
    await srv.close();
  });

  it("a 5xx naming a capture code (a processing error) counts neither way for the circuit; another code under a 5xx does", async () => {
    let code = 6000;
    const srv = await scripted((_req, res) => envelope(res, 500, code));
    const c = client(srv.url, { maxRetries: 0, circuit: { failureThreshold: 2, resetMs: 60_000 } });
    for (let i = 0; i < 4; i++) expect((await errorOf(c.processId('t'))).details).toMatchObject({ httpStatus: 500, incodeStatus: 6000 });
    expect(c.circuitState('capture')).toBe('closed');
    expect(srv.hits()).toBe(4);
    // One real failure, then a capture answer, then another failure: the answer in between did not reset the count.
    code = 500;
    await c.processId('t').catch(() => undefined);
    code = 6000;
    await c.processId('t').catch(() => undefined);
    code = 7777;
    await c.processId('t').catch(() => undefined);
    expect(c.circuitState('capture')).toBe('open');
    await c.close();
    await srv.close();
  });

  it('a half-open probe answered with a capture code shows Incode is up: the circuit closes', async () => {
    let code = 500;
    const srv = await scripted((_req, res) => envelope(res, 500, code));
    const c = client(srv.url, { maxRetries: 0, circuit: { failureThreshold: 1, resetMs: 100 } });
    await c.processId('t').catch(() => undefined);
    expect(c.circuitState('capture')).toBe('open');
    await new Promise((r) => setTimeout(r, 150));
    code = 6000;
    expect((await errorOf(c.processId('t'))).details.incodeStatus).toBe(6000);
    expect(c.circuitState('capture')).toBe('closed');
    await c.close();
    await srv.close();
  });

  it('opens the circuit after consecutive failures, fails fast, and closes after a good probe', async () => {
    let healthy = false;
    const srv = await scripted((_req, res) => {
      if (!healthy) return envelope(res, 500);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"onboardingStatus":"UNKNOWN"}');
    });
    const states: string[] = [];
    // A reset long enough that the fail-fast call below lands inside it on a loaded machine.
    const c = client(srv.url, { maxRetries: 0, circuit: { failureThreshold: 3, resetMs: 1500 }, onCircuitChange: (_g, s) => states.push(s) });
    for (let i = 0; i < 3; i++) expect((await errorOf(c.getScore('t', 'i'))).code).toBe('INCODE_UNAVAILABLE');
    const hits = srv.hits();
    const fast = await errorOf(c.getScore('t', 'i'));
    expect(fast.code).toBe('INCODE_CIRCUIT_OPEN');
    expect(fast.details.retryAfterMs).toBeGreaterThan(0);
    expect(srv.hits()).toBe(hits);
    // Other operation groups have their own circuit; circuitWait says how long until a call may go, and takes no probe.
    expect(c.circuitState('start')).toBe('closed');
    expect(c.circuitWait('start')).toBe(0);
    expect(c.circuitWait('read')).toBeGreaterThan(0);
    expect(c.circuitWait('read')).toBeLessThanOrEqual(1500);
    healthy = true;
    await new Promise((r) => setTimeout(r, 1600));
    expect(c.circuitWait('read')).toBe(0);
    expect(c.circuitState('read')).toBe('open');
    expect((await c.getOnboardingStatus('t', 'i')).onboardingStatus).toBe('UNKNOWN');
    expect(c.circuitState('read')).toBe('closed');
    expect(states).toEqual(['open', 'half-open', 'closed']);
    await c.close();
    await srv.close();
  });
});

describe('IncodeClient concurrency bound', () => {
  it('never has more than INCODE_MAX_CONCURRENCY calls in flight; the rest wait and all complete', async () => {
    let inflight = 0;
    let peak = 0;
    const held: ServerResponse[] = [];
    // Answers are held until two calls are in (so a slow machine cannot make the bound look like 1), then for 40 ms
    // more, long enough for a third to arrive if the client let one through.
    const srv = await scripted((_req, res) => {
      inflight += 1;
      peak = Math.max(peak, inflight);
      held.push(res);
      if (held.length < 2) return;
      const pair = held.splice(0);
      setTimeout(() => {
        for (const r of pair) {
          inflight -= 1;
          r.writeHead(200, { 'content-type': 'application/json' });
          r.end(JSON.stringify({ onboardingStatus: 'UNKNOWN' }));
        }
      }, 40);
    });
    const c = client(srv.url, { connections: 8, maxConcurrency: 2 });
    try {
      const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => c.getOnboardingStatus('t', `id-${i}`)));
      expect(answers.map((a) => a.onboardingStatus)).toEqual(Array(6).fill('UNKNOWN'));
      expect(srv.hits()).toBe(6);
      expect(peak).toBe(2);
    } finally {
      await c.close();
      await srv.close();
    }
  });
});

describe('IncodeClient answers it cannot use, and calls that must not repeat', () => {
  it.each([
    ['an empty 200', (res: ServerResponse) => res.writeHead(200).end()],
    ['a 204', (res: ServerResponse) => res.writeHead(204).end()],
    ['an array', (res: ServerResponse) => res.writeHead(200, { 'content-type': 'application/json' }).end('[]')],
    ['no overall block', (res: ServerResponse) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"liveness":{}}')],
  ])('takes %s from get/score as INCODE_BAD_RESPONSE (its job reads it again), never as scores to decide from', async (_name, answer) => {
    const srv = await scripted((_req, res) => answer(res));
    const c = client(srv.url, { maxRetries: 1 });
    try {
      const err = await errorOf(c.getScore('t', 'i'));
      expect([err.code, srv.hits()]).toEqual(['INCODE_BAD_RESPONSE', 1]);
    } finally {
      await c.close();
      await srv.close();
    }
  });

  it('takes an OCR object, an empty one included, and nothing else', async () => {
    const bodies = ['{}', '{"name":{"fullName":"X"}}', '', 'null', '[1]'];
    const srv = await scripted((_req, res, n) => res.writeHead(200, { 'content-type': 'application/json' }).end(bodies[n - 1]));
    const c = client(srv.url, { maxRetries: 0 });
    try {
      expect(await c.getOcrData('t', 'i')).toEqual({});
      expect(await c.getOcrData('t', 'i')).toEqual({ name: { fullName: 'X' } });
      for (let i = 0; i < 3; i++) expect((await errorOf(c.getOcrData('t', 'i'))).code).toBe('INCODE_BAD_RESPONSE');
    } finally {
      await c.close();
      await srv.close();
    }
  });

  it('bounds a whole call: an answer trickled a byte at a time times out after its header and body time, not when the trickle ends', async () => {
    const timers: NodeJS.Timeout[] = [];
    const srv = await scripted((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const body = '{"onboardingStatus":"ONBOARDING_FINISHED"}      ';
      // One byte every 100 ms: each wait is far under the 300 ms body timeout, the whole answer takes about 5 s.
      for (let i = 0; i < body.length; i++) timers.push(setTimeout(() => (i === body.length - 1 ? res.end(body[i]) : res.write(body[i])), 100 * (i + 1)));
    });
    const c = client(srv.url, { timeoutMs: 300, maxRetries: 0 });
    try {
      const started = Date.now();
      const err = await errorOf(c.getOnboardingStatus('t', 'i'));
      expect(err.code).toBe('INCODE_TIMEOUT');
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      for (const t of timers) clearTimeout(t);
      await c.close();
      await srv.close();
    }
  });

  it('sends finish-status once when its answer is late: it applies the business rules and fires the webhook again', async () => {
    const srv = await scripted((_req, res) => {
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"redirectionUrl":"x","action":"approved"}'), 600);
    });
    const c = client(srv.url, { timeoutMs: 200, maxRetries: 2 });
    try {
      expect((await errorOf(c.finishStatus('t'))).code).toBe('INCODE_TIMEOUT');
      await new Promise((r) => setTimeout(r, 100));
      expect(srv.hits()).toBe(1);
    } finally {
      await c.close();
      await srv.close();
    }
  });
});
