// The CLI as a user runs it: a subprocess through bin/incode-broker.js against the in-process emulator.
import { execFileSync } from 'node:child_process';
import { symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../src/config';
import { shown } from '../../src/cli/main';
import { Cipher } from '../../src/store/crypto';
import { createStore } from '../../src/store/index';
import { verifyEncryptionKeys } from '../../src/store/key-check';
import { ROOT, spawnNode, type NodeProcess } from '../helpers/node-process';
import { tempDir } from '../helpers/temp';
import { ENCRYPTION_KEY, TEST_API_KEY, recordRequests, startEmulator } from '../helpers/harness';

const BIN = join(ROOT, 'bin/incode-broker.js');
const sample = (name: string) => join(ROOT, 'samples', name);
const GOOD = ['--front', sample('id-front.jpg'), '--back', sample('id-back.jpg'), '--selfie', sample('selfie.jpg')];

let cwd: string;
beforeAll(() => {
  // An empty working directory: no developer .env (with a real INCODE_API_KEY) can leak into the run.
  cwd = tempDir('incode-cli-');
});

// A CLI still running when its test ends (a timeout) is stopped, not left to run beside the next tests.
const running = new Set<NodeProcess>();
afterEach(async () => {
  await Promise.all([...running].map((p) => p.stop()));
  running.clear();
});

function run(args: string[], extraEnv: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  // A clean environment: no INCODE_API_KEY, so the emulator is the upstream.
  const proc = spawnNode([BIN, ...args], { EMULATOR_PROCESSING_DELAY_MS: '50', POLL_INTERVAL_MS: '100', JOB_BACKOFF_MS: '50', ...extraEnv }, ['ignore', 'pipe', 'pipe'], cwd);
  const { child } = proc;
  running.add(proc);
  child.on('exit', () => running.delete(proc));
  return new Promise((resolvePromise, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
  });
}

/** A database of its own in a file, as a broker would share it, and the store the test reads it with. */
const sharedDatabase = () => ({ DATABASE_URL: `sqlite:${join(tempDir('incode-cli-db-'), 'cli.db')}`, DATA_ENCRYPTION_KEY: ENCRYPTION_KEY });
function openStore(env: Record<string, string>) {
  const config = loadConfig({ ...env, INCODE_API_KEY: TEST_API_KEY });
  return createStore({ url: config.database.url, cipher: new Cipher(config.encryption.keys) });
}

const noSecrets = (s: string) => {
  expect(s).not.toMatch(/eyJ[\w-]+\.[\w-]+\./);
  // The sandbox's throwaway API key.
  expect(s).not.toMatch(/sandbox-[\w-]{24}/);
};

describe('incode-broker onboard', () => {
  it('approves a good session and prints progress, verdict, scores and OCR (text)', async () => {
    const r = await run(['onboard', ...GOOD, '--show-ocr']);
    expect(r.code).toBe(0);
    for (const step of ['start', 'front', 'back', 'process-id', 'selfie', 'face-match', 'wait', 'results']) expect(r.stderr).toMatch(new RegExp(`✓ ${step}\\b`));
    // The session's id as soon as it exists: whatever happens next, the user can look it up.
    expect(r.stderr).toMatch(/^✓ start\s+ALL [0-9a-f]{24}$/m);
    expect(r.stdout).toMatch(/^Verdict: APPROVE$/m);
    expect(r.stdout).toMatch(/^Overall score: OK/m);
    expect(r.stdout).toMatch(/^ID validation: OK.*Liveness: OK.*Face recognition: OK/m);
    expect(r.stdout).toMatch(/^Name: [A-Z]+/m);
    expect(r.stdout).toMatch(/^Address: .+/m);
    expect(r.stdout).toMatch(/^Type of ID: DriversLicense$/m);
    noSecrets(r.stdout + r.stderr);
  });

  it('prints one JSON document on stdout with --json', async () => {
    const r = await run(['onboard', ...GOOD, '--country', 'BRA', '--json', '--show-ocr']);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({
      outcome: 'approve',
      exitCode: 0,
      sandbox: true,
      interviewId: expect.any(String),
      onboardingStatus: 'ONBOARDING_FINISHED',
      decision: 'approve',
      scores: { overall: { status: 'OK' }, idValidation: { status: 'OK' }, liveness: { status: 'OK' }, faceRecognition: { status: 'OK' } },
      ocr: { fullName: expect.any(String), address: expect.any(String), typeOfId: 'IdentificationCard' },
      faceMatch: { matched: true, existingUser: false },
    });
    expect(doc.steps.map((s: { step: string }) => s.step)).toEqual(['start', 'front', 'back', 'process-id', 'selfie', 'face-match', 'wait', 'finish', 'results']);
    // stderr is not a terminal here: nothing but the document is printed.
    expect(r.stderr).toBe('');
    noSecrets(r.stdout);
  });

  it("shows a blank overall status (Incode's \"\") as UNKNOWN, not as nothing", async () => {
    const r = await run(['onboard', ...GOOD, '--external-customer-id', 'emu:overall-blank']);
    expect(r.stdout).toMatch(/^Overall score: UNKNOWN/m);
  });

  it('prints text read off a document with its control characters and direction overrides replaced', () => {
    expect(shown('ANA\u001b[2J\u001b]0;pwned\u0007 LOPEZ\u202eZEPOL\r\nX')).toBe('ANA\ufffd[2J\ufffd]0;pwned\ufffd LOPEZ\ufffdZEPOL\ufffd\ufffdX');
    expect(shown('JOSÉ ŁUKASZ 李 محمد')).toBe('JOSÉ ŁUKASZ 李 محمد');
    expect(shown('A\u2028B\u200bC\ufeffD')).toBe('A\ufffdB\ufffdC\ufffdD');
  });

  it('prints the name and address read from the ID only with --show-ocr (text and JSON)', async () => {
    const text = await run(['onboard', ...GOOD]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^Verdict: APPROVE$/m);
    expect(text.stdout).toMatch(/^Type of ID: DriversLicense$/m);
    expect(text.stdout).not.toMatch(/^(Name|Address):/m);
    const json = await run(['onboard', ...GOOD, '--json']);
    expect(JSON.parse(json.stdout).ocr).toEqual({ typeOfId: 'DriversLicense' });
  });

  it('warns on stderr, even with --json, when it runs against Incode with nothing but memory to record the session', async () => {
    const r = await run(['onboard', ...GOOD, '--json'], { INCODE_API_KEY: 'a-real-looking-key-0123456789', INCODE_API_URL: 'http://127.0.0.1:9', INCODE_MAX_RETRIES: '0' });
    expect(r.stderr).toMatch(/^warning: no DATABASE_URL: this onboarding is recorded in this process only/m);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ outcome: 'error', error: { step: 'start' } });
  });

  it('runs a one-sided document without a back', async () => {
    const r = await run(['onboard', '--front', sample('id-front.jpg'), '--selfie', sample('selfie.jpg'), '--external-customer-id', 'emu:one-sided', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ outcome: 'approve', oneSided: true, ocr: { typeOfId: 'Passport' } });
  });

  it('exits 2 with the reason and the message of a rejected ID capture (text)', async () => {
    const r = await run(['onboard', '--front', sample('id-front-glare.jpg'), '--back', sample('id-back.jpg'), '--selfie', sample('selfie.jpg')]);
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/^Capture rejected at step front: ID_GLARE$/m);
    expect(r.stdout).toMatch(/^Message to show: .*glare/im);
    expect(r.stderr).toMatch(/✗ front\s+rejected: ID_GLARE/);
  });

  it.each([
    ['id-front-blurry.jpg', 'selfie.jpg', 'front', 'ID_BLURRY'],
    ['id-front-small.jpg', 'selfie.jpg', 'front', 'ID_LOW_RESOLUTION'],
    ['id-front.jpg', 'selfie-dark.jpg', 'selfie', 'SELFIE_NOT_BRIGHT'],
  ])('exits 2 for %s + %s (JSON)', async (front, selfie, step, reason) => {
    const r = await run(['onboard', '--front', sample(front), '--back', sample('id-back.jpg'), '--selfie', sample(selfie), '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout)).toMatchObject({ outcome: 'rejected', exitCode: 2, rejection: { step, reason, message: expect.any(String) } });
  });

  it('exits 2 with the guide message for a selfie error code', async () => {
    const r = await run(['onboard', ...GOOD, '--external-customer-id', 'emu:selfie-error-4019', '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout).rejection).toEqual({ step: 'selfie', reason: 'SELFIE_FACE_NOT_FOUND', message: 'Position your face in the center of the frame', incodeCode: 4019 });
  });

  it.each([
    ['emu:decline', 3, 'DECLINE'],
    ['emu:warn', 4, 'REVIEW'],
  ])('%s exits %i', async (id, code, verdict) => {
    const r = await run(['onboard', ...GOOD, '--external-customer-id', id]);
    expect(r.code).toBe(code);
    expect(r.stdout).toMatch(new RegExp(`^Verdict: ${verdict}$`, 'm'));
  });

  it('exits 1 with the step and the code of an Incode failure', async () => {
    const text = await run(['onboard', ...GOOD, '--external-customer-id', 'emu:selfie-error-409']);
    expect(text.code).toBe(1);
    expect(text.stderr).toMatch(/^Error at step selfie: INCODE_CONFLICT$/m);
    expect(text.stderr).toMatch(/409/);
    const json = await run(['onboard', ...GOOD, '--external-customer-id', 'emu:selfie-error-409', '--json']);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ outcome: 'error', exitCode: 1, error: { step: 'selfie', code: 'INCODE_CONFLICT', incodeStatus: 409 } });
    // Incode's processing error is a capture to repeat: exit 2, like any rejected capture.
    const redo = await run(['onboard', ...GOOD, '--external-customer-id', 'emu:process-id-error', '--json']);
    expect(redo.code).toBe(2);
    expect(JSON.parse(redo.stdout)).toMatchObject({ outcome: 'rejected', rejection: { step: 'front', reason: 'ID_PROCESSING_FAILED' } });
  });

  it('exits 1 on usage errors and files that are not images', async () => {
    const missing = await run(['onboard', '--front', sample('id-front.jpg')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/--selfie <file> is required/);
    const notImage = await run(['onboard', '--front', sample('not-an-image.jpg'), '--selfie', sample('selfie.jpg'), '--json']);
    expect(notImage.code).toBe(1);
    expect(JSON.parse(notImage.stdout)).toMatchObject({ outcome: 'error', error: { code: 'USAGE', message: expect.stringMatching(/not a JPEG or PNG/) } });
    const both = await run(['onboard', ...GOOD, '--one-sided']);
    expect(both.code).toBe(1);
    expect(both.stderr).toMatch(/--back and --one-sided cannot be given together/);
    const noFile = await run(['onboard', '--front', join(cwd, 'nope.jpg'), '--selfie', sample('selfie.jpg')]);
    expect(noFile.code).toBe(1);
    expect(noFile.stderr).toMatch(/cannot read/);
    // A device is not read at all (/dev/zero would fill the memory, a pipe block).
    const device = await run(['onboard', '--front', '/dev/zero', '--selfie', sample('selfie.jpg')]);
    expect(device.code).toBe(1);
    expect(device.stderr).toMatch(/--front: \/dev\/zero is not a regular file/);
    // Nor through a symlink, nor a named pipe with no writer (opening it must not wait for one).
    const link = join(cwd, 'zero-link.jpg');
    symlinkSync('/dev/zero', link);
    const linked = await run(['onboard', '--front', link, '--selfie', sample('selfie.jpg')]);
    expect(linked.stderr).toMatch(/is not a regular file/);
    const fifo = join(cwd, 'pipe.jpg');
    execFileSync('mkfifo', [fifo]);
    const piped = await run(['onboard', '--front', fifo, '--selfie', sample('selfie.jpg')]);
    expect(piped.code).toBe(1);
    expect(piped.stderr).toMatch(/--front: .*pipe\.jpg is not a regular file/);
    const badCountry = await run(['onboard', ...GOOD, '--country', 'XX']);
    expect(badCountry.code).toBe(1);
    const unknown = await run(['frobnicate']);
    expect(unknown.code).toBe(1);
  });

  it('refuses a timeout under a second and an empty file, each by what is wrong with it', async () => {
    const short = await run(['onboard', ...GOOD, '--timeout', '0.5']);
    expect(short.code).toBe(1);
    expect(short.stderr).toMatch(/--timeout must be a number of seconds between 1 and 86400/);
    const empty = join(cwd, 'empty.jpg');
    writeFileSync(empty, '');
    const r = await run(['onboard', '--front', empty, '--selfie', sample('selfie.jpg')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--front: .*empty\.jpg is empty/);
  });

  it('stops on Ctrl-C and reports the session it started (its interviewId), exit 1', async () => {
    // Processing that outlasts the test: the run is still waiting when it is interrupted.
    const proc = spawnNode([BIN, 'onboard', ...GOOD], { EMULATOR_PROCESSING_DELAY_MS: '600000', POLL_INTERVAL_MS: '100' }, ['ignore', 'pipe', 'pipe'], cwd);
    running.add(proc);
    let stdout = '';
    let stderr = '';
    proc.child.stdout!.on('data', (d) => (stdout += d));
    const waiting = new Promise<void>((resolve) => proc.child.stderr!.on('data', (d) => ((stderr += d), stderr.includes('waiting for Incode') && resolve())));
    await waiting;
    const id = /^✓ start\s+ALL ([0-9a-f]{24})$/m.exec(stderr)![1];
    proc.child.kill('SIGINT');
    expect(await proc.exited).toBe(1);
    // The report of an error goes to stderr, as every error does.
    await new Promise((r) => setImmediate(r));
    expect(stderr).toMatch(/SIGINT: stopping/);
    expect(stderr).toMatch(/^Error at step wait: ABORTED$/m);
    expect(stderr).toContain(`Interview ID: ${id}`);
    expect(stdout).toBe('');
  });

  it('keeps its verdict as exit code when stdout is closed before the report (| head), with no crash', async () => {
    const proc = spawnNode([BIN, 'onboard', ...GOOD, '--json'], { EMULATOR_PROCESSING_DELAY_MS: '50', POLL_INTERVAL_MS: '100', JOB_BACKOFF_MS: '50' }, ['ignore', 'pipe', 'pipe'], cwd);
    running.add(proc);
    proc.child.stdout!.destroy();
    let stderr = '';
    proc.child.stderr!.on('data', (d) => (stderr += d));
    expect(await proc.exited).toBe(0);
    expect(stderr).not.toMatch(/EPIPE|Unhandled/);
  });

  it('refuses an image too small to be a photo before any session, as the route does', async () => {
    const tiny = join(cwd, 'tiny.jpg');
    writeFileSync(tiny, Buffer.from([0xff, 0xd8, 0xff]));
    const r = await run(['onboard', '--front', tiny, '--back', sample('id-back.jpg'), '--selfie', sample('selfie.jpg'), '--json']);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ outcome: 'error', error: { code: 'USAGE', message: expect.stringMatching(/too small to be a photo/) } });
  });

  it('runs a document declared --one-sided without a back', async () => {
    const r = await run(['onboard', '--front', sample('id-front.jpg'), '--selfie', sample('selfie.jpg'), '--one-sided', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ outcome: 'approve' });
  });

  it('refuses an image over Incode\'s 10 MB request limit before any session, as the route does', async () => {
    const huge = join(cwd, 'huge.jpg');
    writeFileSync(huge, Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(7_600_000)]));
    const r = await run(['onboard', '--front', sample('id-front.jpg'), '--back', sample('id-back.jpg'), '--selfie', huge, '--json']);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ outcome: 'error', error: { code: 'USAGE', message: expect.stringMatching(/--selfie: .*larger than Incode accepts/) } });
  });

  it('runs with NODE_ENV=production in the environment (the service refusals are not the CLI\'s)', async () => {
    const r = await run(['onboard', ...GOOD, '--json'], { NODE_ENV: 'production' });
    expect(r.stderr).not.toMatch(/must not be|is required in production/);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ outcome: 'approve' });
    // The rule that protects the API key still holds: no plain http to a remote Incode.
    const cleartext = await run(['onboard', ...GOOD, '--json'], { NODE_ENV: 'production', INCODE_API_KEY: 'a-real-looking-key-0123456789', INCODE_API_URL: 'http://incode.example.com' });
    expect(cleartext.code).toBe(1);
    expect(JSON.parse(cleartext.stdout)).toMatchObject({ outcome: 'error', error: { code: 'USAGE', message: expect.stringMatching(/INCODE_API_URL must use https/) } });
  }, 30_000);

  it('with RESULTS_MODE=webhook and MARK_COMPLETE, a wait that gives up leaves a status check queued for a broker sharing the database', async () => {
    // Nothing polls in that mode and only this service marks the onboarding complete: without the check, a broker
    // reading the same database would never come back to it. The CLI's own worker has stopped first: it stays queued.
    const emu = await startEmulator({ processingDelayMs: 30_000 });
    try {
      const env = sharedDatabase();
      const r = await run(['onboard', ...GOOD, '--timeout', '1', '--json'], { ...env, INCODE_API_KEY: TEST_API_KEY, INCODE_API_URL: emu.url, RESULTS_MODE: 'webhook', MARK_COMPLETE: 'true' });
      expect(r.code).toBe(1);
      const doc = JSON.parse(r.stdout);
      expect(doc.error).toMatchObject({ step: 'wait', code: 'TIMEOUT' });
      const store = openStore(env);
      try {
        expect(await store.getSession(doc.interviewId)).toMatchObject({ resultsStatus: 'pending' });
        const checks = (await store.listJobs(doc.interviewId)).filter((j) => j.kind === 'verify');
        expect(checks).toEqual([expect.objectContaining({ state: 'queued', attempts: 0, payload: { source: 'refresh' } })]);
      } finally {
        await store.close();
      }
    } finally {
      await emu.close();
    }
  }, 30_000);

  it("refuses, before anything is sent to Incode, a key that is not the one the broker's database knows under its id", async () => {
    const emu = await startEmulator();
    try {
      const env = sharedDatabase();
      const [id] = ENCRYPTION_KEY.split(':');
      // The broker's database, recorded under another key with the same id.
      const other = { id, key: Buffer.alloc(32, 9) };
      const broker = createStore({ url: loadConfig({ ...env, INCODE_API_KEY: TEST_API_KEY }).database.url, cipher: new Cipher([other]) });
      await broker.migrate();
      await verifyEncryptionKeys(broker, [other], Date.now());
      await broker.close();
      const seen = recordRequests(emu.app.server);
      const r = await run(['onboard', ...GOOD, '--json'], { ...env, INCODE_API_KEY: TEST_API_KEY, INCODE_API_URL: emu.url });
      expect(r.code).toBe(1);
      expect(JSON.parse(r.stdout)).toMatchObject({ outcome: 'error', error: { code: 'USAGE', message: expect.stringMatching(new RegExp(`DATA_ENCRYPTION_KEY lists key ${id}, but`)) } });
      expect(seen.urls).toEqual([]);
    } finally {
      await emu.close();
    }
  }, 30_000);

  it("on a database a broker shares, runs only its own onboarding's jobs: the broker's stay queued for the broker", async () => {
    const emu = await startEmulator();
    try {
      const env = sharedDatabase();
      const store = openStore(env);
      try {
        await store.migrate();
        // The broker's work, due now: a status check, a customer callback and an erasure at Incode of other sessions.
        const now = Date.now();
        for (const [kind, subject] of [['verify', 'b'.repeat(24)], ['callback', 'c'.repeat(24)], ['incode-delete', 'd'.repeat(24)]] as const)
          await store.enqueueJob({ kind, subject, payload: {}, runAt: now }, now);
        const r = await run(['onboard', ...GOOD, '--json'], { ...env, INCODE_API_KEY: TEST_API_KEY, INCODE_API_URL: emu.url });
        expect(r.code).toBe(0);
        expect(JSON.parse(r.stdout)).toMatchObject({ outcome: 'approve' });
        for (const subject of ['b', 'c', 'd'].map((c) => c.repeat(24)))
          expect(await store.listJobs(subject)).toEqual([expect.objectContaining({ state: 'queued', attempts: 0 })]);
      } finally {
        await store.close();
      }
    } finally {
      await emu.close();
    }
  }, 30_000);

  it.each([
    ['with its key', sharedDatabase],
    // Said first, not after a refusal for the missing key that setting it would only replace with this one.
    ['without a DATA_ENCRYPTION_KEY', () => ({ DATABASE_URL: sharedDatabase().DATABASE_URL })],
  ])('refuses a DATABASE_URL in sandbox mode (%s): the emulator\'s sessions would be written into that database', async (_n, env) => {
    const r = await run(['onboard', ...GOOD, '--json'], env());
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ outcome: 'error', error: { code: 'USAGE', message: expect.stringMatching(/DATABASE_URL must not be set in sandbox mode/) } });
  });

  it('documents the exit codes in --help', async () => {
    const r = await run(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Usage: incode-broker onboard/);
    for (const line of [/0\s+approve/, /1\s+error/, /2\s+capture rejected/, /3\s+decline/, /4\s+review/]) expect(r.stdout).toMatch(line);
    expect((await run(['onboard', '--help'])).code).toBe(0);
  });
});
