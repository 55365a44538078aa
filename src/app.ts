// buildApp(config, deps): the whole broker, wired the same way in tests and in production.
import { randomBytes, randomUUID } from 'node:crypto';
import { STATUS_CODES, type Server, type ServerResponse } from 'node:http';
import { Server as NetServer, type Socket } from 'node:net';
import Fastify, { LogController, type FastifyHttpOptions, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifySchemaValidationError } from 'fastify';
import { AjvCompiler, type ValidatorFactory } from '@fastify/ajv-compiler';
import cors from '@fastify/cors';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import swaggerUiCsp from '@fastify/swagger-ui/static/csp.json';
import underPressure from '@fastify/under-pressure';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { DestinationStream } from 'pino';
import { isInMemoryDatabase, selfAddress, type Config } from './config';
import errorHandler from './plugins/error-handler';
import incodePlugin from './plugins/incode';
import metricsPlugin, { observeAnswer } from './plugins/metrics';
import rateCounterPlugin from './plugins/rate-counter';
import resultsPlugin from './plugins/results';
import storePlugin from './plugins/store';
import type { RateCounter } from './protection/rate-counter';
import { sandboxEmulatorOptions } from './sandbox';
import { STOP_WIND_DOWN_MS, settledWithin } from './util/settle';
import { parseJsonBody } from './util/json-body';
import { createSessionGuards } from './protection/session-guards';
import healthRoutes from './routes/health';
import onboardingsRoutes from './routes/onboardings';
import sessionRoutes from './routes/session';
import sessionsRoutes from './routes/sessions';
import webRoutes from './routes/web';
import webhookRoutes from './routes/webhooks';
import { AppError, overloadedError, shuttingDownError } from './errors';
import { REDACT_PATHS, errSerializer, requestPath } from './logging';
import { ErrorBody, ResultsFailedEvent, ResultsReadyEvent, securitySchemes, withCallbacks } from './schemas';
import { securityHeaders } from './security';
import type { Store } from './store/types';
import { attemptMarginMs } from './results/worker';

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * /readyz answers 503 from now on while every route still serves: the first step of a SIGTERM shutdown, so a
     * load balancer takes this instance out of rotation before it refuses connections.
     */
    leaveRotation(): void;
    /**
     * When close() began (its first preClose hook), or null before: work that outlives a request must not start once
     * it has, and a plugin whose own hook runs later (Fastify runs them one after another, the root's first) counts its
     * share of the grace from then.
     */
    closingSince(): number | null;
    /**
     * Runs `fn` the moment close() begins, before any preClose hook's wait: a plugin whose own hook runs later can time
     * what it must do at the end of the grace from the start of the close, whatever the hooks before it take.
     */
    onClosing(fn: () => void): void;
  }
}

export interface AppDeps {
  /** A store shared with the test (else one is created from DATABASE_URL and closed with the app). */
  store?: Store;
  /** Where logs go (tests capture them); stdout otherwise. */
  logStream?: DestinationStream;
  /** false: no job worker or poller in this instance (tests that drive the pipeline by hand). */
  runWorker?: boolean;
  /** Rate-limit counter (else Redis when REDIS_URL is set, memory otherwise). */
  rateCounter?: RateCounter;
}


/** The answer to a request Node could not parse or that stopped arriving: status, code and message. */
function clientErrorAnswer(code: string | undefined): [number, string, string] {
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return [408, 'REQUEST_TIMEOUT', 'The request did not arrive in time'];
  if (code === 'HPE_HEADER_OVERFLOW') return [431, 'HEADERS_TOO_LARGE', 'Request headers are too large'];
  return [400, 'MALFORMED_REQUEST', 'The request is not valid HTTP/1.1'];
}

/** An error answer written on the socket itself, for a request no Fastify route or hook ever sees: then closed. */
function rawAnswer(status: number, code: string, message: string, requestId: string): string {
  const body = JSON.stringify({ code, message, requestId });
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nX-Request-Id: ${requestId}\r\nConnection: close\r\n\r\n${body}`;
}

/** What a browser frontend may read of an answer (Retry-After and the limit of a 429 among them). */
const CORS_EXPOSED_HEADERS = ['x-request-id', 'retry-after', 'x-ratelimit-limit'];

/** How long connections idle at the close may still send a request (answered 503) before they are dropped. */
const IDLE_LINGER_MS = 1000;

/** Where sandbox mode mounts the emulator. */
const SANDBOX_PREFIX = '/sandbox/incode';
// The prefix itself too: the router (ignoring trailing slashes) also registers the emulator's `/*` route without it.
const isEmulatorUrl = (url: string) => {
  const path = requestPath(url);
  return path === SANDBOX_PREFIX || path.startsWith(`${SANDBOX_PREFIX}/`);
};

const ajvCompilers = AjvCompiler();

/**
 * A validation failure as one readable sentence per place: a value outside a set of literals (Ajv reports one "must be
 * equal to constant" per literal of the union, then "must match a schema in anyOf") becomes "must be one of: a, b, c";
 * the other branches of a union are joined by "or", since any one of them would do; the rest as Fastify words them.
 */
export function validationError(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const byPlace = new Map<string, { allowed: string[]; other: string[]; union: boolean }>();
  for (const e of errors) {
    const where = `${dataVar}${e.instancePath}`;
    let at = byPlace.get(where);
    if (!at) byPlace.set(where, (at = { allowed: [], other: [], union: false }));
    const params = e.params as { allowedValue?: unknown; allowedValues?: unknown[] };
    if (e.keyword === 'const') at.allowed.push(String(params.allowedValue));
    else if (e.keyword === 'enum') at.allowed.push(...(params.allowedValues ?? []).map(String));
    else if (e.keyword === 'anyOf') at.union = true;
    else at.other.push(e.message ?? 'is not valid');
  }
  const parts: string[] = [];
  for (const [where, at] of byPlace) {
    const says = [...(at.allowed.length ? [`must be one of: ${[...new Set(at.allowed)].join(', ')}`] : []), ...new Set(at.other)];
    parts.push(`${where} ${says.length ? says.join(at.union ? ' or ' : '; ') : 'must match a schema in anyOf'}`);
  }
  return new Error(parts.join('; '));
}
type AjvModeOptions = Extract<NonNullable<Parameters<ValidatorFactory>[1]>, { mode?: never }>;

/**
 * Query strings, params and headers are text, so their values are coerced to the schema's types; the JSON bodies of
 * this service's clients keep theirs: `{"externalCustomerId": 0}` is a 400, not customer "0". Bodies Incode sends
 * (webhooks: a refusal there is a retried, then lost, status) and the sandbox emulator's routes (Incode's own API
 * does not refuse what the SDK sends) are still coerced.
 */
const bodyStrictValidators: ValidatorFactory = (externalSchemas, ajvOptions) => {
  const coercing = ajvCompilers(externalSchemas, ajvOptions);
  // Fastify passes its `ajv` option, which this app sets in Ajv's own (not JTD) mode.
  const options = { ...ajvOptions, mode: undefined, customOptions: { ...(ajvOptions as AjvModeOptions | undefined)?.customOptions, coerceTypes: false } };
  const strict = ajvCompilers(externalSchemas, options);
  const lenient = (url = '') => isEmulatorUrl(url) || url.startsWith('/webhooks/');
  return (route) => (route.httpPart === 'body' && !lenient(route.url) ? strict : coercing)(route);
};

/** Sandbox mode fills what a developer has not configured: the emulator needs webhook credentials too. */
function sandboxDefaults(config: Config): Config {
  if (!config.sandbox) return config;
  const webhook = { ...config.webhook };
  if (!webhook.clientId && !webhook.secret) {
    webhook.clientId = 'sandbox-incode';
    webhook.clientSecret = randomBytes(24).toString('base64url');
  }
  return { ...config, webhook };
}

/** Paths only a backend calls (with a service key): the results API and the server-side flow. */
const BACKEND_ONLY = /^\/(sessions|onboardings)(\/|\?|$)/;

/**
 * Whether a request target names one of them as the router reads it: its path (an absolute-form target's too), before
 * any `?` or `#`, percent-decoded (`/%73essions` is `/sessions`).
 */
function isBackendOnly(url: string): boolean {
  const path = requestPath(url);
  if (BACKEND_ONLY.test(path)) return true;
  if (!path.includes('%')) return false;
  try {
    return BACKEND_ONLY.test(decodeURIComponent(path));
  } catch {
    return false;
  }
}

/** Probes an orchestrator sends every few seconds: their passing answers would be most of a quiet service's log. */
const PROBES: ReadonlySet<string | undefined> = new Set(['/healthz', '/readyz']);

/** The one access line of a request (at debug for a probe that passed: a failing one is worth reading). */
function logCompleted(req: FastifyRequest, reply: FastifyReply): void {
  const line = { req, res: { statusCode: reply.statusCode }, responseTime: Math.round(reply.elapsedTime * 100) / 100 };
  if (reply.statusCode === 200 && PROBES.has(req.routeOptions.url)) req.log.debug(line, 'request completed');
  else req.log.info(line, 'request completed');
}

export async function buildApp(inputConfig: Config, deps: AppDeps = {}): Promise<FastifyInstance> {
  const config = sandboxDefaults(inputConfig);
  // Every answer is no-store unless its route says otherwise (the pages and their assets): tokens, results and error
  // bodies alike are for their caller only, and an error answered before a route's own hooks ran is one too.
  const helmetHeaders = { ...securityHeaders(), 'cache-control': 'no-store' };
  const options: FastifyHttpOptions<Server> = {
    logger: {
      level: config.logLevel,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      serializers: {
        // Method and path only: query strings and headers can carry ids and credentials.
        req: (req) => ({ method: req.method, url: requestPath(String(req.url)), remoteAddress: req.ip }),
        err: errSerializer,
      },
      ...(deps.logStream ? { stream: deps.logStream } : {}),
    },
    // A caller's own id is kept (its lines and ours are found together), unless it takes the form of the result jobs'
    // ids (job-<n>), which would pass its request off as a job in the logs and in the calls Incode sees. The sandbox's
    // emulator, standing for Incode, keeps those too: they are the jobs' own calls, named as Incode would see them.
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) && (!/^job-/i.test(given) || (config.sandbox && isEmulatorUrl(req.url ?? ''))) ? given : randomUUID();
    },
    // A hop count, never blind trust: X-Forwarded-For is read only as deep as the configured proxies.
    // A function, not the number: Fastify >= 5.12 treats a numeric trustProxy as "trust nothing", which
    // would put every client behind the load balancer into one rate-limit budget.
    trustProxy: config.trustProxyHops > 0 ? (_addr: string, hop: number) => hop < config.trustProxyHops : false,
    bodyLimit: 1024 * 1024,
    // A webhook URL typed into Incode's dashboard with a trailing slash would otherwise answer 404 to every status,
    // each retried for half an hour and then lost: /webhooks/incode/ is /webhooks/incode, and so on for every route.
    routerOptions: { ignoreTrailingSlash: true },
    schemaErrorFormatter: validationError,
    // No plugin timeout (Fastify's is 10 s): it also bounds each preClose hook, and cut short it skips the later ones
    // and closes the store under the result jobs still handing themselves back (a SHUTDOWN_GRACE_MS of 10 s or more),
    // and it would fail a start whose PostgreSQL migration waits for another replica's lock. Start-up is bounded by the
    // database's own timeouts and the migration's lock retries, shutdown by the grace and server.ts's overall limit.
    pluginTimeout: 0,
    // A request still arriving after REQUEST_TIMEOUT_MS gets 408 and loses its socket, so a stalled upload cannot hold
    // its share of the upload budget, or app.close(), forever. Given to Node's constructor too: set only afterwards
    // (as Fastify does), it is never enforced while headersTimeout (60 s) exceeds it (measured on Node 20). Node
    // checks every connectionsCheckingInterval (30 s by default): a quarter of the timeout bounds the overshoot.
    requestTimeout: config.limits.requestTimeoutMs,
    http: {
      // Node refuses a request without Host by itself, with an empty 400: the onRequest hook below answers it as every
      // error is answered.
      requireHostHeader: false,
      requestTimeout: config.limits.requestTimeoutMs,
      headersTimeout: Math.min(60_000, config.limits.requestTimeoutMs),
      connectionsCheckingInterval: Math.min(30_000, Math.ceil(config.limits.requestTimeoutMs / 4)),
    },
    // A request arriving once shutdown began is refused by the onRequest hook below (503 SHUTTING_DOWN, with a code
    // and the request id like every error), not by Fastify's own body.
    return503OnClosing: false,
    // Requests Node itself refuses (malformed, headers too large, stalled past REQUEST_TIMEOUT_MS) get the same
    // {code, message} body as every other error. Fastify's default handler answers without a code and logs the error
    // at trace with its rawPacket: the request's raw bytes, Authorization header and body included.
    clientErrorHandler: (err, socket: Socket) => {
      if (err.code === 'ECONNRESET' || socket.destroyed) return;
      const [status, code, message] = clientErrorAnswer(err.code);
      // As Node does: no answer over one already under way (it would corrupt it).
      const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
      if (socket.writable && !inFlight?.headersSent) {
        const requestId = randomUUID();
        socket.write(rawAnswer(status, code, message, requestId));
        // A connection that never sent a byte (a browser's preconnect, a proxy's spare) timing out asked nothing.
        if (socket.bytesRead > 0) answeredByNode(requestId, code, status, { method: 'other', url: '', peer: socket.remoteAddress });
        else app.log.trace({ code: err.code, status }, 'idle connection closed');
      } else app.log.trace({ code: err.code, status }, 'client error');
      socket.destroy(err);
    },
    // Fastify answers these before any route or hook, with its own body echoing the path: the same body as every
    // other error instead.
    // No hook has run for them: the headers every answer carries are set here.
    frameworkErrors: (err, req, reply: FastifyReply) => {
      const tooLong = err.code === 'FST_ERR_MAX_PARAM_LENGTH';
      const body = tooLong ? { code: 'PATH_PARAMETER_TOO_LONG', message: 'A path parameter is too long' } : { code: 'BAD_URL', message: 'The path is not valid URL encoding' };
      reply.headers(helmetHeaders).header('x-request-id', req.id);
      const origin = req.headers.origin;
      // CORS as the route's answers would carry it: the SDK reads an answer without it as a network error.
      if (origin && config.sandbox && isEmulatorUrl(req.url)) reply.header('access-control-allow-origin', '*');
      else if (origin && !isBackendOnly(req.url) && (config.corsOrigins.includes('*') || config.corsOrigins.includes(origin)))
        reply.headers({ 'access-control-allow-origin': origin, vary: 'Origin', 'access-control-expose-headers': CORS_EXPOSED_HEADERS.join(', ') });
      // As @fastify/cors does for every other answer: this one too differs by Origin, allowed or not.
      else if (config.corsOrigins.length > 0 && !config.corsOrigins.includes('*')) reply.header('vary', 'Origin');
      void reply.code(tooLong ? 414 : 400).send({ ...body, requestId: req.id });
      // Nor will any hook: the refusal's log lines and its latency are recorded here, as for every other answer.
      req.log.info({ code: body.code, status: reply.statusCode }, 'request refused');
      logCompleted(req, reply);
      observeAnswer(app.metrics, req, reply);
    },
    // One access line per request (below) instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false } },
    schemaController: { compilersFactory: { buildValidator: bodyStrictValidators } },
  };
  const app = Fastify(options).withTypeProvider<TypeBoxTypeProvider>();
  /**
   * What every answer gets from the hooks, for one Node gave before any request reached Fastify (no hook runs): the
   * refusal and access lines and the latency sample. Its latency is unknown (0), and its client the socket's peer (the
   * load balancer, behind one: X-Forwarded-For is not read from a request refused as unreadable).
   */
  function answeredByNode(requestId: string, code: string, status: number, { method, url, peer }: { method: string; url: string; peer?: string }): void {
    const log = app.log.child({ reqId: requestId });
    log.info({ code, status }, 'request refused');
    // Shaped by the req serializer as every access line is (the path without its query).
    log.info({ req: { method, url, ip: peer }, res: { statusCode: status }, responseTime: 0 }, 'request completed');
    app.metrics.httpDuration.observe({ method, route: 'unmatched', status_code: String(status) }, 0);
  }
  // An Expect other than 100-continue: Node would answer 417 itself, with no body.
  app.server.on('checkExpectation', (req, res: ServerResponse) => {
    const requestId = randomUUID();
    res.writeHead(417, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'x-request-id': requestId, connection: 'close' });
    res.end(JSON.stringify({ code: 'EXPECTATION_FAILED', message: 'Only Expect: 100-continue is supported', requestId }));
    // Node parses only the methods it knows: a bounded label.
    answeredByNode(requestId, 'EXPECTATION_FAILED', 417, { method: req.method ?? 'other', url: req.url ?? '', peer: req.socket.remoteAddress });
  });
  // CONNECT (a proxy's tunnel) reaches no route: without a listener Node drops the connection without a word.
  app.server.on('connect', (req, socket: Socket) => {
    const requestId = randomUUID();
    socket.end(rawAnswer(405, 'METHOD_NOT_ALLOWED', 'CONNECT is not supported: this is no proxy', requestId));
    answeredByNode(requestId, 'METHOD_NOT_ALLOWED', 405, { method: 'CONNECT', url: '', peer: socket.remoteAddress });
  });

  // Origin and path only: a URL's user info or query may hold credentials.
  const upstreamUrl = new URL(config.incode.apiUrl);
  const upstream = (upstreamUrl.origin + upstreamUrl.pathname).replace(/\/$/, '');
  if (config.sandbox)
    app.log.warn(
      { sandbox: true, upstream, generatedEncryptionKey: config.encryption.generated },
      `SANDBOX MODE: no INCODE_API_KEY set; using the built-in Incode emulator at ${SANDBOX_PREFIX} (${config.encryption.generated ? 'stored data uses a throwaway encryption key' : 'stored data is encrypted with DATA_ENCRYPTION_KEY'})`,
    );
  else app.log.info({ sandbox: false, upstream }, 'broker starting against Incode');
  for (const { name, meant } of config.misspeltVariables)
    app.log.warn({ variable: name, meant }, `${name} is set but is no variable of this service, so it is ignored: did you mean ${meant}?`);
  // The emulator keeps its sessions in this process: what a database kept from an earlier one is unknown to it.
  if (config.sandbox && !isInMemoryDatabase(config.database.url))
    app.log.warn("sandbox mode with a persistent DATABASE_URL: the emulator's sessions live in this process only, so sessions stored by an earlier process are unknown to it after a restart (their checks find no such session, and they end failed, INCODE_SESSION_GONE); use it to try the database, not to keep sandbox sessions");
  if (config.sandbox && config.adminApiKeys.length === 0)
    app.log.info('the results API (/sessions, /onboardings, and the /operator page\'s calls) is closed until ADMIN_API_KEYS names a service key, e.g. ADMIN_API_KEYS=dev-admin-key npm start');
  // Allowed, but worth an operator's second look: each is a setting someone may have left by accident.
  if (!config.sandbox && config.nodeEnv !== 'production')
    app.log.warn({ nodeEnv: config.nodeEnv }, 'a real INCODE_API_KEY without NODE_ENV=production: the production refusals of unsafe settings are off');
  // A job's attempt is stopped before its lease lapses: shorter than one Incode call (its headers, then its body, each
  // within INCODE_TIMEOUT_MS), and a slow answer fails every attempt until the job is dead-lettered.
  const { jobLeaseMs } = config.results;
  if (jobLeaseMs - attemptMarginMs(jobLeaseMs) < 2 * config.incode.timeoutMs)
    app.log.warn({ jobLeaseMs, incodeTimeoutMs: config.incode.timeoutMs }, 'JOB_LEASE_MS leaves a job\'s attempt less time than one Incode call may take (2 × INCODE_TIMEOUT_MS: its headers, then its body): a slow answer fails every attempt');
  // The default INCODE_API_URL is Incode's demo environment, which refuses a production key: say it where it shows.
  if (!config.sandbox && config.nodeEnv === 'production' && upstreamUrl.hostname.startsWith('demo-'))
    app.log.warn({ upstream }, "INCODE_API_URL is Incode's demo environment with NODE_ENV=production: a production API key is refused there (set https://saas-api.incodesmile.com)");
  // Incode documents configurationId as required on /omni/start (its integration guide falls back to the account's
  // default flow): a start refused for it would fail every session, so say so before the first one.
  if (!config.sandbox && !config.incode.configurationId)
    app.log.warn("no INCODE_CONFIGURATION_ID: sessions are started without a configurationId, which Incode documents as required (without it the account's default flow is used where Incode allows it); set the flow's id");
  if (!config.sandbox && !config.results.markComplete)
    app.log.info('MARK_COMPLETE=false: POST /onboardings sessions reach ONBOARDING_FINISHED only if their Incode flow marks them completed on status; Incode\'s integration guide calls finish-status, which MARK_COMPLETE=true does');
  if (!config.sandbox && config.metricsTokens.length === 0)
    app.log.warn('GET /metrics is open to whoever reaches this port (no METRICS_TOKENS): set METRICS_TOKENS, or block the path at the ingress');
  if (!config.sandbox && config.rateLimit.global === 0)
    app.log.warn(
      { callerAuth: config.callerAuth.mode },
      {
        none: 'POST /session is open to anyone (CALLER_AUTH=none) with no RATE_LIMIT_GLOBAL budget: every call creates a billable Incode session',
        'app-keys': 'POST /session takes app keys, which ship inside apps anyone can unpack, with no RATE_LIMIT_GLOBAL budget: every call creates a billable Incode session',
        jwt: 'POST /session takes any token of the identity provider with no RATE_LIMIT_GLOBAL budget: if anyone can sign up there, every new account can create billable Incode sessions',
      }[config.callerAuth.mode],
    );

  // When close() began: from then on the instance is draining.
  let closingAt: number | null = null;
  let inRotation = true;
  app.decorate('leaveRotation', () => {
    inRotation = false;
  });
  app.decorate('closingSince', () => closingAt);
  const closingListeners: (() => void)[] = [];
  app.decorate('onClosing', (fn: () => void) => void closingListeners.push(fn));
  // Callback-style hooks on the hot path: an async hook costs a promise per request.
  // Headers that must come once: Node keeps the first of two Authorization headers and joins two Idempotency-Key
  // or X-App-Key headers with ", ", so a proxy reading the last one would see other credentials than this service,
  // and a retry sending one of two keys would start (and pay for) a second session.
  // Two Host or Content-Type headers are refused for the same reason (RFC 9112 asks a 400 for the first): a proxy may
  // route, or read the body, by the other one.
  const single = new Set(['host', 'content-type', 'authorization', 'idempotency-key', 'x-app-key', 'x-incode-hardware-id', config.webhook.secretHeader]);
  const singleLengths = new Set([...single].map((h) => h.length));
  // @fastify/cors refuses an OPTIONS request without Origin or Access-Control-Request-Method with a text/plain 400:
  // the same refusal, answered like every other error. Only where it would refuse (CORS enabled, not the emulator).
  const corsEnabled = config.corsOrigins.length > 0;
  app.addHook('onRequest', (req, reply, done) => {
    reply.headers(helmetHeaders);
    reply.header('x-request-id', req.id);
    if (closingAt !== null && !(config.sandbox && isEmulatorUrl(req.url))) return done(shuttingDownError());
    if (req.headers.host === undefined && req.raw.httpVersion === '1.1') return done(new AppError(400, 'MALFORMED_REQUEST', 'An HTTP/1.1 request needs a Host header'));
    // Bodies are read as sent: a compressed one could only fail as "not JSON", or expand past the body limits.
    const encoding = req.headers['content-encoding'];
    if (encoding !== undefined && encoding.toLowerCase() !== 'identity')
      return done(new AppError(415, 'UNSUPPORTED_CONTENT_ENCODING', 'Request bodies must not be compressed (Content-Encoding)'));
    const raw = req.raw.rawHeaders;
    let seen: string | null = null;
    for (let i = 0; i < raw.length; i += 2) {
      // Most names are told apart by their length alone, before any lowercasing.
      if (!singleLengths.has(raw[i].length)) continue;
      const name = raw[i].toLowerCase();
      if (!single.has(name)) continue;
      if (seen?.includes(`|${name}|`)) return done(new AppError(400, 'DUPLICATE_HEADER', `The ${name} header must be sent once`));
      seen = `${seen ?? '|'}${name}|`;
    }
    if (corsEnabled && req.method === 'OPTIONS' && !(req.headers.origin && req.headers['access-control-request-method']) && !(config.sandbox && isEmulatorUrl(req.url)))
      return done(new AppError(400, 'INVALID_PREFLIGHT', 'A CORS preflight needs the Origin and Access-Control-Request-Method headers'));
    if (req.method === 'OPTIONS' && isBackendOnly(req.url))
      return done(new AppError(403, 'CORS_NOT_ALLOWED', 'The results API and the server-side flow take no cross-origin browser calls: call them from your backend'));
    done();
  });
  app.addHook('preClose', async () => {
    closingAt = Date.now();
    for (const fn of closingListeners) fn();
    // Node stops enforcing REQUEST_TIMEOUT_MS once the server is closing, so a stalled upload would hold close()
    // forever: whatever is still connected when the grace for in-flight work is over is cut, a wind-down after it, in
    // which the captures stopped at the grace answer 503 SHUTTING_DOWN with their interviewId.
    const cut = setTimeout(() => app.server.closeAllConnections(), config.shutdownGraceMs + STOP_WIND_DOWN_MS);
    cut.unref();
    app.server.once('close', () => clearTimeout(cut));
    // No new connections from here on (Fastify stops listening only after every preClose hook, which may take the
    // whole grace): a connection refused is one a load balancer retries elsewhere. Requests in flight go on, and one
    // arriving on a connection still open gets 503 SHUTTING_DOWN. The listener only: http.Server.close() would also
    // drop the idle keep-alive connections at once, under any request a client is sending on one just then. After an
    // orchestrator's stop (out of rotation first) they get a moment to send it and be answered (503, Connection:
    // close), ended as soon as no connection is left; Fastify's close drops what is still idle after it. A Ctrl-C or
    // an embedding app's close() does not wait for them.
    // In sandbox mode the emulator is reached over this very listener: the onboardings still in their captures need it
    // (the hook above lets its calls through), so it stops listening when the close goes on, after these hooks.
    if (app.server.listening && !config.sandbox) {
      const ended = new Promise<void>((resolve) => NetServer.prototype.close.call(app.server, () => resolve()));
      if (!inRotation) await settledWithin([ended], Math.min(IDLE_LINGER_MS, config.shutdownGraceMs));
    }
  });
  app.addHook('onResponse', (req, reply, done) => {
    logCompleted(req, reply);
    done();
  });
  // While draining, answers close their keep-alive connection, so close() does not wait for idle sockets. Not before
  // (out of rotation): a client told to reconnect then opens connections that the listener's close resets.
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (closingAt !== null) reply.header('connection', 'close');
    done(null, payload);
  });

  app.addSchema(ErrorBody);
  // Referenced by no route: the customer callbacks' bodies, for the document's x-webhooks (withCallbacks).
  app.addSchema(ResultsReadyEvent);
  app.addSchema(ResultsFailedEvent);
  // Only JSON (and the webhook token endpoint's form body, registered in its own scope) is accepted.
  app.removeContentTypeParser('text/plain');
  // JSON as UTF-8 only, checked, instead of decoded blindly (util/json-body).
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, parseJsonBody);

  // The error handler first: a route takes the handler in place when it is registered, /metrics included.
  await app.register(errorHandler);
  // Before any route, /metrics included: the document is built from the routes registered after it.
  await app.register(swagger, {
    openapi: {
      info: { title: 'Incode token broker', version: '0.1.0', description: 'Backend-for-frontend for Incode identity verification' },
      components: { securitySchemes: securitySchemes(config.webhook.secretHeader) },
    },
    // Shared schemas under their own names (ErrorBody, not def-0), which generated clients name their types after.
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
    // The sandbox's emulator stands in for Incode, whose API is not this service's: left out of its document.
    transform: ({ schema, url }) => ({ schema: isEmulatorUrl(url) ? { ...schema, hide: true } : schema, url }),
    // POST /session takes a request without a body (every option at its default); the generator marks every declared
    // body required.
    transformObject: (doc) => {
      if (!('openapiObject' in doc)) return doc.swaggerObject;
      const body = doc.openapiObject.paths?.['/session']?.post?.requestBody;
      if (body && !('$ref' in body)) body.required = false;
      return withCallbacks(doc.openapiObject);
    },
  });
  await app.register(metricsPlugin, { tokens: config.metricsTokens });
  await app.register(underPressure, {
    maxEventLoopDelay: config.eventLoopMaxLagMs || 0,
    // Called only under pressure. A rejection goes to the central error handler, like every other error.
    pressureHandler: async (req) => {
      // Liveness and the metrics scrape are never shed: an orchestrator would kill a merely busy process,
      // and the shedding itself must stay observable.
      const route = req.routeOptions.url;
      if (route === '/healthz' || route === '/metrics') return;
      // The sandbox's emulator stands for Incode, which this process's lag does not slow down: shedding its answers
      // would look like Incode failing and open the broker's own circuits.
      if (config.sandbox && isEmulatorUrl(req.url)) return;
      app.metrics.shed.inc({ reason: 'event_loop' });
      throw overloadedError('The service is overloaded; retry shortly', 5);
    },
    exposeStatusRoute: false,
  });
  const brokerCors = {
    origin: config.corsOrigins.includes('*') ? true : config.corsOrigins.length ? config.corsOrigins : false,
    methods: ['GET', 'POST', 'DELETE', 'OPTIONS'],
    allowedHeaders: ['content-type', 'authorization', 'idempotency-key', 'x-app-key', 'x-incode-hardware-id', 'x-request-id'],
    exposedHeaders: CORS_EXPOSED_HEADERS,
    maxAge: 600,
  };
  // The sandbox emulator answers its own CORS (the SDK's api-version header, PUT): this hook would
  // otherwise reply to the SDK's preflights first, with the broker's narrower header list.
  // Outside sandbox mode the options are static (a delegator re-normalises them on every request).
  if (config.sandbox)
    await app.register(cors, { delegator: (req, cb) => cb(null, isEmulatorUrl(req.url) ? { origin: false } : brokerCors) });
  else await app.register(cors, brokerCors);
  // The docs page gets a CSP of its own (helmet's is off: the demo page sets its own), written out here whole rather
  // than edited from the plugin's default, so an upgrade cannot loosen it: Swagger UI's inline code by the hashes the
  // plugin ships, nothing from other origins, never framed, no validator badge calling out.
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    uiConfig: { validatorUrl: null },
    staticCSP: {
      'default-src': ["'self'"],
      'base-uri': ["'self'"],
      'font-src': ["'self'", 'data:'],
      'frame-ancestors': ["'none'"],
      'img-src': ["'self'", 'data:'],
      'object-src': ["'none'"],
      'script-src': ["'self'", ...swaggerUiCsp.script],
      'script-src-attr': ["'none'"],
      'style-src': ["'self'", ...swaggerUiCsp.style],
      'form-action': ["'none'"],
    },
  });

  await app.register(storePlugin, { config, store: deps.store });
  await app.register(incodePlugin, { config });
  await app.register(resultsPlugin, { config, runWorker: deps.runWorker });

  await app.register(rateCounterPlugin, { config, counter: deps.rateCounter });
  const guards = createSessionGuards(app, config);

  if (config.sandbox) {
    // The emulator is loaded in sandbox mode only; production never has it in memory.
    const { emulatorPlugin } = await import('./emulator/app');
    await app.register(emulatorPlugin({
      ...sandboxEmulatorOptions(config),
      prefix: SANDBOX_PREFIX,
      corsOrigins: '*',
      webhook: {
        // To this process as it listens (HOST may be one interface only, not loopback).
        url: `http://${selfAddress(config.host)}:${config.port}/webhooks/incode`,
        oauth: config.webhook.clientId && config.webhook.clientSecret ? { tokenUrl: `http://${selfAddress(config.host)}:${config.port}/webhooks/incode/token`, clientId: config.webhook.clientId, clientSecret: config.webhook.clientSecret } : undefined,
        headers: !config.webhook.clientId && config.webhook.secret ? { [config.webhook.secretHeader]: config.webhook.secret } : undefined,
        retryDelaysMs: [1000, 2500, 6000],
      },
    }));
  }

  // What the SDK is initialised with: the browser-reachable URL of the token-only (/0/) surface.
  const sdkApiUrl = config.sandbox ? `${config.publicUrl}${SANDBOX_PREFIX}/0/` : `${config.incode.apiUrl}/0/`;
  await app.register(healthRoutes, { sandbox: config.sandbox, upstreamUrl: config.incode.apiUrl, apiKey: config.incode.apiKey, requireIncode: config.readinessRequiresIncode, inRotation: () => inRotation });
  // The results API and the server-side flow are for backends holding a service key: no CORS headers on their answers
  // (and their preflights refused above), so a page on an allowed app origin that somehow held a service key could
  // neither read personal data nor erase a session from a browser.
  app.addHook('onRoute', (route) => {
    if (BACKEND_ONLY.test(route.url)) route.config = { ...(route.config as object), cors: false } as typeof route.config;
  });
  await app.register(sessionRoutes, { config, sdkApiUrl, guards });
  await app.register(webhookRoutes, { config });
  await app.register(sessionsRoutes, { config });
  await app.register(onboardingsRoutes, { config, guards });
  await app.register(webRoutes, { config, sdkApiUrl });

  return app;
}
