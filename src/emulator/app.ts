// The Incode emulator as an encapsulated Fastify plugin (+ a standalone app): routes, auth, CORS, faults, error envelope.
import { randomBytes, createHash, timingSafeEqual } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import Fastify from 'fastify';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import { alpha2Of, normalizeCountry } from './countries';
import type { FaultOptions } from './faults';
import { Faults, faultSettingsError } from './faults';
import type { ImageMetrics } from './image-analysis';
import { analyzeImage, base64ToBuffer, decodeImage, ImageDecodeError, THRESHOLDS } from './image-analysis';
import { buildOcr, documentKind, issueYearFor, seedOf } from './ocr';
import * as samples from './sample-images';
import { buildScore, existingExternalIdFor, existingInterviewIdFor } from './scores';
import type { CustomFields, OnboardingStatus, Session } from './state';
import { ONBOARDING_STATUSES, SessionStore } from './state';
import { parseDirectives, selfieErrorText } from './test-values';
import { TimerSet } from './timer-set';
import { TokenService } from './tokens';
import type { WebhookOptions } from './webhook-sender';
import { WebhookSender } from './webhook-sender';

export interface EmulatorOptions {
  /** Accepted x-api-key. */
  apiKey: string;
  /** Returned by start as clientId. */
  clientId: string;
  /** Accepted by POST /executive/log-in (no executive login when unset). */
  executiveEmail?: string;
  executivePassword?: string;
  /** Mount prefix, e.g. '/sandbox/incode' ('' standalone). */
  prefix?: string;
  /** Delay of the async ID/face processing steps (default 1500); 0 = next tick. */
  processingDelayMs?: number;
  /**
   * Megapixels decoded per second over all uploads, with a burst: past it an upload gets Incode's 429 (it throttles its
   * document and face endpoints) with Retry-After, before anything is decoded. Decoding runs on the process's event loop,
   * the broker's own in sandbox mode, where a client could otherwise keep it busy (a 12 MP photo costs 1-2 s of CPU).
   * Unlimited by default (the tests' and benchmark's emulators). `large`: images over `overMegapixels` also take from a
   * burst of their own, so that a few large photos are not decoded back to back (each holds the loop for seconds),
   * while many small captures still pass together.
   */
  decodeBudget?: { megapixelsPerSecond: number; burstMegapixels: number; large?: { overMegapixels: number; burstMegapixels: number } };
  /** Session token lifetime (default 90 days). */
  tokenTtlSeconds?: number;
  /** HS256 secret for tokens (random by default). */
  jwtSecret?: string;
  webhook?: WebhookOptions;
  faults?: FaultOptions;
  /** CORS origins for the browser surface (default '*'). */
  corsOrigins?: string[] | '*';
  logger?: boolean | object;
}

/** Runtime handle on the emulator's state (tests, admin routes, the broker's sandbox mode). */
export interface EmulatorController {
  readonly sessions: SessionStore;
  readonly faults: Faults;
  readonly tokens: TokenService;
  readonly webhooks?: WebhookSender;
  setFaults(f: FaultOptions): void;
  resetFaults(): void;
  /** Forces a status (forward-only rules apply); false if the session is unknown or the move is not allowed. */
  setStatus(interviewId: string, status: OnboardingStatus): boolean;
  expire(interviewId: string): boolean;
  /** Mints a session token for an existing session (e.g. an already expired one, for tests). */
  mintSessionToken(interviewId: string, ttlSeconds?: number): string;
  close(): void;
}

const MB = 1024 * 1024;
const INCODE_BODY_LIMIT = 10 * MB;
// Fastify's own limit sits above Incode's so the 10 MB rule answers with Incode's envelope, not a parser error.
const PARSER_BODY_LIMIT = 15 * MB;
const HOLD_MS = 60_000;
const NINETY_DAYS = 90 * 24 * 3600;
const MAX_CUSTOM_FIELDS = 100;
const MAX_CUSTOM_FIELDS_CHARS = 64 * 1024;

/**
 * Why custom fields are refused, or null: Incode's are flat key/value metadata "with max entries/lengths enforced"
 * (incode-api.md 4.1), so nested values are refused too (they are what a deep body would blow the stack with, or what
 * a few bytes of JSON would hold thousands of objects in memory with).
 */
function customFieldsProblem(fields: Record<string, unknown>): string | null {
  const keys = Object.keys(fields);
  if (keys.length > MAX_CUSTOM_FIELDS) return `customFields may hold at most ${MAX_CUSTOM_FIELDS} fields`;
  for (const k of keys) {
    const v = fields[k];
    if (v !== null && typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') return `customFields.${k.slice(0, 64)} must be a string, number, boolean or null`;
  }
  if (JSON.stringify(fields).length > MAX_CUSTOM_FIELDS_CHARS) return `customFields may hold at most ${MAX_CUSTOM_FIELDS_CHARS} characters of JSON`;
  return null;
}

/** An upload past the decode budget, before it was decoded: answered 429 after `waitMs`. */
class DecodeThrottled extends Error {
  constructor(readonly waitMs: number) {
    super('decode budget spent');
  }
}

/** Own enumerable fields but the names that would reach Object.prototype. */
function plainFields(from: object, into: Record<string, unknown> = {}): Record<string, unknown> {
  for (const [k, v] of Object.entries(from)) if (k !== '__proto__' && k !== 'constructor' && k !== 'prototype') into[k] = v;
  return into;
}

const CORS_ALLOW_HEADERS = 'api-version, x-api-key, x-incode-hardware-id, content-type, accept, sessionid, authorization';
const CORS_ALLOW_METHODS = 'GET, POST, PUT, DELETE, OPTIONS';

const REASON: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  409: 'Conflict',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/**
 * key: the API key alone; session: a session or an executive token (Incode's "token/exec" reads); access: a session
 * token only (captures, processing, finish-status); exec: an executive token only (deleting a session); admin: the
 * emulator's own control routes; none: no credentials.
 */
type Auth = 'key' | 'session' | 'access' | 'exec' | 'none' | 'admin';
interface RouteCfg {
  auth: Auth;
  zero: boolean;
  /** The query parameter naming the session (with an executive token) when not `id`: DELETE /omni/interview's and approve's. */
  idParam?: 'interviewId';
}
type EmuRequest = FastifyRequest & { emuSession: Session | null; emuFailWith: number };
type Handler = (req: EmuRequest, reply: FastifyReply) => unknown;

// The capture timeouts (s) and retries a flow hands the SDK: in start's answer and in onboarding-modules.
const CAPTURE_SETTINGS = { idCaptureTimeout: 15, idCaptureRetries: 3, selfieCaptureTimeout: 10, selfieCaptureRetries: 3 } as const;

// Secrets are compared as digests in constant time: in sandbox mode the emulator's API key guards its admin routes,
// and its executive password the executive login, on whatever host the broker binds.
const digestOf = (secret: string) => createHash('sha256').update(secret).digest();
const matcherOf = (expected: string) => {
  const want = digestOf(expected);
  return (sent: unknown) => typeof sent === 'string' && timingSafeEqual(digestOf(sent), want);
};

/** Builds the emulator's state without any HTTP; emulatorPlugin wires it to routes. */
function createEmulator(opts: EmulatorOptions): EmulatorController {
  const timers = new TimerSet();
  const faults = new Faults(opts.faults);
  const keyRef = createHash('sha256').update(opts.apiKey).digest('hex').slice(0, 24);
  const tokens = new TokenService(opts.jwtSecret ?? randomBytes(32).toString('hex'), keyRef);
  const sessions = new SessionStore({ processingDelayMs: opts.processingDelayMs ?? 1500, timers });
  const webhooks = opts.webhook?.url ? new WebhookSender(opts.webhook, faults, timers, (id) => sessions.sessions.has(id)) : undefined;
  if (webhooks)
    sessions.watchStatus((s, status) => {
      if (!sessions.sessions.has(s.interviewId)) return;
      const externalId = s.externalCustomerId ?? s.externalId;
      webhooks.send({
        interviewId: s.interviewId,
        ...(externalId ? { externalId } : {}),
        onboardingStatus: status,
        clientId: opts.clientId,
        ...(s.configurationId ? { flowId: s.configurationId } : {}),
      });
    });
  return {
    sessions,
    faults,
    tokens,
    webhooks,
    setFaults: (f) => faults.set(f),
    resetFaults: () => faults.reset(),
    setStatus: (id, status) => {
      const s = sessions.get(id);
      return !!s && sessions.setStatus(s, status);
    },
    expire: (id) => {
      const s = sessions.get(id);
      return !!s && sessions.setStatus(s, 'EXPIRED');
    },
    mintSessionToken: (id, ttl) => tokens.mint(id, 'ACCESS', ttl ?? opts.tokenTtlSeconds ?? NINETY_DAYS),
    close: () => {
      timers.clear();
      webhooks?.close();
    },
  };
}

export type EmulatorPlugin = FastifyPluginAsync & { emulator: EmulatorController };

/**
 * The emulator's routes as an encapsulated plugin (no skip-override: its parsers, CORS and hooks stay
 * inside). It mounts itself under opts.prefix; register it without a prefix of your own.
 */
export function emulatorPlugin(opts: EmulatorOptions): EmulatorPlugin {
  const emulator = createEmulator(opts);
  const plugin: FastifyPluginAsync = async (outer) => {
    await outer.register(async (app) => routes(app, opts, emulator), { prefix: normalizePrefix(opts.prefix) });
  };
  return Object.assign(plugin, { emulator });
}

/** The standalone app: a Fastify instance with the controller decorated as `emulator`. */
export type EmulatorApp = FastifyInstance & { emulator: EmulatorController };

/** A self-contained emulator app (the standalone runner and the tests use it). */
export function buildEmulator(opts: EmulatorOptions): EmulatorApp {
  const app = Fastify({ logger: opts.logger ?? false, bodyLimit: PARSER_BODY_LIMIT, forceCloseConnections: true });
  const plugin = emulatorPlugin(opts);
  app.decorate('emulator', plugin.emulator);
  void app.register(plugin);
  return app as unknown as EmulatorApp;
}

/**
 * The Web SDK camera marks a selfie as `encrypted: true` by splicing a 64-character HMAC into the base64
 * (character i of the tag at index i + 64 * (i + 1)); Incode removes it before decoding, and so do we.
 */
function untagSdkSelfie(b64: string): string {
  if (b64.length < 64 * 65) return b64;
  // The tag's characters sit in the first 4,160; the text between them is copied once, never the whole string per tag
  // character.
  let out = '';
  let next = 0;
  for (let i = 0; i < 64; i++) {
    const at = i + 64 * (i + 1);
    out += b64.slice(next, at);
    next = at + 1;
  }
  return out + b64.slice(next);
}

function normalizePrefix(p: string | undefined): string {
  if (!p || p === '/') return '';
  return ('/' + p.replace(/^\/+|\/+$/g, '')).replace(/\/+/g, '/');
}

/**
 * A token bucket of megapixels, refilled continuously on a monotonic clock (a wall clock stepped back would refill by a
 * negative amount and refuse every upload meanwhile). One larger than the whole burst waits for a full bucket.
 */
function megapixelBucket(perSecond: number, burst: number) {
  let level = burst;
  let at = performance.now();
  const refill = (now: number) => {
    level = Math.min(burst, level + ((now - at) / 1000) * perSecond);
    at = now;
  };
  return {
    /** ms until `megapixels` are there (0: now). */
    wait(megapixels: number, now: number): number {
      refill(now);
      const need = Math.min(megapixels, burst);
      return level >= need ? 0 : Math.ceil(((need - level) / perSecond) * 1000);
    },
    take(megapixels: number): void {
      level -= Math.min(megapixels, burst);
    },
  };
}

function routes(app: FastifyInstance, opts: EmulatorOptions, emu: EmulatorController): void {
  const prefix = normalizePrefix(opts.prefix);
  const { sessions, faults, tokens } = emu;
  const ttl = opts.tokenTtlSeconds ?? NINETY_DAYS;
  const cors = opts.corsOrigins ?? '*';
  const corsSet = cors === '*' ? null : new Set(cors);
  const held = new Set<ServerResponse>();
  // Every registered path (':param' segments match any one segment) with its methods, for 405 and Allow.
  // Keyed by the pattern's source as written (RegExp#source escapes '/', so it cannot be the key).
  const knownPaths = new Map<string, { pattern: RegExp; methods: Set<string> }>();
  const remember = (url: string, methods: string[]) => {
    const source = `^${url.split('/').map((seg) => (seg.startsWith(':') ? '[^/]+' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/')}$`;
    let known = knownPaths.get(source);
    if (!known) knownPaths.set(source, (known = { pattern: new RegExp(source), methods: new Set() }));
    for (const m of methods) known.methods.add(m);
  };

  const keyMatches = matcherOf(opts.apiKey);
  const executive = opts.executiveEmail && opts.executivePassword ? { email: matcherOf(opts.executiveEmail), password: matcherOf(opts.executivePassword) } : null;
  const pathOf = (req: FastifyRequest): string => {
    const q = req.url.indexOf('?');
    const p = q >= 0 ? req.url.slice(0, q) : req.url;
    return prefix && p.startsWith(prefix) ? p.slice(prefix.length) || '/' : p;
  };

  /** Incode's error envelope; `status` is the Incode code, the HTTP status the transport code. */
  const fail = (reply: FastifyReply, http: number, message: string, code: number = http, error?: string): FastifyReply =>
    reply
      .code(http)
      .header('content-type', 'application/json; charset=utf-8')
      .send({ timestamp: Date.now(), status: code, error: error ?? REASON[http] ?? 'Error', message, path: pathOf(reply.request) });

  app.decorateRequest('emuSession', null);
  // Fastify only times replies when a logger or onResponse hook exists; Processing-Time needs our own clock.
  // The error fault's status when it replaces the answer after the handler ran (errorAfterHandler), else 0.
  app.decorateRequest('emuFailWith', 0);

  // Fault/latency sleeps live in their own set so closing the app releases them at once.
  const emuTimers = new TimerSet();
  const emuSleep = (ms: number): Promise<void> => emuTimers.sleep(ms);
  app.addHook('onClose', async () => emuTimers.clear());

  // Own JSON parser: lenient on an empty body (FP-style clients POST with no body) and no prototype-poisoning
  // scan on the hot path; nothing here merges request objects into prototypes.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: PARSER_BODY_LIMIT }, (_req, body, done) => {
    const text = (body as string).trim();
    if (!text) return done(null, {});
    try {
      done(null, JSON.parse(text));
    } catch {
      const err = new Error('Malformed JSON body') as Error & { statusCode: number };
      err.statusCode = 400;
      done(err, undefined);
    }
  });
  // The SDK's legacy uploads send raw JPEG bytes; anything else binary is kept as a Buffer too.
  app.addContentTypeParser(['image/jpeg', 'image/png', 'application/octet-stream'], { parseAs: 'buffer', bodyLimit: PARSER_BODY_LIMIT }, (_req, body, done) =>
    done(null, body),
  );
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: PARSER_BODY_LIMIT }, (_req, body, done) => done(null, body));

  /** The Access-Control-Allow-Origin for a request's Origin: `*` unless corsOrigins lists some, then the origin if listed. */
  const allowedOrigin = (origin: string | undefined): string | null => (!origin ? null : !corsSet ? '*' : corsSet.has(origin) ? origin : null);

  app.addHook('onRequest', async (req, reply) => {
    if (req.method === 'OPTIONS') return;
    const cfg = req.routeOptions.config as Partial<RouteCfg> | undefined;
    const auth = cfg?.auth;
    const len = req.headers['content-length'];
    if (len && Number(len) > INCODE_BODY_LIMIT) return fail(reply, 413, 'Request body exceeds the 10 MB limit');
    if (auth === 'admin') {
      if (!keyMatches(req.headers['x-api-key'])) return fail(reply, 403, 'Invalid or missing API key');
      return;
    }
    if (faults.requestFaultsActive && faults.appliesTo(req.url.split('?', 1)[0])) {
      if (faults.shouldTimeout()) {
        hold(reply);
        return reply;
      }
      if (faults.latencyMs) await emuSleep(faults.latencyMs);
      if (faults.shouldError()) {
        const status = faults.errorStatus();
        if (!faults.errorAfterHandler) return fail(reply, status, 'Service temporarily unavailable (emulated fault)');
        (req as EmuRequest).emuFailWith = status;
      }
    }
    if (!auth) return; // 404/405 handler
    // Every request of Incode's clients carries it (incode-api.md 2.2, the Web SDK's axios defaults): a client that stops
    // sending it is told here rather than by Incode in production.
    const v = req.headers['api-version'];
    if (v === undefined) return fail(reply, 400, 'The api-version header is required (api-version: 1.0)');
    if (v !== '1.0') return fail(reply, 400, `Unsupported api-version '${String(v)}'`);
    // /0/ is the token-only surface: the key is ignored there (start, which only the key can authenticate, has no /0/ route).
    if (!cfg.zero && !keyMatches(req.headers['x-api-key'])) return fail(reply, 403, 'Invalid or missing API key');
    if (auth !== 'session' && auth !== 'access' && auth !== 'exec') return;
    const claims = tokens.verify(req.headers['x-incode-hardware-id'] as string | undefined);
    if (!claims) return fail(reply, 401, 'Invalid or missing access token');
    const q = req.query as Record<string, string | undefined>;
    // The session a request names, under the name Incode's clients use for that endpoint: `id` (the samples; the Web SDK
    // sends getOnboardingStatus's with no name at all, `?=<id>`), and `interviewId` for DELETE /omni/interview alone.
    // Not any of them anywhere: a client sending the wrong one would pass here and fail against Incode.
    const named = (cfg.idParam === 'interviewId' ? q.interviewId : q.id || q['']) || undefined;
    if (claims.role === 'ACCESS') {
      if (auth === 'exec') return fail(reply, 401, 'This endpoint takes an executive token');
      const s = sessions.get(claims.externalUserId);
      if (!s) return fail(reply, 401, 'Session of this token does not exist');
      if (named && named !== s.interviewId) return fail(reply, 401, 'Token does not grant access to this session');
      (req as EmuRequest).emuSession = s;
      return;
    }
    if (claims.role === 'EXECUTIVE') {
      if (cfg.zero) return fail(reply, 401, 'Executive tokens are not accepted on /0/ endpoints');
      if (auth === 'access') return fail(reply, 401, 'This endpoint takes a session token, not an executive token');
      if (!named) return fail(reply, 400, `Query parameter ${cfg.idParam === 'interviewId' ? 'interviewId' : 'id'} is required with an executive token`);
      const s = sessions.get(named);
      if (!s) return fail(reply, 404, `Session ${named} not found`);
      (req as EmuRequest).emuSession = s;
      return;
    }
    return fail(reply, 401, 'Token is not a session token');
  });

  // On every answer, from whatever refused it: in the sandbox the service's own checks (a duplicated header, load
  // shedding) may answer before this app's hooks run, and a browser would read an answer without CORS as a network
  // error (the SDK then fails on a missing `data`). Processing time from the moment the server took the request.
  app.addHook('onSend', async (req, reply, payload) => {
    const allowed = allowedOrigin(req.headers.origin);
    if (allowed) {
      reply.header('access-control-allow-origin', allowed);
      if (allowed !== '*') reply.header('vary', 'Origin');
    }
    if (req.headers.origin) reply.header('access-control-expose-headers', 'Processing-Time, Retry-After');
    reply.header('processing-time', String(Math.round(reply.elapsedTime)));
    const status = (req as EmuRequest).emuFailWith;
    if (!status) return payload;
    // The call was carried out; its answer is lost on the way back.
    (req as EmuRequest).emuFailWith = 0;
    reply.code(status).header('content-type', 'application/json; charset=utf-8');
    return JSON.stringify({ timestamp: Date.now(), status, error: REASON[status] ?? 'Error', message: 'Answer lost on its way back (emulated fault)', path: pathOf(req) });
  });

  app.addHook('preClose', async () => {
    for (const res of held) res.destroy();
    held.clear();
  });
  app.addHook('onClose', async () => {
    emu.close();
  });

  /** Timeout fault: keep the request open without answering until the client gives up (or 60 s). */
  function hold(reply: FastifyReply): void {
    reply.hijack();
    const res = reply.raw;
    held.add(res);
    const t = setTimeout(() => res.destroy(), HOLD_MS);
    t.unref();
    res.once('close', () => {
      clearTimeout(t);
      held.delete(res);
    });
  }

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
    const http = err.statusCode && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
    const message = http === 413 ? 'Request body exceeds the 10 MB limit' : http === 500 ? 'Unexpected error' : err.message;
    return fail(reply, http, message);
  });

  app.setNotFoundHandler((req, reply) => {
    const p = pathOf(req).replace(/\/+$/, '') || '/';
    const methods = new Set([...knownPaths.values()].filter((k) => k.pattern.test(p)).flatMap((k) => [...k.methods]));
    if (methods.size) return fail(reply.header('allow', [...methods].join(', ')), 405, `Request method '${req.method}' is not supported`);
    return fail(reply, 404, `No endpoint ${req.method} ${p}`);
  });

  // Preflights for every path of the surface; the onSend hook adds the origin header.
  const preflight = (req: FastifyRequest, reply: FastifyReply) => {
    if (allowedOrigin(req.headers.origin)) {
      reply.header('access-control-allow-methods', CORS_ALLOW_METHODS).header('access-control-allow-headers', CORS_ALLOW_HEADERS).header('access-control-max-age', '600');
    }
    return reply.code(204).send();
  };
  app.options('/', preflight);
  app.options('/*', preflight);

  const base: Partial<RouteOptions> = { bodyLimit: PARSER_BODY_LIMIT };
  /** Registers a route on /omni/... (API key) and, unless `surfaces` leaves it out, on /0/omni/... (token only). */
  function route(
    methods: string | string[],
    path: string,
    auth: Auth,
    handler: Handler,
    extra: Partial<RouteOptions> = {},
    surfaces: Array<'key' | 'zero'> = ['key', 'zero'],
    idParam?: RouteCfg['idParam'],
  ): void {
    const list = Array.isArray(methods) ? methods : [methods];
    for (const surface of surfaces) {
      const url = surface === 'zero' ? `/0${path}` : path;
      remember(url, list);
      app.route({
        ...base,
        ...extra,
        method: list as RouteOptions['method'],
        url,
        config: { auth, zero: surface === 'zero', idParam } satisfies RouteCfg as Record<string, unknown>,
        handler: handler as RouteOptions['handler'],
      });
    }
  }
  const sess = (req: EmuRequest): Session => req.emuSession as Session;

  // ---- start & executive -------------------------------------------------------------------------------

  const startSchema = {
    200: {
      type: 'object',
      properties: {
        token: { type: 'string' },
        interviewId: { type: 'string' },
        interviewCode: { type: 'string' },
        flowType: { type: 'string' },
        idCaptureTimeout: { type: 'integer' },
        idCaptureRetries: { type: 'integer' },
        selfieCaptureTimeout: { type: 'integer' },
        selfieCaptureRetries: { type: 'integer' },
        curpValidationRetries: { type: 'integer' },
        clientId: { type: 'string' },
        env: { type: 'string' },
        existingSession: { type: 'boolean' },
      },
    },
  };
  // flowType is only part of the answer when the request named a flow (configurationId), as Incode documents.
  const startAnswer = (s: Session, existing: boolean, flowRequested: boolean) => ({
    token: tokens.mint(s.interviewId, 'ACCESS', ttl),
    interviewId: s.interviewId,
    interviewCode: s.interviewCode,
    ...(flowRequested ? { flowType: 'flow' } : {}),
    ...CAPTURE_SETTINGS,
    curpValidationRetries: 3,
    clientId: opts.clientId,
    env: 'demo',
    existingSession: existing,
  });
  const optString = (b: Record<string, unknown>, k: string): string | undefined | null => {
    const v = b[k];
    if (v === undefined || v === null || v === '') return undefined;
    return typeof v === 'string' ? v : null;
  };

  route(
    'POST',
    '/omni/start',
    'key',
    async (req, reply) => {
      if (faults.startLatencyMs) await emuSleep(faults.startLatencyMs);
      const b = (req.body ?? {}) as Record<string, unknown>;
      if (typeof b !== 'object' || Array.isArray(b) || Buffer.isBuffer(b)) return fail(reply, 400, 'Body must be a JSON object');
      const countryCode = normalizeCountry(b.countryCode);
      if (!countryCode) return fail(reply, 400, `Invalid countryCode '${String(b.countryCode)}': use ALL or an ISO 3166 alpha-2/alpha-3 code`);
      const fields: Record<string, string | undefined> = {};
      for (const k of ['configurationId', 'externalCustomerId', 'externalId', 'language', 'redirectionUrl', 'interviewId', 'uuid']) {
        const v = optString(b, k);
        if (v === null) return fail(reply, 400, `${k} must be a string`);
        fields[k] = v;
      }
      if (b.customFields !== undefined && b.customFields !== null && (typeof b.customFields !== 'object' || Array.isArray(b.customFields))) {
        return fail(reply, 400, 'customFields must be an object');
      }
      const customFields = b.customFields ? plainFields(b.customFields) : undefined;
      const cfProblem = customFields && customFieldsProblem(customFields);
      if (cfProblem) return fail(reply, 400, cfProblem);
      if (fields.interviewId) {
        const s = sessions.get(fields.interviewId);
        if (!s) return fail(reply, 404, `Session ${fields.interviewId} not found`);
        return startAnswer(s, true, !!fields.configurationId);
      }
      const byUuid = sessions.getByUuid(fields.uuid);
      if (byUuid) return startAnswer(byUuid, true, !!fields.configurationId);
      const { directives, unknown } = parseDirectives(fields.externalCustomerId, fields.externalId);
      if (unknown.length) return fail(reply, 400, `Unknown emulator test value(s): ${unknown.join(', ')}`);
      const s = sessions.create({
        countryCode,
        configurationId: fields.configurationId,
        externalCustomerId: fields.externalCustomerId,
        externalId: fields.externalId,
        language: fields.language,
        redirectionUrl: fields.redirectionUrl,
        uuid: fields.uuid,
        customFields: customFields as CustomFields | undefined,
        directives: fields.externalCustomerId?.includes('emu:') || fields.externalId?.includes('emu:') ? directives : undefined,
      });
      return startAnswer(s, false, !!fields.configurationId);
    },
    { schema: { response: startSchema } },
    // Start has no token-only variant (incode-api.md 3 and 7.15): only the API key can authenticate it.
    ['key'],
  );

  route(
    'POST',
    '/executive/log-in',
    'key',
    async (req, reply) => {
      const b = (req.body ?? {}) as Record<string, unknown>;
      if (!executive) return fail(reply, 401, 'Executive login is not configured');
      if (!executive.email(b.email) || !executive.password(b.password)) return fail(reply, 401, 'Invalid email or password');
      const execId = createHash('sha256').update(String(b.email)).digest('hex').slice(0, 24);
      return { token: tokens.mint(execId, 'EXECUTIVE', 24 * 3600) };
    },
    {},
    ['key'],
  );

  // ---- ID capture -------------------------------------------------------------------------------------

  /** The uploaded image bytes: JSON {base64Image} (bare base64, no data: URL) or a raw JPEG/PNG body. */
  function imageBytes(req: EmuRequest): Buffer | string {
    const body = req.body as unknown;
    if (Buffer.isBuffer(body)) return body.length ? body : 'Image body is empty';
    if (body && typeof body === 'object') {
      let b64 = (body as Record<string, unknown>).base64Image as string | undefined;
      if (typeof b64 !== 'string' || !b64) return 'base64Image is required';
      if (b64.length > INCODE_BODY_LIMIT * 1.4) return 'Image exceeds the 10 MB limit';
      if ((body as Record<string, unknown>).encrypted === true) b64 = untagSdkSelfie(b64);
      return base64ToBuffer(b64) ?? 'base64Image is not valid base64';
    }
    return 'base64Image is required';
  }

  // The decode budget's buckets, in megapixels: full at start, refilled continuously.
  const budget = opts.decodeBudget;
  const all = budget ? megapixelBucket(budget.megapixelsPerSecond, budget.burstMegapixels) : null;
  const large = budget?.large ? megapixelBucket(budget.megapixelsPerSecond, budget.large.burstMegapixels) : null;
  const largeOver = budget?.large?.overMegapixels ?? Infinity;
  /** Takes an upload's megapixels from the budget; the ms to wait when they are not there (nothing is taken then). */
  const takeDecode = (megapixels: number): number => {
    if (!all) return 0;
    const now = performance.now();
    const alsoLarge = megapixels > largeOver ? large : null;
    const wait = Math.max(all.wait(megapixels, now), alsoLarge?.wait(megapixels, now) ?? 0);
    if (wait > 0) return wait;
    all.take(megapixels);
    alsoLarge?.take(megapixels);
    return 0;
  };

  /** Pixel metrics of the upload, or undefined after answering the 400 envelope (3010 undecodable, 3008 too large). */
  function analyse(req: EmuRequest, reply: FastifyReply): ImageMetrics | undefined {
    const bytes = imageBytes(req);
    // Chunked uploads carry no Content-Length for the onRequest check; Incode's 10 MB rule still holds.
    if (Buffer.isBuffer(bytes) && bytes.length > INCODE_BODY_LIMIT) {
      fail(reply, 413, 'Request body exceeds the 10 MB limit');
      return undefined;
    }
    if (typeof bytes === 'string') {
      fail(reply, 400, bytes);
      return undefined;
    }
    // Decoded only within the budget, asked once the header passed its checks (an image refused for its size costs
    // nothing); past it Incode's 429, with the wait.
    const admit = (pixels: number) => {
      const waitMs = takeDecode(pixels / 1e6);
      if (waitMs > 0) throw new DecodeThrottled(waitMs);
    };
    try {
      return analyzeImage(decodeImage(bytes, admit));
    } catch (e) {
      if (e instanceof DecodeThrottled) {
        reply.header('retry-after', String(Math.ceil(e.waitMs / 1000)));
        fail(reply, 429, 'Too many image uploads: retry later');
        return undefined;
      }
      if (!(e instanceof ImageDecodeError)) throw e;
      const code = e.tooLarge ? 3008 : 3010;
      fail(reply, 400, e.message, code, selfieErrorText(code));
      return undefined;
    }
  }

  const addId = (side: 'front' | 'back'): Handler => (req, reply) => {
    const s = sess(req);
    const refused = s.directives.idError;
    if (refused?.side === side) {
      const text = selfieErrorText(refused.code, 'Image could not be processed.');
      return fail(reply, refused.http, `BadRequestException: ${text}`, refused.code, text);
    }
    const m = analyse(req, reply);
    if (!m) return reply;
    const d = s.directives;
    const kind = documentKind(s);
    const q = req.query as Record<string, string | undefined>;
    let failReason: string | null = null;
    if (side === 'front') {
      s.frontAttempts++;
      if (d.unknownDocument === 'always' || (d.unknownDocument === 'once' && s.frontAttempts === 1)) failReason = 'UNKNOWN_DOCUMENT_TYPE';
    }
    if (!failReason && ((side === 'front' && m.side === 'back') || (side === 'back' && m.side === 'front'))) failReason = 'WRONG_DOCUMENT_SIDE';
    const classification = !failReason;
    const skipBack = kind.oneSided || (side === 'front' && q.onlyFront === 'true');
    const record = {
      classification,
      failReason,
      sharpness: m.sharpness,
      glare: m.glare,
      horizontalResolution: classification ? m.width : 0,
      typeOfId: classification ? kind.typeOfId : 'Unknown',
      skipBack,
    };
    if (side === 'front') s.front = record;
    else s.back = record;
    const correctGlare = m.glare >= THRESHOLDS.glare;
    const correctSharpness = m.sharpness >= THRESHOLDS.sharpness;
    if (!classification) {
      return {
        classification: false,
        failReason,
        sharpness: m.sharpness,
        glare: m.glare,
        horizontalResolution: 0,
        readability: false,
        typeOfId: 'Unknown',
        sessionStatus: 'Alive',
        correctGlare,
        correctSharpness,
        skipBackIdCapture: false,
      };
    }
    return {
      classification: true,
      sharpness: m.sharpness,
      glare: m.glare,
      horizontalResolution: m.width,
      readability: correctGlare && correctSharpness && m.width >= THRESHOLDS.horizontalResolution,
      typeOfId: kind.typeOfId,
      sessionStatus: 'Alive',
      issueName: `${kind.country} ${kind.typeOfId} ${kind.subtype}`,
      issueYear: issueYearFor(s),
      countryCode: kind.country,
      correctGlare,
      correctSharpness,
      skipBackIdCapture: skipBack,
    };
  };
  route('POST', '/omni/add/front-id/v2', 'access', addId('front'));
  route('POST', '/omni/add/front-id', 'access', addId('front'));
  route('POST', '/omni/add/back-id/v2', 'access', addId('back'));
  route('POST', '/omni/add/back-id', 'access', addId('back'));

  route('POST', '/omni/process/id', 'access', (req, reply) => {
    const s = sess(req);
    if (!s.front) return fail(reply, 400, 'Front of the ID must be uploaded before process/id');
    if (!s.front.skipBack && !s.back) return fail(reply, 400, 'Back of the ID must be uploaded before process/id (front says the document has one)');
    if (s.directives.processIdError) return fail(reply, s.directives.processIdError, 'Processing error', 6000, 'Processing error');
    if (s.idPhase !== 1) sessions.startIdProcessing(s);
    return { success: true };
  });

  // ---- selfie & face ----------------------------------------------------------------------------------

  const addFace: Handler = (req, reply) => {
    const s = sess(req);
    const d = s.directives;
    s.selfieAttempts++;
    const first = s.selfieAttempts === 1;
    if (d.selfieError && (d.selfieError.repeat === 'always' || first)) {
      const code = d.selfieError.code;
      const http = d.selfieError.http ?? (code >= 400 && code < 500 ? code : 400);
      const text = selfieErrorText(code);
      return fail(reply, http, `BadRequestException: ${text}`, code, text);
    }
    const m = analyse(req, reply);
    if (!m) return reply;
    // The first selfie that could be looked at (none recorded yet): one Incode could not decode (3010) was no liveness check.
    const spoof = d.spoof === 'always' || (d.spoof === 'once' && !s.selfie);
    const isBright = !d.dark && m.brightness >= THRESHOLDS.brightness;
    const age = 22 + (seedOf(s.interviewId, 3) % 40);
    s.selfie = { spoof, isBright, hasLenses: d.lenses, hasFaceMask: d.mask, age, brightness: m.brightness };
    const answer: Record<string, unknown> = { confidence: spoof ? 1 : 0, isBright, hasLenses: d.lenses, hasFaceMask: d.maskNull ? null : d.mask, age, sessionStatus: 'Alive' };
    if (d.noConfidence) delete answer.confidence;
    return answer;
  };
  route('POST', '/omni/add/face/third-party', 'access', addFace);
  route('POST', '/omni/add/face', 'access', addFace);

  route('POST', '/omni/process/face', 'access', (req, reply) => {
    const s = sess(req);
    if (!s.selfie) return fail(reply, 400, 'Selfie must be uploaded before process/face');
    if (!s.front) return fail(reply, 400, 'Front of the ID must be uploaded before process/face');
    const d = s.directives;
    if (d.processFaceError) return fail(reply, d.processFaceError, 'Processing error', 6000, 'Processing error');
    s.faceMatch = !d.noMatch;
    if (s.facePhase !== 1) sessions.startFaceProcessing(s);
    const out: Record<string, unknown> = { confidence: s.faceMatch ? 1 : 0, existingUser: d.existingUser };
    if (d.existingUser) {
      out.existingInterviewId = existingInterviewIdFor(s);
      out.existingExternalId = existingExternalIdFor(s);
      out.nameMatched = true;
    }
    return out;
  });

  // ---- status, finish, results ------------------------------------------------------------------------

  route('GET', '/omni/get/onboarding/status', 'session', (req) => ({ onboardingStatus: sess(req).status }));
  route('GET', '/omni/get/postprocess/isfinished', 'access', (req) => ({ finished: sess(req).idPhase === 2 }));

  route(['GET', 'PUT'], '/omni/finish-status', 'access', (req) => {
    const s = sess(req);
    sessions.requestFinish(s);
    const overall = (buildScore(s).overall as { status: string }).status;
    const done = s.status === 'ONBOARDING_FINISHED' || s.status.startsWith('MANUAL_REVIEW');
    const action = !done ? 'none' : overall === 'OK' || overall === 'MANUAL_OK' ? 'approved' : overall === 'FAIL' || overall === 'MANUAL_FAIL' ? 'rejected' : 'none';
    return { redirectionUrl: s.redirectionUrl ?? null, customerId: s.approvedCustomerId ?? null, action };
  });

  route('GET', '/omni/get/score', 'session', (req) => buildScore(sess(req)));
  route('GET', '/omni/get/ocr-data', 'session', (req) => buildOcr(sess(req)));
  route('GET', '/omni/get/ocr-data/v2', 'session', (req) => ({ ocrData: buildOcr(sess(req)) }));

  route('GET', '/omni/onboarding-url', 'session', (req, reply) => {
    const s = sess(req);
    const q = req.query as Record<string, string | undefined>;
    // Required (incode-api.md 4.11): the hosted flow's link names the customer's client.
    const client = q.clientId;
    if (!client) return fail(reply, 400, 'clientId is required');
    // The account's own client id only: a wrong INCODE_CLIENT_ID must fail here as it would at Incode, not in production.
    if (client !== opts.clientId) return fail(reply, 400, `Unknown clientId '${client.slice(0, 64)}'`);
    const redirect = q.redirectionUrl ?? s.redirectionUrl;
    const url = new URL(`https://demo-onboarding.incodesmile.com/${encodeURIComponent(client)}/flow/${s.configurationId ?? 'default'}`);
    url.searchParams.set('interviewId', s.interviewId);
    if (redirect) url.searchParams.set('redirectionUrl', redirect);
    return { url: url.toString() };
  });

  route('POST', '/omni/process/approve', 'session', (req) => {
    const s = sess(req);
    const existing = s.directives.existingUser;
    s.approvedCustomerId ??= `${seedOf(s.interviewId, 11).toString(16).padStart(8, '0')}${s.interviewId.slice(8)}`;
    const overall = (buildScore(s).overall as { status: string }).status;
    return {
      success: true,
      uuid: s.approvedCustomerId,
      token: tokens.mint(s.approvedCustomerId, 'CUSTOMER', 91 * 24 * 3600),
      totalScore: overall,
      existingCustomer: existing,
    };
  }, {}, ['key', 'zero'], 'interviewId');

  route('POST', '/omni/process/government-validation', 'access', (req) => {
    const s = sess(req);
    if (s.idValidated) sessions.setStatus(s, 'GOVERNMENT_VALIDATION_FINISHED');
    return { success: true };
  });

  route('DELETE', '/omni/interview', 'exec', (req) => ({ success: sessions.delete(sess(req).interviewId) }), {}, ['key'], 'interviewId');

  // ---- Web SDK token-only extras ----------------------------------------------------------------------

  route('GET', '/omni/start-info', 'session', (req) => {
    const s = sess(req);
    const country = s.countryCode === 'ALL' ? 'US' : (alpha2Of(s.countryCode) ?? 'US');
    return { phonePrefix: country === 'BR' ? '+55' : country === 'MX' ? '+52' : '+1', country };
  });
  const ok = () => ({ success: true });
  route('POST', '/omni/add/geolocation', 'session', (req, reply) => {
    const b = (req.body ?? {}) as Record<string, unknown>;
    if ((b.latitude !== undefined && typeof b.latitude !== 'number') || (b.longitude !== undefined && typeof b.longitude !== 'number')) {
      return fail(reply, 400, 'latitude and longitude must be numbers');
    }
    return ok();
  });
  for (const p of ['/omni/add/event', '/omni/add/device-fingerprint', '/omni/add/phone', '/omni/add/name', '/omni/add/email', '/omni/session/status/set']) {
    route('POST', p, 'session', ok);
  }
  route('PUT', '/omni/update', 'session', ok);

  const imagesHandler: Handler = (req, reply) => {
    const s = sess(req);
    const wanted = ((req.body ?? {}) as { images?: unknown }).images;
    if (wanted !== undefined && !Array.isArray(wanted)) return fail(reply, 400, 'images must be an array');
    const out: Record<string, string> = {};
    for (const k of (wanted as unknown[] | undefined) ?? ['croppedIDFace', 'selfie']) {
      if (typeof k !== 'string') continue;
      if ((k === 'croppedIDFace' || k === 'croppedFrontID' || k === 'fullFrameFrontID') && !s.front) continue;
      if ((k === 'croppedBackID' || k === 'fullFrameBackID') && !s.back) continue;
      if ((k === 'selfie' || k === 'croppedFace') && !s.selfie) continue;
      if (k === 'croppedIDFace' || k === 'selfie' || k === 'croppedFace') out[k] = samples.croppedIdFace().toString('base64');
      else if (k === 'croppedFrontID' || k === 'fullFrameFrontID') out[k] = samples.idFrontThumbnail().toString('base64');
      else if (k === 'croppedBackID' || k === 'fullFrameBackID') out[k] = samples.idBackThumbnail().toString('base64');
    }
    return out;
  };
  route('POST', '/omni/get/images', 'session', imagesHandler);
  route('POST', '/omni/get/images/v2', 'session', imagesHandler);

  route('GET', '/omni/get/custom-fields', 'session', (req) => ({ customFields: sess(req).customFields ?? {} }));
  route('POST', '/omni/add/custom-fields', 'session', (req, reply) => {
    const s = sess(req);
    const cf = ((req.body ?? {}) as { customFields?: unknown }).customFields;
    if (!cf || typeof cf !== 'object' || Array.isArray(cf)) return fail(reply, 400, 'customFields must be an object');
    // Sessions stay small (every one is kept in memory): a few fields of a few words each, as a flow's custom fields are.
    const merged = plainFields(cf, { ...(s.customFields ?? {}) });
    const problem = customFieldsProblem(merged);
    if (problem) return fail(reply, 400, problem);
    if (!sessions.setCustomFields(s, merged as CustomFields)) return fail(reply, 404, 'Session not found');
    return ok();
  });
  route('GET', '/omni/get/onboarding-modules', 'session', () => ({
    modules: ['ID', 'SELFIE', 'FACE_MATCH', 'GEOLOCATION'],
    configuration: CAPTURE_SETTINGS,
  }));
  route('GET', '/omni/asset/fetch-all', 'session', () => ({ assets: [] }));
  route('GET', '/omni/get/data', 'session', (req) => {
    const s = sess(req);
    return {
      interviewId: s.interviewId,
      interviewCode: s.interviewCode,
      externalId: s.externalCustomerId ?? s.externalId ?? null,
      countryCode: s.countryCode,
      flowId: s.configurationId ?? null,
      onboardingStatus: s.status,
      createdAt: s.createdAt,
      clientId: opts.clientId,
    };
  });
  route('GET', '/omni/web-libs', 'none', (req) => ({ type: (req.query as Record<string, string>).type ?? null, libs: [] }));
  route('GET', '/omni/getRegions', 'none', () => [
    { code: 'ALL', name: 'All countries' },
    { code: 'BRA', name: 'Brazil' },
    { code: 'MEX', name: 'Mexico' },
    { code: 'USA', name: 'United States' },
  ]);

  // ---- admin (emulator only; never part of Incode's API) ----------------------------------------------

  const admin = (method: string, path: string, handler: Handler) => {
    remember(path, [method]);
    app.route({ method: method as RouteOptions['method'], url: path, config: { auth: 'admin', zero: false } satisfies RouteCfg as Record<string, unknown>, handler: handler as RouteOptions['handler'] });
  };
  admin('GET', '/__emulator/faults', () => faults.snapshot());
  admin('POST', '/__emulator/faults', (req, reply) => {
    const b = req.body as FaultOptions | undefined;
    if (!b || typeof b !== 'object' || Buffer.isBuffer(b)) return fail(reply, 400, 'Body must be a JSON object of fault settings');
    const invalid = faultSettingsError(b as Record<string, unknown>);
    if (invalid) return fail(reply, 400, invalid);
    faults.set(b);
    return faults.snapshot();
  });
  admin('DELETE', '/__emulator/faults', () => {
    faults.reset();
    return faults.snapshot();
  });
  admin('GET', '/__emulator/stats', () => ({ sessions: sessions.size, heldRequests: held.size, faults: faults.snapshot(), webhooks: emu.webhooks?.stats ?? null }));
  admin('GET', '/__emulator/webhooks', () => ({ stats: emu.webhooks?.stats ?? null, recent: emu.webhooks?.recent ?? [] }));
  const withSession = (fn: (s: Session, req: EmuRequest, reply: FastifyReply) => unknown): Handler => (req, reply) => {
    const s = sessions.get((req.params as { interviewId: string }).interviewId);
    if (!s) return fail(reply, 404, 'Session not found');
    return fn(s, req, reply);
  };
  admin('GET', '/__emulator/sessions/:interviewId', withSession((s) => s));
  admin('POST', '/__emulator/sessions/:interviewId/expire', withSession((s, _req, reply) => {
    if (!sessions.setStatus(s, 'EXPIRED')) return fail(reply, 409, `Cannot move from ${s.status} to EXPIRED`);
    return { onboardingStatus: s.status };
  }));
  admin('POST', '/__emulator/sessions/:interviewId/status', withSession((s, req, reply) => {
    const to = ((req.body ?? {}) as { onboardingStatus?: string }).onboardingStatus as OnboardingStatus;
    if (!ONBOARDING_STATUSES.includes(to)) return fail(reply, 400, `onboardingStatus must be one of ${ONBOARDING_STATUSES.join(', ')}`);
    if (!sessions.setStatus(s, to)) return fail(reply, 409, `Cannot move from ${s.status} to ${to}`);
    return { onboardingStatus: s.status };
  }));
  admin('POST', '/__emulator/sessions/:interviewId/token', withSession((s, req) => {
    const t = Number(((req.body ?? {}) as { ttlSeconds?: number }).ttlSeconds);
    return { token: emu.mintSessionToken(s.interviewId, Number.isFinite(t) ? t : undefined) };
  }));
}
