// The orchestrator against the real emulator over loopback: passing, rejected, one-sided, BRA, failing mid-flow.
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { loadConfig, type Config } from '../../src/config';
import { IncodeClient } from '../../src/incode/client';
import { ExecutiveTokenProvider } from '../../src/incode/executive-token';
import { DEFAULT_SELFIE_MESSAGE, ID_MESSAGES } from '../../src/incode/capture-checks';
import { OnboardingError, Orchestrator, type CaptureInput, type StepEvent } from '../../src/onboarding/orchestrator';
import { createMetrics } from '../../src/plugins/metrics';
import { capturesInterrupted, type ResultsPipeline } from '../../src/results/pipeline';
import { createResultsRuntime } from '../../src/results/runtime';
import * as img from '../../src/emulator/sample-images';
import { Cipher, createStore, type Store } from '../../src/store/index';
import type { EmulatorController } from '../../src/emulator/app';
import { brokerEnv, LogCapture, startEmulator, waitFor, type Running } from '../helpers/harness';

const b64 = (b: Buffer) => b.toString('base64');
const GOOD = { front: b64(img.idFront()), back: b64(img.idBack()), selfie: b64(img.selfie()) };

interface Rig {
  orchestrator: Orchestrator;
  store: Store;
  pipeline: ResultsPipeline;
  incode: IncodeClient;
  config: Config;
  events: StepEvent[];
  close: () => Promise<void>;
}

let emulator: Running;

beforeAll(async () => {
  emulator = await startEmulator({ processingDelayMs: 50 });
});
afterAll(async () => {
  await emulator.close();
});

async function rig(env: Record<string, string> = {}, incodeUrl = emulator.url, log = pino({ level: 'silent' })): Promise<Rig> {
  const config = loadConfig(brokerEnv(incodeUrl, { POLL_INTERVAL_MS: '100', JOB_MAX_ATTEMPTS: '3', JOB_BACKOFF_MS: '20', ...env }));
  const store = createStore({ url: 'sqlite::memory:', cipher: new Cipher(config.encryption.keys) });
  await store.migrate();
  const client = new IncodeClient({ baseUrl: incodeUrl, apiKey: config.incode.apiKey, timeoutMs: 3000, connectTimeoutMs: 1000, connections: 4, maxRetries: 1 });
  const metrics = createMetrics();
  const executiveTokens = ExecutiveTokenProvider.fromConfig(client, config);
  const { pipeline, worker } = createResultsRuntime({ store, incode: client, executiveTokens, config, metrics, log }, { concurrency: 2, idleMs: 20 });
  worker.start();
  const events: StepEvent[] = [];
  const orchestrator = new Orchestrator({ incode: client, store, pipeline, config, log, onStep: (e) => events.push(e), waitTimeoutMs: 15_000 });
  return {
    orchestrator,
    store,
    pipeline,
    incode: client,
    config,
    events,
    close: async () => {
      await worker.stop(1000);
      await client.close();
      await store.close();
    },
  };
}

let r: Rig;
beforeEach(async () => {
  r = await rig();
});
afterEach(async () => {
  await r.close();
});

/**
 * A stand-in for Incode in front of the emulator: `intercept` may answer a request itself, or pass it on later with
 * `pass` (returning true); every other request is passed through as it is.
 */
async function interceptingProxy(
  intercept: (req: IncomingMessage, res: ServerResponse, pass: () => void) => boolean,
  upstream = emulator.url,
): Promise<{ url: string; close: () => Promise<void> }> {
  const target = new URL(upstream);
  const pass = (req: IncomingMessage, res: ServerResponse) =>
    req.pipe(
      httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: { ...req.headers, host: target.host } }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      }).on('error', () => res.destroy()),
    );
  const proxy = createServer((req, res) => {
    if (!intercept(req, res, () => pass(req, res))) pass(req, res);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    close: async () => {
      proxy.closeAllConnections();
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    },
  };
}

/**
 * A proxy that answers Incode's error envelope with `status` to the first `times` requests whose path starts with
 * `path` (every one when times is Infinity), and passes everything else on; `refused()` counts the refusals.
 */
async function refusingProxy(path: string, status: number, times: number, upstream = emulator.url) {
  let refused = 0;
  const proxy = await interceptingProxy((req, res) => {
    if (!req.url?.startsWith(path) || refused >= times) return false;
    refused += 1;
    req.resume();
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ timestamp: Date.now(), status, error: 'refused', message: 'refused', path }));
    return true;
  }, upstream);
  return { ...proxy, refused: () => refused };
}

const input = (patch: Partial<CaptureInput> = {}): CaptureInput => ({ ...GOOD, ...patch });
const stepsOf = async (id: string) => (await r.store.listSteps(id)).map((s) => `${s.step}:${s.outcome}`);

describe('a passing session', () => {
  it('runs every step in the guide order and stores scores and OCR', async () => {
    const c = await r.orchestrator.runCaptures(input());
    expect(c).toMatchObject({ ok: true, oneSided: false, typeOfId: 'DriversLicense', faceMatch: { ok: true, existingUser: false } });
    if (!c.ok) throw new Error('rejected');
    const stored = await r.store.getSession(c.interviewId);
    expect(stored).toMatchObject({ origin: 'broker', resultsStatus: 'pending' });
    expect(stored!.token).toBeTruthy();
    expect(stored!.nextPollAt).not.toBeNull();

    const result = await r.orchestrator.finish(c.interviewId);
    expect(result).toMatchObject({ interviewId: c.interviewId, onboardingStatus: 'ONBOARDING_FINISHED', resultsStatus: 'ready', decision: 'approve' });
    expect((result.scores as { overall: { status: string } }).overall.status).toBe('OK');
    expect((result.ocr as { name: { fullName: string } }).name.fullName).toEqual(expect.any(String));
    expect(await stepsOf(c.interviewId)).toEqual(['start:ok', 'front:ok', 'back:ok', 'process-id:ok', 'selfie:ok', 'face-match:ok', 'wait:ok', 'finish:skipped', 'results:ok']);
    expect(r.events.map((e) => e.step)).toEqual(['start', 'front', 'back', 'process-id', 'selfie', 'face-match', 'wait', 'finish', 'results']);
    expect(await r.store.getResults(c.interviewId)).not.toBeNull();
  });

  it("an erasure during the wait ends it as SESSION_ERASED, logged as a stop its owner asked for, not as an error", async () => {
    await r.close();
    const logs = new LogCapture();
    r = await rig({}, emulator.url, pino({ level: 'info' }, logs));
    // A flow that never finishes on its own: the wait is still on when the session is erased.
    const captures = await r.orchestrator.runCaptures(input({ externalCustomerId: 'emu:no-auto-finish' }));
    const waiting = r.orchestrator.finish(captures.interviewId).then(() => null, (e: unknown) => e);
    await waitFor(async () => (await r.store.getSession(captures.interviewId))?.onboardingStatus !== 'UNKNOWN' || null, 10_000);
    expect(await r.store.eraseSession(captures.interviewId, 'test', Date.now())).toBe(true);
    expect(await waiting).toMatchObject({ code: 'SESSION_ERASED' });
    expect(logs.errors).toEqual([]);
    expect(logs.records).toContainEqual(expect.objectContaining({ level: 30, msg: 'onboarding stopped', code: 'SESSION_ERASED' }));
  });

  it('marks the session completed when MARK_COMPLETE is on', async () => {
    await r.close();
    r = await rig({ MARK_COMPLETE: 'true' });
    const { captures, result } = await r.orchestrator.run(input());
    expect(result?.decision).toBe('approve');
    expect(await stepsOf(captures.interviewId)).toContain('finish:ok');
  });

  it('completes a flow that leaves completion to finish-status: MARK_COMPLETE marks it once processing is done', async () => {
    await r.close();
    r = await rig({ MARK_COMPLETE: 'true' });
    const { captures, result } = await r.orchestrator.run(input({ externalCustomerId: 'cust-9 emu:no-auto-finish' }));
    expect(result).toMatchObject({ onboardingStatus: 'ONBOARDING_FINISHED', resultsStatus: 'ready', decision: 'approve' });
    const steps = await stepsOf(captures.interviewId);
    // finish-status came before the wait could end: nothing else would have finished the session.
    expect(steps.indexOf('finish:ok')).toBeGreaterThan(-1);
    expect(steps.indexOf('finish:ok')).toBeLessThan(steps.indexOf('wait:ok'));
    expect(steps.filter((x) => x.startsWith('finish:'))).toEqual(['finish:ok']);
  });

  it('asks finish-status again while Incode fails it, and records that failure once, not at every poll', async () => {
    // Incode answers finish-status with a 503 six times (several calls, each with its own retry), then lets it through.
    const proxy = await refusingProxy('/omni/finish-status', 503, 6);
    try {
      await r.close();
      r = await rig({ MARK_COMPLETE: 'true' }, proxy.url);
      const { captures, result } = await r.orchestrator.run(input({ externalCustomerId: 'emu:no-auto-finish' }));
      expect(result).toMatchObject({ onboardingStatus: 'ONBOARDING_FINISHED', resultsStatus: 'ready' });
      expect(proxy.refused()).toBe(6);
      const finish = (await r.store.listSteps(captures.interviewId)).filter((x) => x.step === 'finish');
      expect(finish.map((x) => `${x.outcome}:${x.code ?? ''}`)).toEqual(['failed:INCODE_UNAVAILABLE', 'ok:']);
    } finally {
      await proxy.close();
    }
  });

  it('a status read refused for the API key (403) fails the waiting request, not the session: polling goes on and stores the results', async () => {
    const proxy = await refusingProxy('/omni/get/onboarding/status', 403, 1);
    try {
      await r.close();
      r = await rig({ RESULTS_MODE: 'polling' }, proxy.url);
      const err = (await r.orchestrator.run(input()).catch((e: unknown) => e)) as OnboardingError;
      expect(err).toMatchObject({ step: 'wait', code: 'INCODE_FORBIDDEN' });
      const id = err.interviewId!;
      const s = (await r.store.getSession(id))!;
      expect(s).toMatchObject({ resultsStatus: 'pending', lastError: 'INCODE_FORBIDDEN', nextPollAt: expect.any(Number) });
      await r.store.schedulePoll(id, Date.now() - 1, s.pollAttempts);
      const repaired = await waitFor(async () => {
        await r.pipeline.pollDue();
        const x = await r.store.getSession(id);
        return x?.resultsStatus === 'ready' ? x : null;
      }, 10_000, 200);
      expect(repaired).toMatchObject({ onboardingStatus: 'ONBOARDING_FINISHED', decision: 'approve' });
    } finally {
      await proxy.close();
    }
  });

  it.each([
    // A deployment without the post-processing poll: the status is all there is to go by.
    [404, 2000],
    // The poll failing for a while: asked again at the next status check, never the session's failure.
    [503, 2000],
    // Refused for good (not the token): gone by the status, as for a 404.
    [403, 2000],
    // The same when the ID's post-processing ended before the face: the status never reads POST_PROCESSING_FINISHED
    // when the wait looks, only FACE_VALIDATION_FINISHED.
    [403, 50],
  ])('a post-processing poll answering %i does not fail the onboarding; MARK_COMPLETE still completes it (processing %i ms)', async (status, processingDelayMs) => {
    // With 2 s of processing the wait sees the face's status (FACE_VALIDATION_FINISHED) well before the ID's
    // post-processing ends, so it asks the poll instead of going by a POST_PROCESSING_FINISHED status.
    const slow = await startEmulator({ processingDelayMs });
    const proxy = await refusingProxy('/omni/get/postprocess/isfinished', status, status === 503 ? 3 : Infinity, slow.url);
    try {
      await r.close();
      r = await rig({ MARK_COMPLETE: 'true' }, proxy.url);
      // The statuses Incode answered before the poll was first asked: one reading POST_PROCESSING_FINISHED says
      // processing is done by itself, and the poll is rightly not asked. That happens when a loaded machine runs the
      // captures slowly enough for the ID's post-processing to end before the wait's first look, so it is told, not
      // assumed (reads after the poll was refused, as the 503 case's later ones, say nothing about it).
      const read: string[] = [];
      const status0 = r.incode.getOnboardingStatus.bind(r.incode);
      r.incode.getOnboardingStatus = async (...a: Parameters<typeof status0>) => {
        const res = await status0(...a);
        if (proxy.refused() === 0) read.push(String(res.onboardingStatus));
        return res;
      };
      const { captures, result } = await r.orchestrator.run(input({ externalCustomerId: 'emu:no-auto-finish' }));
      expect(result).toMatchObject({ onboardingStatus: 'ONBOARDING_FINISHED', resultsStatus: 'ready', decision: 'approve' });
      if (!read.includes('POST_PROCESSING_FINISHED')) expect(proxy.refused()).toBeGreaterThan(0);
      expect(await stepsOf(captures.interviewId)).toEqual(expect.arrayContaining(['wait:ok', 'finish:ok']));
    } finally {
      await proxy.close();
      await slow.close();
    }
  });

  describe('finish-status is asked once, whoever finds processing done', () => {
    let finishCalls = 0;
    let holdMs = 0;
    let proxy: Awaited<ReturnType<typeof interceptingProxy>>;
    beforeEach(async () => {
      finishCalls = 0;
      holdMs = 0;
      // Counts the finish-status calls that reach Incode, holding each holdMs first.
      proxy = await interceptingProxy((req, _res, pass) => {
        if (!req.url?.startsWith('/omni/finish-status')) return false;
        finishCalls += 1;
        setTimeout(pass, holdMs);
        return true;
      });
      await r.close();
      // No polling and no emulator webhooks: only what the test does checks the session's status.
      r = await rig({ MARK_COMPLETE: 'true', RESULTS_MODE: 'webhook' }, proxy.url);
    });
    afterEach(async () => {
      await proxy.close();
    });

    /** A session whose captures all went through, in a flow only finish-status completes. */
    async function unfinishedSession(): Promise<{ id: string; token: string }> {
      const c = await r.orchestrator.runCaptures(input({ externalCustomerId: 'emu:no-auto-finish' }));
      if (!c.ok) throw new Error('rejected');
      return { id: c.interviewId, token: (await r.store.getSession(c.interviewId))!.token! };
    }
    /** A record callback that notes who recorded. */
    const recorder = (who: string, into: string[]) => async () => void into.push(who);

    it('two callers at once share one call; only the one that made it records it', async () => {
      const { id, token } = await unfinishedSession();
      const recorded: string[] = [];
      await Promise.all([r.pipeline.finishOnce(id, token, {}, recorder('a', recorded)), r.pipeline.finishOnce(id, token, {}, recorder('b', recorded))]);
      expect(recorded).toEqual(['a']);
      expect(finishCalls).toBe(1);
      // Not a cache: a later call is a new one.
      await r.pipeline.finishOnce(id, token, {}, recorder('c', recorded));
      expect(recorded).toEqual(['a', 'c']);
      expect(finishCalls).toBe(2);
    });

    it('the step is recorded before the call is let go: a caller that joined finds it recorded', async () => {
      const { id, token } = await unfinishedSession();
      const recorded: string[] = [];
      const slowRecord = () => new Promise<void>((resolve) => setTimeout(() => (recorded.push('first'), resolve()), 150));
      const first = r.pipeline.finishOnce(id, token, {}, slowRecord);
      await r.pipeline.finishOnce(id, token, {}, recorder('joined', recorded));
      expect(recorded).toEqual(['first']);
      await first;
      expect(finishCalls).toBe(1);
    });

    it("a call stopped by its maker's signal is made again by a caller that joined it; a joined caller's own signal stops its wait", async () => {
      const { id, token } = await unfinishedSession();
      const recorded: string[] = [];
      holdMs = 300;
      const maker = new AbortController();
      const made = r.pipeline.finishOnce(id, token, { signal: maker.signal }, recorder('maker', recorded)).catch((e: unknown) => e);
      const joined = r.pipeline.finishOnce(id, token, {}, recorder('joined', recorded));
      // Stopped once its call has reached Incode (and is held there).
      await waitFor(() => finishCalls === 1, 5_000, 5);
      maker.abort();
      expect(await made).toBeInstanceOf(Error);
      await joined;
      expect(recorded).toEqual(['joined']);
      expect(finishCalls).toBe(2);
      // A joined caller whose own signal aborts stops waiting at once, while the call it joined goes on.
      holdMs = 1000;
      const running = r.pipeline.finishOnce(id, token, {}).then(() => 'running');
      const mine = new AbortController();
      const gaveUp = r.pipeline.finishOnce(id, token, { signal: mine.signal }).then(() => 'joined', (e: unknown) => e);
      await waitFor(() => finishCalls === 3, 5_000, 5);
      mine.abort();
      expect(await Promise.race([gaveUp, running])).toMatchObject({ name: 'IncodeError', code: 'INCODE_TIMEOUT', operation: 'finishStatus' });
      expect(await running).toBe('running');
    });

    it('without polling, a webhook check that finds processing still going on comes back until it can complete the session', async () => {
      await r.close();
      await proxy.close();
      // Slow processing: the webhook for the face's status comes while the ID is still being post-processed (a 3 s
      // window, room for the reads and the first check on a loaded machine: the face is done 6 s after its capture,
      // the ID's post-processing 9 s after process-id).
      const slow = await startEmulator({ processingDelayMs: 6000 });
      proxy = await interceptingProxy(() => false, slow.url);
      r = await rig({ MARK_COMPLETE: 'true', RESULTS_MODE: 'webhook', JOB_BACKOFF_MS: '100', JOB_MAX_ATTEMPTS: '16' }, proxy.url);
      try {
        const c = await r.orchestrator.runCaptures(input({ externalCustomerId: 'emu:no-auto-finish' }));
        if (!c.ok) throw new Error('rejected');
        const token = (await r.store.getSession(c.interviewId))!.token!;
        const emu = (slow.app as unknown as { emulator: EmulatorController }).emulator;
        await waitFor(async () => emu.sessions.get(c.interviewId)?.facePhase === 2, 10_000, 10);
        const { onboardingStatus } = await r.incode.getOnboardingStatus(token, c.interviewId);
        expect((await r.incode.isPostProcessFinished(token, c.interviewId)).finished).toBe(false);
        await r.pipeline.ingestWebhook({ interviewId: c.interviewId, onboardingStatus });
        // No other webhook comes (the emulator sends none here) and nothing polls: only the check coming back ends it.
        await waitFor(async () => (await r.store.getSession(c.interviewId))?.resultsStatus === 'ready', 20_000, 50);
        const steps = await r.store.listSteps(c.interviewId);
        expect(steps.filter((x) => x.step === 'finish').map((x) => `${x.outcome}:${x.code ?? ''}`)).toEqual(['ok:BACKGROUND']);
        expect((await r.store.listJobs(c.interviewId)).some((j) => j.kind === 'verify' && j.lastError === 'PROCESSING_NOT_DONE')).toBe(true);
      } finally {
        await slow.close();
      }
    });

    it('a session its webhook check completed is not completed again by the request waiting on it', async () => {
      const c = await r.orchestrator.runCaptures(input({ externalCustomerId: 'emu:no-auto-finish' }));
      if (!c.ok) throw new Error('rejected');
      const token = (await r.store.getSession(c.interviewId))!.token!;
      // Both the ID's post-processing and the face's processing done: a finish-status then completes it at once.
      const emu = (emulator.app as unknown as { emulator: EmulatorController }).emulator;
      await waitFor(async () => emu.sessions.get(c.interviewId)?.idPhase === 2 && emu.sessions.get(c.interviewId)?.facePhase === 2, 10_000, 20);
      // Incode's webhook for the last module status: its check finds processing done and completes the session.
      const { onboardingStatus } = await r.incode.getOnboardingStatus(token, c.interviewId);
      await r.pipeline.ingestWebhook({ interviewId: c.interviewId, onboardingStatus });
      await waitFor(async () => (await r.store.getSession(c.interviewId))?.onboardingStatus === 'ONBOARDING_FINISHED', 10_000, 20);
      const result = await r.orchestrator.finish(c.interviewId);
      expect(result).toMatchObject({ onboardingStatus: 'ONBOARDING_FINISHED', resultsStatus: 'ready' });
      const finish = (await r.store.listSteps(c.interviewId)).filter((x) => x.step === 'finish');
      expect(finish.map((x) => `${x.outcome}:${x.code ?? ''}`)).toEqual(['ok:BACKGROUND']);
      expect(finishCalls).toBe(1);
    });
  });

  it('without MARK_COMPLETE such a flow never finishes: the wait gives up and says which setting is missing', async () => {
    const c = await r.orchestrator.runCaptures(input({ externalCustomerId: 'emu:no-auto-finish' }));
    if (!c.ok) throw new Error('rejected');
    const err = await r.orchestrator.finish(c.interviewId, { timeoutMs: 1500 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OnboardingError);
    expect(err).toMatchObject({ step: 'wait', code: 'TIMEOUT' });
    expect((err as Error).message).toMatch(/MARK_COMPLETE=true/);
  });

  it('sees a webhook that moves the session first (no second poll needed)', async () => {
    await r.close();
    const slow = await startEmulator({ processingDelayMs: 600 });
    try {
      r = await rig({ POLL_INTERVAL_MS: '60000', POLL_MAX_INTERVAL_MS: '60000' }, slow.url);
      const c = await r.orchestrator.runCaptures(input());
      if (!c.ok) throw new Error('rejected');
      const started = Date.now();
      const finishing = r.orchestrator.finish(c.interviewId);
      // What POST /webhooks/incode does once the emulator has finished processing.
      const emu = (slow.app as unknown as { emulator: EmulatorController }).emulator;
      void waitFor(async () => emu.sessions.get(c.interviewId)?.status === 'ONBOARDING_FINISHED', 10_000, 20).then(() =>
        r.pipeline.ingestWebhook({ interviewId: c.interviewId, onboardingStatus: 'ONBOARDING_FINISHED' }),
      );
      const result = await finishing;
      expect(result.decision).toBe('approve');
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await slow.close();
    }
  });

  it('runs a Brazilian session with countryCode BRA', async () => {
    const { captures, result } = await r.orchestrator.run(input({ countryCode: 'BRA' }));
    expect(captures).toMatchObject({ ok: true, typeOfId: 'IdentificationCard', documentCountry: 'BRA' });
    expect(result?.decision).toBe('approve');
    expect(result?.ocr).toMatchObject({ issuingCountry: 'BRA', typeOfId: 'IdentificationCard' });
    expect(r.events[0]).toMatchObject({ step: 'start', detail: 'BRA' });
  });
});

describe('one-sided documents', () => {
  it('skips the back when the front is a passport, without a back image', async () => {
    const { captures, result } = await r.orchestrator.run(input({ back: undefined, externalCustomerId: 'emu:one-sided' }));
    expect(captures).toMatchObject({ ok: true, oneSided: true, typeOfId: 'Passport' });
    expect(result?.decision).toBe('approve');
    const steps = await r.store.listSteps(captures.interviewId);
    expect(steps.find((s) => s.step === 'back')).toMatchObject({ outcome: 'skipped', code: 'ONE_SIDED_DOCUMENT' });
  });

  it('skips the back of a one-sided document even when one is sent', async () => {
    const c = await r.orchestrator.runCaptures(input({ externalCustomerId: 'emu:one-sided' }));
    expect(c).toMatchObject({ ok: true, oneSided: true });
    expect(await stepsOf(c.interviewId)).toContain('back:skipped');
  });

  it('asks for the back of a two-sided document sent without one', async () => {
    const c = await r.orchestrator.runCaptures(input({ back: undefined }));
    expect(c).toMatchObject({ ok: false, step: 'back', reason: 'ID_BACK_REQUIRED', message: ID_MESSAGES.ID_BACK_REQUIRED });
  });
});

describe('rejected captures', () => {
  it.each([
    ['front', 'glare', { front: b64(img.glareIdFront()) }, 'ID_GLARE'],
    ['front', 'blurry', { front: b64(img.blurryIdFront()) }, 'ID_BLURRY'],
    ['front', 'too small', { front: b64(img.smallIdFront()) }, 'ID_LOW_RESOLUTION'],
    ['front', 'unknown document', { externalCustomerId: 'emu:unknown-document' }, 'ID_NOT_CLASSIFIED'],
    ['back', 'a front sent as the back', { back: b64(img.glareIdFront()) }, 'ID_WRONG_SIDE'],
    ['selfie', 'dark pixels', { selfie: b64(img.darkSelfie()) }, 'SELFIE_NOT_BRIGHT'],
    ['selfie', 'emu:dark', { externalCustomerId: 'emu:dark' }, 'SELFIE_NOT_BRIGHT'],
    ['selfie', 'spoof', { externalCustomerId: 'emu:spoof' }, 'SELFIE_SPOOF_SUSPECTED'],
    ['selfie', 'lenses', { externalCustomerId: 'emu:lenses' }, 'SELFIE_LENSES'],
    ['selfie', 'mask', { externalCustomerId: 'emu:mask' }, 'SELFIE_FACE_MASK'],
  ] as const)('%s: %s', async (step, _name, patch, reason) => {
    const c = await r.orchestrator.runCaptures(input(patch as Partial<CaptureInput>));
    expect(c.ok).toBe(false);
    if (c.ok) return;
    expect(c.step).toBe(step);
    expect(c.reason).toBe(reason);
    expect(c.message.length).toBeGreaterThan(3);
    const s = await r.store.getSession(c.interviewId);
    expect(s).toMatchObject({ resultsStatus: 'failed', lastError: 'CAPTURE_REJECTED', nextPollAt: null });
    const steps = await r.store.listSteps(c.interviewId);
    expect(steps[steps.length - 1]).toMatchObject({ step, outcome: 'rejected', code: c.reason, message: c.message });
  });

  it.each([
    [4019, 'SELFIE_FACE_NOT_FOUND', 'Position your face in the center of the frame'],
    [4010, 'SELFIE_MULTIPLE_FACES', 'Make sure you are the only one in the frame'],
    [3006, 'SELFIE_BLURRY', 'Photo blurry, clean the lens and hold still'],
    [100, 'SELFIE_TOO_DARK', 'Too dark'],
    [4005, 'SELFIE_POOR_CONDITIONS', DEFAULT_SELFIE_MESSAGE],
  ])('selfie error %i → %s with the guide message', async (code, reason, message) => {
    const c = await r.orchestrator.runCaptures(input({ externalCustomerId: `emu:selfie-error-${code}` }));
    expect(c).toMatchObject({ ok: false, step: 'selfie', reason, message, incodeCode: code });
  });

  // Which HTTP status each Incode code comes with is unknown: the envelope's code decides, not the status line.
  it.each([
    ['emu:selfie-error-3008-http-500', 'SELFIE_IMAGE_UNSUPPORTED', 'Something went wrong, please try later', 3008],
    // Codes Incode's add/face is seen answering outside the guide's table: "any other", whatever the status line.
    ['emu:selfie-error-4005-http-500', 'SELFIE_POOR_CONDITIONS', DEFAULT_SELFIE_MESSAGE, 4005],
    ['emu:selfie-error-1001-http-503', 'SELFIE_POOR_CONDITIONS', DEFAULT_SELFIE_MESSAGE, 1001],
    // A capture code under a 404 or 409 is still Incode answering about the selfie, not a session it lost.
    ['emu:selfie-error-4019-http-404', 'SELFIE_FACE_NOT_FOUND', 'Position your face in the center of the frame', 4019],
    ['emu:selfie-error-3002-http-409', 'SELFIE_POOR_CONDITIONS', DEFAULT_SELFIE_MESSAGE, 3002],
    // A bare 500: the guide repeats the selfie on any status but 200, and its code table names 500 (an image Incode
    // could not process).
    ['emu:selfie-error-500-http-500', 'SELFIE_POOR_CONDITIONS', DEFAULT_SELFIE_MESSAGE, 500],
  ])('a selfie error code under another status (%s) is a selfie to repeat, not an outage', async (customer, reason, message, code) => {
    const c = await r.orchestrator.runCaptures(input({ externalCustomerId: customer }));
    expect(c).toMatchObject({ ok: false, step: 'selfie', reason, message, incodeCode: code });
    if (c.ok) throw new Error('not rejected');
    expect(await stepsOf(c.interviewId)).toEqual(['start:ok', 'front:ok', 'back:ok', 'process-id:ok', 'selfie:rejected']);
  });

  it.each([
    // No capture code: a gateway's 502 or 503 is an outage, a 404 a session Incode does not know, a 401 an auth
    // refusal, even when the envelope names a capture code.
    ['emu:selfie-error-503-http-503', 'INCODE_UNAVAILABLE'],
    ['emu:selfie-error-502-http-502', 'INCODE_UNAVAILABLE'],
    ['emu:selfie-error-404', 'INCODE_NOT_FOUND'],
    ['emu:selfie-error-4019-http-401', 'INCODE_UNAUTHORIZED'],
  ])('a selfie upload failing with %s is a failure, not a capture to repeat', async (customer, code) => {
    const err = (await r.orchestrator.runCaptures(input({ externalCustomerId: customer })).catch((e: unknown) => e)) as OnboardingError;
    expect(err).toBeInstanceOf(OnboardingError);
    expect(err).toMatchObject({ step: 'selfie', code });
  });

  it('reports a face mismatch and lets the scores decline the session', async () => {
    const { captures, result } = await r.orchestrator.run(input({ externalCustomerId: 'emu:no-match' }));
    expect(captures).toMatchObject({ ok: true, faceMatch: { ok: false, reason: 'FACE_NO_MATCH' } });
    expect(result?.decision).toBe('decline');
    const steps = await r.store.listSteps(captures.interviewId);
    expect(steps.find((s) => s.step === 'face-match')).toMatchObject({ outcome: 'rejected', code: 'FACE_NO_MATCH' });
  });

  it('reports an existing user', async () => {
    const c = await r.orchestrator.runCaptures(input({ externalCustomerId: 'emu:existing-user' }));
    expect(c).toMatchObject({ ok: true, faceMatch: { ok: true, existingUser: true } });
  });
});

describe('verdicts', () => {
  it.each([
    ['emu:decline', 'decline'],
    ['emu:warn', 'review'],
  ])('%s → %s', async (id, decision) => {
    const { result } = await r.orchestrator.run(input({ externalCustomerId: id }));
    expect(result?.decision).toBe(decision);
  });
});

describe('failures', () => {
  it('an Incode failure mid-flow says where and why, and leaves the session failed', async () => {
    // A 409 on the selfie upload: not a capture to repeat (the guide's retakes are the other 4xx), a failure.
    let err: OnboardingError | undefined;
    await r.orchestrator.runCaptures(input({ externalCustomerId: 'emu:selfie-error-409' })).catch((e) => (err = e));
    expect(err).toBeInstanceOf(OnboardingError);
    expect(err).toMatchObject({ step: 'selfie', code: 'INCODE_CONFLICT', incode: { operation: 'addFace', httpStatus: 409 } });
    expect(err!.message).toContain('selfie');
    const id = err!.interviewId!;
    expect(await r.store.getSession(id)).toMatchObject({ resultsStatus: 'failed', lastError: 'INCODE_CONFLICT', nextPollAt: null });
    expect(await stepsOf(id)).toEqual(['start:ok', 'front:ok', 'back:ok', 'process-id:ok', 'selfie:failed']);
    expect(r.events[r.events.length - 1]).toMatchObject({ step: 'selfie', outcome: 'failed', code: 'INCODE_CONFLICT' });
  });

  it.each([
    // Incode's "Processing error" (6000): the document, or the selfie, must be captured again (shared doc 4.4, 4.6),
    // whether it comes under a 4xx or a 500.
    ['emu:process-id-error', 'front', 'ID_PROCESSING_FAILED', ['start:ok', 'front:ok', 'back:ok', 'front:rejected']],
    ['emu:process-id-error-http-500', 'front', 'ID_PROCESSING_FAILED', ['start:ok', 'front:ok', 'back:ok', 'front:rejected']],
    ['emu:process-face-error', 'selfie', 'SELFIE_PROCESSING_FAILED', ['start:ok', 'front:ok', 'back:ok', 'process-id:ok', 'selfie:ok', 'selfie:rejected']],
    ['emu:process-face-error-http-500', 'selfie', 'SELFIE_PROCESSING_FAILED', ['start:ok', 'front:ok', 'back:ok', 'process-id:ok', 'selfie:ok', 'selfie:rejected']],
  ])('a processing error (%s) is a capture to repeat, not an outage', async (customer, step, reason, steps) => {
    const c = await r.orchestrator.runCaptures(input({ externalCustomerId: customer }));
    expect(c).toMatchObject({ ok: false, step, reason, incodeCode: 6000, message: expect.stringMatching(/again/) });
    if (c.ok) throw new Error('not rejected');
    expect(await r.store.getSession(c.interviewId)).toMatchObject({ resultsStatus: 'failed', lastError: 'CAPTURE_REJECTED' });
    expect(await stepsOf(c.interviewId)).toEqual(steps);
  });

  it('a database outage right after start is answered with the session Incode created, not lost', async () => {
    const locked = Object.assign(new Error('database is locked'), { name: 'SqliteError', code: 'SQLITE_BUSY' });
    const upsert = jest.spyOn(r.store, 'upsertSession').mockRejectedValueOnce(locked);
    const writes = jest.spyOn(r.store, 'recordStep');
    try {
      const err = (await r.orchestrator.runCaptures(input()).catch((e: unknown) => e)) as OnboardingError;
      expect(err).toBeInstanceOf(OnboardingError);
      expect(err).toMatchObject({ step: 'start', code: 'DATABASE_UNAVAILABLE', interviewId: expect.stringMatching(/^[0-9a-f]{24}$/) });
      // Nothing more is asked of the database that just failed (each ask would wait out its timeout first).
      expect(writes).not.toHaveBeenCalled();
    } finally {
      upsert.mockRestore();
      writes.mockRestore();
    }
  });

  it('a database outage at the first write after the session is stored leaves it marked as begun: polling calls it interrupted later', async () => {
    // The session and its start step are one write: one without the other would look like an app's session (no steps),
    // which polling never calls interrupted, and it would be polled, pending, for POLL_GIVE_UP_HOURS.
    const locked = Object.assign(new Error('database is locked'), { name: 'SqliteError', code: 'SQLITE_BUSY' });
    const record = jest.spyOn(r.store, 'recordStep').mockRejectedValueOnce(locked);
    try {
      const err = (await r.orchestrator.runCaptures(input()).catch((e: unknown) => e)) as OnboardingError;
      expect(err).toMatchObject({ code: 'DATABASE_UNAVAILABLE', interviewId: expect.stringMatching(/^[0-9a-f]{24}$/) });
      expect(await stepsOf(err.interviewId!)).toEqual(['start:ok']);
      expect(capturesInterrupted(await r.store.listSteps(err.interviewId!))).toBe(true);
      expect(r.events[0]).toMatchObject({ step: 'start', outcome: 'ok', interviewId: err.interviewId });
    } finally {
      record.mockRestore();
    }
  });

  it('a store failure mid-captures fails the session at that step instead of leaving it pending', async () => {
    const original = r.store.recordStep.bind(r.store);
    const record = jest.spyOn(r.store, 'recordStep').mockImplementation(async (id, step) => {
      if (step.step === 'selfie' && step.outcome === 'ok') throw new Error('disk I/O error');
      return original(id, step);
    });
    try {
      const err = (await r.orchestrator.runCaptures(input()).catch((e: unknown) => e)) as OnboardingError;
      expect(err).toMatchObject({ step: 'selfie', code: 'INTERNAL_ERROR', interviewId: expect.any(String) });
      expect(await r.store.getSession(err.interviewId!)).toMatchObject({ resultsStatus: 'failed', lastError: 'INTERNAL_ERROR', nextPollAt: null });
      expect((await stepsOf(err.interviewId!)).at(-1)).toBe('selfie:failed');
    } finally {
      record.mockRestore();
    }
  });

  it('a start refused by Incode fails before any session exists', async () => {
    await r.close();
    r = await rig({ INCODE_API_KEY: 'wrong-key-0123456789' });
    await expect(r.orchestrator.runCaptures(input())).rejects.toMatchObject({ step: 'start', code: 'INCODE_FORBIDDEN', interviewId: null });
  });

  it('an unreachable Incode is a clear connection error', async () => {
    await r.close();
    r = await rig({}, 'http://127.0.0.1:9');
    await expect(r.orchestrator.runCaptures(input())).rejects.toMatchObject({ step: 'start', code: 'INCODE_CONNECTION' });
  });

  it('an expired session fails the wait with SESSION_EXPIRED', async () => {
    const { captures } = await r.orchestrator.run(input({ externalCustomerId: 'emu:decline' }));
    expect(captures.ok).toBe(true);
    const c = await r.orchestrator.runCaptures(input({ externalCustomerId: 'emu:expire' }));
    if (!c.ok) throw new Error('rejected');
    await expect(r.orchestrator.finish(c.interviewId)).rejects.toMatchObject({ step: 'wait', code: 'SESSION_EXPIRED' });
    expect(await r.store.getSession(c.interviewId)).toMatchObject({ onboardingStatus: 'EXPIRED', resultsStatus: 'failed', lastError: 'SESSION_EXPIRED' });
  });

  it('gives up after the timeout and records it, leaving the session pending for background polling', async () => {
    await r.close();
    const slow = await startEmulator({ processingDelayMs: 5000 });
    try {
      r = await rig({}, slow.url);
      const c = await r.orchestrator.runCaptures(input());
      if (!c.ok) throw new Error('rejected');
      await expect(r.orchestrator.finish(c.interviewId, { timeoutMs: 300 })).rejects.toMatchObject({ step: 'wait', code: 'TIMEOUT' });
      expect(await r.store.getSession(c.interviewId)).toMatchObject({ resultsStatus: 'pending' });
      expect(await stepsOf(c.interviewId)).toContain('wait:failed');
    } finally {
      await slow.close();
    }
  });

  it("a wait that gives up on results says why they have not come (the pipeline's last error), not a bare timeout", async () => {
    await r.close();
    const failing = await startEmulator();
    try {
      r = await rig({ JOB_MAX_ATTEMPTS: '100' }, failing.url);
      const c = await r.orchestrator.runCaptures(input());
      if (!c.ok) throw new Error('rejected');
      // Every score read fails from now on: Incode down for results only.
      (failing.app as unknown as { emulator: EmulatorController }).emulator.setFaults({ errorRate: 1, errorStatuses: [500], faultPaths: ['/omni/get/score'] });
      const err = await r.orchestrator.finish(c.interviewId, { timeoutMs: 4000 }).catch((e: unknown) => e);
      expect(err).toMatchObject({ step: 'results', code: 'TIMEOUT' });
      expect((err as Error).message).toMatch(/^Gave up waiting at step results \(onboarding status ONBOARDING_FINISHED\); last error: INCODE_/);
    } finally {
      await failing.close();
    }
  });

  it('stops at once when aborted', async () => {
    const c = await r.orchestrator.runCaptures(input());
    if (!c.ok) throw new Error('rejected');
    const ac = new AbortController();
    ac.abort();
    await expect(r.orchestrator.finish(c.interviewId, { signal: ac.signal })).rejects.toMatchObject({ code: 'ABORTED' });
  });

  it('a stop during the start lets the start finish: the session it may have billed is known, and recorded', async () => {
    await r.close();
    const slow = await startEmulator({ faults: { startLatencyMs: 1500 } });
    try {
      r = await rig({}, slow.url);
      const ac = new AbortController();
      const before = (slow.app as unknown as { emulator: EmulatorController }).emulator.sessions.size;
      const running = r.orchestrator.runCaptures({ ...input(), signal: ac.signal });
      // Stopped while the start waits for its answer.
      setTimeout(() => ac.abort(), 300);
      const err = (await running.catch((e: unknown) => e)) as OnboardingError;
      expect(err).toMatchObject({ code: 'ABORTED' });
      // Not cut off mid-way: Incode's session exists, and so does its record here, with its id.
      expect((slow.app as unknown as { emulator: EmulatorController }).emulator.sessions.size).toBe(before + 1);
      expect(err.interviewId).toMatch(/^[0-9a-f]{24}$/);
      expect(await r.store.getSession(err.interviewId!)).toMatchObject({ interviewId: err.interviewId });
    } finally {
      await slow.close();
    }
  });

  it('a stop before the start is sent sends nothing: the error says so (an Idempotency-Key is freed for it)', async () => {
    const emu = (emulator.app as unknown as { emulator: EmulatorController }).emulator;
    const before = emu.sessions.size;
    const ac = new AbortController();
    ac.abort();
    const err = (await r.orchestrator.runCaptures({ ...input(), signal: ac.signal }).catch((e: unknown) => e)) as OnboardingError;
    expect(err).toMatchObject({ step: 'start', code: 'ABORTED', interviewId: null });
    expect(err.certainlyNotDone).toBe(true);
    expect(emu.sessions.size).toBe(before);
  });

  it('a stop while the face match is on its way keeps the session pending, as Incode may still finish it', async () => {
    await r.close();
    // Only the face match is slow: it is sent, and the stop comes while it waits for Incode's answer.
    const slow = await startEmulator({ faults: { latencyMs: 3000, faultPaths: ['/omni/process/face'] } });
    try {
      r = await rig({}, slow.url);
      const ac = new AbortController();
      const running = r.orchestrator.runCaptures({ ...input(), signal: ac.signal });
      await waitFor(async () => r.events.some((e) => e.step === 'selfie' && e.outcome === 'ok') || null, 10_000, 5);
      setTimeout(() => ac.abort(), 800);
      const err = (await running.catch((e: unknown) => e)) as OnboardingError;
      expect(err).toMatchObject({ step: 'face-match', code: 'ABORTED' });
      expect(await r.store.getSession(err.interviewId!)).toMatchObject({ resultsStatus: 'pending' });
    } finally {
      await slow.close();
    }
  });
});
