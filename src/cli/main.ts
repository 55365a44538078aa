// `incode-broker onboard`: the server-side onboarding from a terminal, against Incode or the built-in emulator.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { config as loadDotenv } from 'dotenv';
import pino from 'pino';
import { ConfigError, isInMemoryDatabase, loadConfig, refuseCleartextIncode, type Config } from '../config';
import { buildEmulator } from '../emulator/app';
import { IncodeClient, incodeClientOptions } from '../incode/client';
import { ExecutiveTokenProvider } from '../incode/executive-token';
import { isValidCountryCode } from '../iso3166';
import { REDACT_PATHS, errSerializer } from '../logging';
import { IMAGE_TOO_LARGE_MESSAGE, MAX_IMAGE_BYTES, parseBase64Image } from '../onboarding/images';
import { OnboardingError, Orchestrator, type CapturesOutcome, type FinishResult, type StepEvent } from '../onboarding/orchestrator';
import { createMetrics } from '../plugins/metrics';
import { createResultsRuntime } from '../results/runtime';
import { summarizeOcr, summarizeScores, type ScoreLeaf } from '../results/summary';
import { sandboxEmulatorOptions } from '../sandbox';
import { MISLEADING_CHARACTERS } from '../schemas';
import { createStore, openStore, storeOptions } from '../store/index';
import type { Store } from '../store/types';

/** Exit codes, also listed by --help. */
export const EXIT = { APPROVE: 0, ERROR: 1, REJECTED: 2, DECLINE: 3, REVIEW: 4 } as const;

export interface CliIo {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  env: Record<string, string | undefined>;
  /** Aborted by the launcher on SIGINT or SIGTERM: the run stops and reports what it has (its interviewId above all). */
  signal?: AbortSignal;
}

const HELP = `Usage: incode-broker onboard --front <file> [--back <file>] --selfie <file> [options]

Runs the whole Incode onboarding server to server (start, front, back, process ID, selfie,
face match, wait for processing, mark complete when MARK_COMPLETE=true, scores and OCR) and
prints the verdict. Without INCODE_API_KEY it runs against the built-in Incode emulator.

Options:
  --front <file>                 Front of the ID (JPEG or PNG)                 required
  --back <file>                  Back of the ID (leave out for passports)
  --one-sided                    The document has one side only (a visa, a one-sided card): no back
  --selfie <file>                Selfie (JPEG or PNG)                          required
  --country <ISO3>               countryCode for start: ALL (default), BRA for Brazilian IDs, or another
                                 ISO 3166-1 alpha-3 code, in capitals (USA, MEX...)
  --configuration-id <id>        Incode flow (default INCODE_CONFIGURATION_ID)
  --external-customer-id <id>    Your user id (emulator: emu:... test values, e.g. emu:decline)
  --language <tag>               e.g. en-US, pt-BR
  --timeout <seconds>            Give up waiting for the results after this long (default 300)
  --show-ocr                     Also print the name and address read from the ID (personal data)
  --json                         Print one JSON document on stdout and nothing else
  --verbose                      The service's debug log lines on stderr
  -h, --help                     This help

Configuration comes from the environment and ./.env (see .env.example). Data is kept in
memory unless DATABASE_URL is set: against Incode, set it to the broker's database, so that a
session whose wait gives up (or whose process stops) is still followed up by the broker.

Exit codes:
  0  approve            the session passed
  1  error              bad usage, unreadable file, Incode failure or timeout, interrupted
                        (Ctrl-C or SIGTERM: the report says the session's interviewId; a second one
                        quits at once with 130, 143 for SIGTERM)
  2  capture rejected   a capture must be repeated (reason and message printed)
  3  decline            the session failed
  4  review             the session needs a manual review

Try it (emulator):
  npx incode-broker onboard --front samples/id-front.jpg --back samples/id-back.jpg --selfie samples/selfie.jpg
  npx incode-broker onboard --front samples/id-front-glare.jpg --back samples/id-back.jpg --selfie samples/selfie.jpg
  npx incode-broker onboard --front samples/id-front.jpg --back samples/id-back.jpg --selfie samples/selfie-dark.jpg
  npx incode-broker onboard --front samples/id-front.jpg --selfie samples/selfie.jpg --external-customer-id emu:one-sided
  npx incode-broker onboard ... --external-customer-id emu:selfie-error-4019   (or emu:spoof, emu:lenses, emu:decline, emu:warn)
`;

class UsageError extends Error {}

interface OnboardArgs {
  front: string;
  back?: string;
  selfie: string;
  country?: string;
  configurationId?: string;
  externalCustomerId?: string;
  language?: string;
  oneSided: boolean;
  timeoutMs: number;
  json: boolean;
  verbose: boolean;
  showOcr: boolean;
}

function parseOnboard(argv: string[]): OnboardArgs | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      front: { type: 'string' },
      back: { type: 'string' },
      selfie: { type: 'string' },
      country: { type: 'string' },
      'configuration-id': { type: 'string' },
      'external-customer-id': { type: 'string' },
      language: { type: 'string' },
      'one-sided': { type: 'boolean', default: false },
      timeout: { type: 'string' },
      json: { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
      'show-ocr': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return 'help';
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  if (!values.front) throw new UsageError('--front <file> is required');
  if (!values.selfie) throw new UsageError('--selfie <file> is required');
  const country = values.country?.toUpperCase();
  if (country && !isValidCountryCode(country)) throw new UsageError(`--country must be ALL or an ISO 3166-1 alpha-3 code (BRA for Brazil), got "${values.country}"`);
  if (values.language && !/^[a-z]{2}(-[A-Z]{2})?$/.test(values.language)) throw new UsageError('--language must look like en-US or pt-BR');
  let timeoutMs = 300_000;
  if (values.timeout !== undefined) {
    const t = Number(values.timeout);
    if (!Number.isFinite(t) || t < 1 || t > 86_400) throw new UsageError('--timeout must be a number of seconds between 1 and 86400');
    timeoutMs = Math.round(t * 1000);
  }
  // Nothing of a back would be sent: said now, rather than a step shown skipped that the user thought was sent.
  if (values.back && values['one-sided']) throw new UsageError('--back and --one-sided cannot be given together: a one-sided document has no back');
  return {
    front: values.front,
    back: values.back,
    selfie: values.selfie,
    country,
    configurationId: values['configuration-id'],
    externalCustomerId: values['external-customer-id'],
    language: values.language,
    oneSided: values['one-sided'] ?? false,
    timeoutMs,
    json: values.json ?? false,
    verbose: values.verbose ?? false,
    showOcr: values['show-ocr'] ?? false,
  };
}

async function readImage(path: string, option: string): Promise<string> {
  let buf: Buffer;
  let file: FileHandle | undefined;
  try {
    // Opened once, looked at, then read through that same handle and never past the limit: a video, a device such as
    // /dev/zero or a pipe would fill the memory or block, and a file growing (or a path swapped) after the look must
    // not get past it either.
    // Non-blocking: opening a named pipe would otherwise wait for a writer before it could be refused.
    file = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const st = await file.stat();
    if (!st.isFile()) throw new UsageError(`${option}: ${path} is not a regular file`);
    if (st.size > MAX_IMAGE_BYTES) throw new UsageError(`${option}: ${path} ${IMAGE_TOO_LARGE_MESSAGE}`);
    buf = Buffer.allocUnsafe(MAX_IMAGE_BYTES + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await file.read(buf, length, buf.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > MAX_IMAGE_BYTES) throw new UsageError(`${option}: ${path} ${IMAGE_TOO_LARGE_MESSAGE}`);
    }
    buf = buf.subarray(0, length);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`${option}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  } finally {
    await file?.close().catch(() => undefined);
  }
  if (buf.length === 0) throw new UsageError(`${option}: ${path} is empty`);
  // The route's rules: refused here, before a (billable) session is started for it.
  const image = parseBase64Image(buf.toString('base64'));
  if ('error' in image) throw new UsageError(`${option}: ${path} ${image.error}`);
  return image.base64;
}

// ---- output ----

type Outcome = 'approve' | 'decline' | 'review' | 'rejected' | 'error';

const EXIT_OF: Record<Outcome, number> = { approve: EXIT.APPROVE, decline: EXIT.DECLINE, review: EXIT.REVIEW, rejected: EXIT.REJECTED, error: EXIT.ERROR };

function progressPrinter(io: CliIo, enabled: boolean) {
  const color = !!io.stderr.isTTY && !io.env.NO_COLOR;
  const paint = (code: number, s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
  const mark = { ok: paint(32, '✓'), rejected: paint(31, '✗'), failed: paint(31, '✗'), skipped: paint(90, '–') } as const;
  return {
    step(e: StepEvent) {
      if (!enabled) return;
      const what =
        e.outcome === 'ok'
          ? // The session's id as soon as it exists: whatever happens next, the user can look it up.
            e.step === 'start' ? `${e.detail ?? ''} ${e.interviewId}`.trim() : (e.detail ?? '')
          : e.outcome === 'skipped'
            ? `skipped${e.code ? ` (${e.code})` : ''}`
            : `${e.outcome}: ${e.code ?? ''}${e.message && e.outcome === 'rejected' ? ` — ${e.message}` : ''}`;
      io.stderr.write(`${mark[e.outcome]} ${e.step.padEnd(11)} ${what}`.trimEnd() + '\n');
    },
    note(text: string) {
      if (enabled) io.stderr.write(`${paint(90, '…')} ${text}\n`);
    },
  };
}

// ---- the command ----

async function onboard(args: OnboardArgs, io: CliIo): Promise<number> {
  // A one-shot command, not the service: the service's production refusals (webhook secrets, a persistent
  // database) are about a long-running server. The one about the API key itself still applies.
  const env: Record<string, string | undefined> = { ...io.env, NODE_ENV: undefined };
  // Nothing outlives the process unless DATABASE_URL says otherwise, so a throwaway key is enough then.
  const inMemory = !env.DATABASE_URL?.trim() || isInMemoryDatabase(env.DATABASE_URL.trim());
  // The sandbox's sessions exist only in this process's emulator: written into a broker's database, the broker would
  // poll them at Incode, fail them and announce it. Said before anything else the database would need (its key).
  if (!inMemory && !env.INCODE_API_KEY?.trim())
    throw new UsageError('DATABASE_URL must not be set in sandbox mode (no INCODE_API_KEY): the emulator\'s sessions would be written into that database');
  if (inMemory) {
    env.DATABASE_URL = 'sqlite::memory:';
    // An empty one counts as none: the line `.env.example` leaves for it, copied to .env.
    if (!env.DATA_ENCRYPTION_KEY) env.DATA_ENCRYPTION_KEY = `cli:${randomBytes(32).toString('base64')}`;
  }
  let config: Config;
  try {
    const loaded = loadConfig(env);
    if (io.env.NODE_ENV === 'production' && !loaded.sandbox) refuseCleartextIncode(loaded.incode.apiUrl);
    // Someone is watching the terminal: poll at least every second whatever the server's setting.
    config = { ...loaded, results: { ...loaded.results, pollIntervalMs: Math.min(loaded.results.pollIntervalMs, 1000) } };
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(err.message);
    throw err;
  }
  const [front, back, selfie] = await Promise.all([
    readImage(args.front, '--front'),
    args.back ? readImage(args.back, '--back') : Promise.resolve(undefined),
    readImage(args.selfie, '--selfie'),
  ]);

  const progress = progressPrinter(io, !args.json || !!io.stderr.isTTY);
  // The app's redaction and error serializer: --verbose lines are read, pasted, kept in CI logs.
  const log = pino(
    { level: args.verbose ? 'debug' : 'silent', base: undefined, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, serializers: { err: errSerializer } },
    pino.destination({ fd: 2, sync: true }),
  );
  const cleanup: Array<() => Promise<unknown>> = [];
  const out = { sandbox: config.sandbox, interviewId: null as string | null, steps: [] as StepEvent[] };

  try {
    let apiUrl = config.incode.apiUrl;
    if (config.sandbox) {
      const emulator = buildEmulator(sandboxEmulatorOptions(config));
      await emulator.listen({ port: 0, host: '127.0.0.1' });
      cleanup.push(() => emulator.close());
      apiUrl = `http://127.0.0.1:${(emulator.server.address() as AddressInfo).port}`;
      progress.note('sandbox: no INCODE_API_KEY set, using the built-in Incode emulator');
    } else if (inMemory) {
      // Said even with --json (on stderr): this process will be the only record of a billed session.
      io.stderr.write('warning: no DATABASE_URL: this onboarding is recorded in this process only; if its wait gives up or the process stops, nothing follows it up (set DATABASE_URL to the broker\'s database)\n');
    }

    // The broker's own database, opened as the broker opens it: another key under an id it knows is refused.
    let store: Store;
    try {
      store = await openStore(() => createStore(storeOptions(config)), true, config.encryption.keys);
    } catch (err) {
      if (err instanceof ConfigError) throw new UsageError(err.message);
      throw err;
    }
    cleanup.push(() => store.close());
    const client = new IncodeClient(incodeClientOptions(config, apiUrl));
    cleanup.push(() => client.close());
    // One onboarding at a time: two job slots, and a worker that looks for work often (someone is waiting).
    // Only this onboarding's jobs: with a DATABASE_URL a broker shares, its jobs are the broker's to run, with its
    // settings (callbacks, executive credentials), not this process's.
    let ownSession: string | null = null;
    const { pipeline, worker } = createResultsRuntime(
      { store, incode: client, executiveTokens: ExecutiveTokenProvider.fromConfig(client, config), config, metrics: createMetrics(), log },
      { concurrency: 2, idleMs: 50, onlySubject: () => ownSession },
    );
    worker.start();
    // Runs first (cleanup is unwound last-in first-out): no job may touch the store after it closes.
    cleanup.push(() => worker.stop(2_000));

    const orchestrator = new Orchestrator({
      incode: client,
      store,
      pipeline,
      config,
      log,
      onStep: (e) => {
        ownSession ??= e.interviewId;
        out.steps.push(e);
        progress.step(e);
        if (e.step === 'face-match' && e.outcome !== 'failed') progress.note('waiting for Incode to finish processing');
      },
    });

    let captures: CapturesOutcome;
    let result: FinishResult | null = null;
    try {
      captures = await orchestrator.runCaptures({
        signal: io.signal,
        front,
        back,
        selfie,
        countryCode: args.country,
        configurationId: args.configurationId,
        externalCustomerId: args.externalCustomerId,
        language: args.language,
        oneSided: args.oneSided,
      });
      out.interviewId = captures.interviewId;
      if (captures.ok) {
        const { interviewId } = captures;
        // A wait that gave up leaves the session to a broker sharing DATABASE_URL, as the service's own route does: this
        // process's worker stops first, so what is queued for that broker stays queued. An in-memory store ends here.
        result = await orchestrator.finish(interviewId, { timeoutMs: args.timeoutMs, signal: io.signal }).catch(async (err: unknown) => {
          if (!inMemory) {
            await worker.stop(2_000);
            await orchestrator.handOff(interviewId);
          }
          throw err;
        });
      }
    } catch (err) {
      if (!(err instanceof OnboardingError)) throw err;
      return report(io, args, 'error', {
        ...out,
        interviewId: err.interviewId ?? out.interviewId,
        error: { step: err.step, code: err.code, message: err.message, ...(err.incode?.incodeStatus !== undefined ? { incodeStatus: err.incode.incodeStatus } : {}) },
      });
    }

    if (!captures.ok) {
      const { step, reason, message, incodeCode } = captures;
      return report(io, args, 'rejected', { ...out, rejection: { step, reason, message, ...(incodeCode !== undefined ? { incodeCode } : {}) } });
    }
    const r = result!;
    const decision = r.decision ?? 'review';
    return report(io, args, decision, {
      ...out,
      onboardingStatus: r.onboardingStatus,
      decision: r.decision,
      oneSided: captures.oneSided,
      faceMatch: { matched: captures.faceMatch.ok, existingUser: captures.faceMatch.existingUser },
      scores: summarizeScores(r.scores),
      ocr: ocrView(summarizeOcr(r.ocr), args.showOcr),
    });
  } finally {
    for (const fn of cleanup.reverse()) await fn().catch(() => undefined);
  }
}

/** The type of ID always; the name and address (personal data) only when asked for, so logs of a run do not keep them. */
function ocrView(ocr: ReturnType<typeof summarizeOcr>, show: boolean): Partial<ReturnType<typeof summarizeOcr>> {
  return show ? ocr : { typeOfId: ocr.typeOfId };
}

interface Report {
  sandbox: boolean;
  interviewId: string | null;
  steps: StepEvent[];
  onboardingStatus?: string;
  decision?: string | null;
  oneSided?: boolean;
  faceMatch?: { matched: boolean; existingUser: boolean };
  scores?: ReturnType<typeof summarizeScores>;
  ocr?: Partial<ReturnType<typeof summarizeOcr>>;
  rejection?: { step: string; reason: string; message: string; incodeCode?: number };
  error?: { step: string; code: string; message: string; incodeStatus?: number };
}

function report(io: CliIo, args: OnboardArgs, outcome: Outcome, r: Report): number {
  const exitCode = EXIT_OF[outcome];
  if (args.json) {
    const steps = r.steps.map((s) => ({ step: s.step, outcome: s.outcome, code: s.code ?? null, message: s.message ?? null, at: new Date(s.at).toISOString() }));
    io.stdout.write(JSON.stringify({ outcome, exitCode, ...r, steps }, null, 2) + '\n');
    return exitCode;
  }
  const lines: string[] = [];
  const leaf = (l: ScoreLeaf | null | undefined) => (l ? `${shown(l.status ?? 'UNKNOWN')}${l.value ? ` (${shown(l.value)})` : ''}` : 'n/a');
  if (outcome === 'rejected' && r.rejection) {
    lines.push(`Capture rejected at step ${r.rejection.step}: ${r.rejection.reason}`, `Message to show: ${r.rejection.message}`);
  } else if (outcome === 'error' && r.error) {
    lines.push(`Error at step ${r.error.step}: ${r.error.code}`, r.error.message);
  } else {
    lines.push(`Verdict: ${outcome.toUpperCase()}`);
    if (r.scores) {
      lines.push(`Overall score: ${leaf(r.scores.overall)}`);
      lines.push(`ID validation: ${leaf(r.scores.idValidation)}   Liveness: ${leaf(r.scores.liveness)}   Face recognition: ${leaf(r.scores.faceRecognition)}`);
    }
    if (r.faceMatch) lines.push(`Face match: ${r.faceMatch.matched ? 'match' : 'NO MATCH'}${r.faceMatch.existingUser ? ' (person already registered)' : ''}`);
    if (r.ocr) {
      // ocrView left the name and address in only when --show-ocr asked for them.
      if ('fullName' in r.ocr) lines.push(`Name: ${shown(r.ocr.fullName ?? 'n/a')}`, `Address: ${shown(r.ocr.address ?? 'n/a')}`);
      lines.push(`Type of ID: ${shown(r.ocr.typeOfId ?? 'n/a')}`);
    }
  }
  if (r.interviewId) lines.push(`Interview ID: ${r.interviewId}${r.sandbox ? ' (emulator)' : ''}`);
  (outcome === 'error' ? io.stderr : io.stdout).write(lines.join('\n') + '\n');
  return exitCode;
}

/**
 * The characters a customer id may not hold (schemas.ts), wherever they are in a text, and the zero-width joiner and
 * non-joiner too: a terminal line is no place to tell a name's own joiner from one slipped between two words.
 */
const MISLEADING = new RegExp(`[${MISLEADING_CHARACTERS}\\u200c\\u200d]`, 'gu');

/**
 * Text read off a document, as a terminal may show it: control characters (escape sequences that could rewrite the
 * screen), bidirectional overrides (that could reorder what is read) and characters that display as nothing become
 * U+FFFD.
 */
export function shown(s: string): string {
  return s.replace(MISLEADING, '\ufffd');
}

/** Entry point: returns the exit code (the launcher exits with it). */
export async function main(argv: string[], io: CliIo = { stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  const [command, ...rest] = argv;
  const json = rest.includes('--json');
  const usage = (message: string) => {
    if (json) io.stdout.write(JSON.stringify({ outcome: 'error', exitCode: EXIT.ERROR, error: { step: 'usage', code: 'USAGE', message } }, null, 2) + '\n');
    else io.stderr.write(`incode-broker: ${message}\nRun "incode-broker --help" for usage.\n`);
    return EXIT.ERROR;
  };
  if (!command) {
    io.stderr.write(HELP);
    return EXIT.ERROR;
  }
  if (command === '--help' || command === '-h' || command === 'help') {
    io.stdout.write(HELP);
    return EXIT.APPROVE;
  }
  if (command !== 'onboard') return usage(`unknown command "${command}"`);
  // ./.env fills what the environment leaves unset (never overrides it), read into a copy rather than process.env.
  const dotenv = loadDotenv({ quiet: true, processEnv: {} as Record<string, string> });
  const env = { ...(dotenv.parsed ?? {}), ...io.env };
  try {
    const args = parseOnboard(rest);
    if (args === 'help') {
      io.stdout.write(HELP);
      return EXIT.APPROVE;
    }
    return await onboard(args, { ...io, env });
  } catch (err) {
    if (err instanceof UsageError) return usage(err.message);
    if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) return usage((err as Error).message);
    const message = err instanceof Error ? err.message : String(err);
    if (json) io.stdout.write(JSON.stringify({ outcome: 'error', exitCode: EXIT.ERROR, error: { step: 'internal', code: 'INTERNAL_ERROR', message } }, null, 2) + '\n');
    else io.stderr.write(`incode-broker: ${message}\n`);
    return EXIT.ERROR;
  }
}
