// The one schema for every environment variable, and a pure loadConfig(env) that validates it.
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { MEMORY_COUNTER_MAX_KEYS } from './protection/rate-counter';
import { IN_MEMORY, isSchemaName, parseStoreUrl, splitPgOptions } from './store/url';

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    problem: string,
  ) {
    super(`Invalid configuration: ${variable} ${problem}`);
    this.name = 'ConfigError';
  }
}

type Kind =
  | { type: 'string' }
  /** `base`: a base URL others are appended to (no query, fragment or user info). */
  | { type: 'url'; base?: true }
  | { type: 'int'; min?: number; max?: number }
  | { type: 'bool' }
  | { type: 'enum'; values: readonly string[] }
  | { type: 'list' };

interface VarSpec {
  kind: Kind;
  default?: string;
  doc: string;
  secret?: boolean;
}

/** Every variable the service reads. `.env.example` documents each one (a test keeps them in step). */
export const ENV_SCHEMA = {
  NODE_ENV: { kind: { type: 'enum', values: ['development', 'test', 'production'] }, default: 'development', doc: 'Only "production" changes anything: it refuses unsafe settings.' },
  PORT: { kind: { type: 'int', min: 0, max: 65535 }, default: '3000', doc: 'TCP port to listen on (0: any free port; not in sandbox mode, whose built-in emulator is called at this port).' },
  HOST: { kind: { type: 'string' }, default: '127.0.0.1', doc: 'Interface to bind (0.0.0.0 in containers).' },
  PUBLIC_URL: { kind: { type: 'url', base: true }, doc: 'Sandbox mode: how clients reach this service, for the apiUrl that POST /session hands out (the built-in emulator); defaults to http://localhost:PORT. With a real INCODE_API_KEY the apiUrl is Incode\'s and this is unused.' },
  LOG_LEVEL: { kind: { type: 'enum', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] }, default: 'info', doc: 'pino log level.' },
  LOG_BUFFER_BYTES: {
    // Below the log stream's 16 KiB write size, which it refuses a buffer threshold to reach.
    kind: { type: 'int', min: 0, max: 16383 },
    default: '4096',
    doc: 'stdout log lines are buffered up to this many bytes (at most 16383), flushed at least every 250 ms and at exit (a SIGKILL can lose the buffer); 0 writes each line synchronously.',
  },
  CORS_ORIGINS: { kind: { type: 'list' }, default: '', doc: 'Comma-separated exact origins allowed by CORS; "*" only if set explicitly.' },

  INCODE_API_URL: { kind: { type: 'url', base: true }, default: 'https://demo-api.incodesmile.com', doc: 'Incode API base URL: https://saas-api.incodesmile.com for production, https://demo-api.incodesmile.com (the default) for Incode\'s demo environment; a key works only in its own.' },
  INCODE_API_KEY: { kind: { type: 'string' }, secret: true, doc: 'Incode API key. Unset = sandbox mode against the built-in emulator.' },
  INCODE_CLIENT_ID: { kind: { type: 'string' }, doc: 'Incode client id (needed for onboarding-url).' },
  INCODE_CONFIGURATION_ID: { kind: { type: 'string' }, doc: 'Default flow (configurationId) for new sessions.' },
  REDIRECTION_URL_ORIGINS: {
    kind: { type: 'string' },
    doc: 'Origins a POST /session redirectionUrl may point to, comma-separated (e.g. https://app.example.com); empty (the default): no redirectionUrl is accepted, so a session link cannot be made to end on someone else\'s site; "*": any origin (refused in production).',
  },
  INCODE_ALLOWED_CONFIGURATION_IDS: {
    kind: { type: 'string' },
    doc: 'Flows a POST /session body may name, comma-separated (the default flow always may); empty (the default): only INCODE_CONFIGURATION_ID, so an app cannot pick a lighter flow (one without liveness, say); "*": any flow of the account.',
  },
  INCODE_EXECUTIVE_EMAIL: { kind: { type: 'string' }, doc: 'Dashboard user for the executive token (reads sessions created elsewhere).' },
  INCODE_EXECUTIVE_PASSWORD: { kind: { type: 'string' }, secret: true, doc: 'Password of INCODE_EXECUTIVE_EMAIL.' },
  INCODE_TIMEOUT_MS: { kind: { type: 'int', min: 100, max: 300000 }, default: '15000', doc: 'Header and body timeout of each Incode call but the server-side flow\'s captures (INCODE_CAPTURE_TIMEOUT_MS); a whole call, once sent, ends within twice it.' },
  INCODE_CAPTURE_TIMEOUT_MS: { kind: { type: 'int', min: 100, max: 300000 }, default: '30000', doc: 'Header and body timeout of the capture and processing calls of the server-side flow (ID and selfie uploads, process ID, face match): Incode analyses the image before it answers, and a timed-out capture is not retried, so the onboarding ends there.' },
  INCODE_CONNECT_TIMEOUT_MS: { kind: { type: 'int', min: 100, max: 60000 }, default: '5000', doc: 'Connect timeout towards Incode.' },
  INCODE_POOL_CONNECTIONS: { kind: { type: 'int', min: 1, max: 10000 }, default: '512', doc: 'Keep-alive connections in the Incode pool (one call each; INCODE_MAX_CONCURRENCY can only lower it).' },
  INCODE_MAX_RETRIES: { kind: { type: 'int', min: 0, max: 10 }, default: '2', doc: 'Retries of idempotent Incode calls (reads, connection failures).' },
  INCODE_MAX_CONCURRENCY: { kind: { type: 'int', min: 1, max: 100000 }, default: '1024', doc: 'Incode calls in flight at once: caps the pool at the lower of this and INCODE_POOL_CONNECTIONS; more wait in the pool queue (that wait counts in incode_call_duration_seconds).' },

  DATABASE_URL: { kind: { type: 'string' }, default: 'sqlite:./data/broker.db', doc: 'sqlite:<file>, sqlite::memory: or postgres://user@host/db (the password in the URL, percent-encoded, or in PGPASSWORD, which the PostgreSQL driver reads). Unset in sandbox mode without DATA_ENCRYPTION_KEY: in memory (a file needs a key you keep).' },
  DATABASE_SCHEMA: {
    kind: { type: 'string' },
    default: 'public',
    doc: 'PostgreSQL: the schema the tables live in (created if missing; lowercase letters, digits and _). The service pins it on every connection: a search_path in DATABASE_URL\'s options is refused.',
  },
  DATABASE_TIMEOUT_MS: {
    kind: { type: 'int', min: 100, max: 600000 },
    default: '10000',
    doc: 'PostgreSQL: bound on connecting (or waiting for a pooled connection) and on each statement, client and server side; a stalled database then answers 503 DATABASE_UNAVAILABLE and /readyz 503 instead of hanging. Start-up migrations are not bounded by it (an index rebuild may take longer).',
  },
  DATABASE_POOL_MAX: {
    kind: { type: 'int', min: 1, max: 1000 },
    default: '10',
    doc: 'PostgreSQL: connections this process opens at most (requests, webhooks and jobs share them); replicas x this must stay under the server\'s max_connections. A larger pool gave the jobs more throughput but the webhook acknowledgements a higher p99 in the benchmark (README, Benchmark).',
  },
  SQLITE_SYNCHRONOUS: {
    kind: { type: 'enum', values: ['normal', 'full'] },
    default: 'normal',
    doc: 'SQLite only. normal: a commit survives the process being killed, but the last ones before a power loss or OS crash may be lost. full: every group commit is fsynced first, so an acknowledged webhook survives those too, for an fsync per commit on the event loop.',
  },
  DATA_ENCRYPTION_KEY: { kind: { type: 'string' }, secret: true, doc: 'AES-256 keys for PII at rest: "kid:base64key[,kid:base64key...]" (a key alone may omit its id: it is k1), first one encrypts, every one decrypts. To rotate, list the new key first: the hourly sweep re-encrypts what is under the others, and the metric stored_values_under_old_keys reaches 0 when they can be removed (add a new key second everywhere first, so every replica reads it; Idempotency-Keys completed before this version keep it above 0 until they expire). Sandbox generates a throwaway key.' },
  RETENTION_DAYS: { kind: { type: 'int', min: 1, max: 3650 }, default: '30', doc: 'Stored scores, OCR and tokens are erased after this many days.' },
  RETENTION_DELETE_AT_INCODE: {
    kind: { type: 'bool' },
    default: 'false',
    doc: 'The retention sweep also deletes at Incode each erased session this service started (its images and data there; sessions only followed here are left to their owner; needs the executive credentials), as DELETE /sessions/:id?incode=true does; a session erased by DELETE before its retention period ends has that deletion scheduled for then.',
  },

  WEBHOOK_CLIENT_ID: { kind: { type: 'string' }, doc: 'OAuth 2.0 client id Incode uses at POST /webhooks/incode/token.' },
  WEBHOOK_CLIENT_SECRET: { kind: { type: 'string' }, secret: true, doc: 'OAuth 2.0 client secret for WEBHOOK_CLIENT_ID.' },
  WEBHOOK_CLIENT_SECRET_PREVIOUS: {
    kind: { type: 'string' },
    secret: true,
    doc: 'During a rotation of WEBHOOK_CLIENT_SECRET: the old secret, still taken at the token endpoint, and the tokens issued under it still valid until they expire. Set the new one in WEBHOOK_CLIENT_SECRET and the old one here, then in Incode\'s dashboard; remove it a token lifetime (WEBHOOK_TOKEN_TTL_SECONDS) and a minute after the dashboard changed (tokens hold 60 s past their expiry). Removing it ends every token asked for with it at once, so a leaked secret is revoked with its tokens.',
  },
  WEBHOOK_SECRET: { kind: { type: 'string' }, secret: true, doc: 'Static shared secret Incode sends as a custom header.' },
  WEBHOOK_SECRET_PREVIOUS: { kind: { type: 'string' }, secret: true, doc: 'During a rotation of WEBHOOK_SECRET: the old one, still taken until Incode\'s dashboard sends the new one.' },
  WEBHOOK_SECRET_HEADER: { kind: { type: 'string' }, default: 'x-webhook-secret', doc: 'Header that carries WEBHOOK_SECRET.' },
  WEBHOOK_TOKEN_TTL_SECONDS: { kind: { type: 'int', min: 60, max: 86400 }, default: '3600', doc: 'Lifetime of issued webhook access tokens.' },
  WEBHOOK_ALLOW_UNAUTHENTICATED: { kind: { type: 'bool' }, default: 'false', doc: 'Accept webhooks when no webhook credentials are configured (never in production; sandbox mode always configures some).' },

  RESULTS_MODE: { kind: { type: 'enum', values: ['webhook', 'polling', 'both'] }, default: 'both', doc: 'How finished sessions are detected.' },
  POLL_INTERVAL_MS: { kind: { type: 'int', min: 50, max: 3600000 }, default: '5000', doc: 'First delay between status polls of an unfinished session.' },
  POLL_MAX_INTERVAL_MS: { kind: { type: 'int', min: 50, max: 86400000 }, default: '1800000', doc: 'Longest delay between polls (backoff cap); abandoned sessions are polled at this pace until POLL_GIVE_UP_HOURS.' },
  POLL_GIVE_UP_HOURS: { kind: { type: 'int', min: 1, max: 24 * 365 }, default: '72', doc: 'Stop polling a session this long after its last sign of life (its start, a status move, a resume, stored results); a later one polls it again.' },
  JOB_MAX_ATTEMPTS: { kind: { type: 'int', min: 1, max: 100 }, default: '16', doc: 'Attempts of a job before it is dead-lettered (16 with the default backoff: about an hour and a half of retries, through a callback endpoint\'s outage or Incode failing; an attempt put off by an open Incode circuit, which never reached Incode, is not counted).' },
  JOB_BACKOFF_MS: { kind: { type: 'int', min: 10, max: 3600000 }, default: '1000', doc: 'Base delay of the jobs\' exponential backoff (with jitter, no sooner than Incode\'s Retry-After; at most 15 min between attempts either way).' },
  JOB_LEASE_MS: { kind: { type: 'int', min: 500, max: 3600000 }, default: '120000', doc: 'A job whose worker died (crash, kill -9) is run again after this long; an attempt still waiting on Incode stops a fifth of it (at most 10 s) before, and is retried.' },
  WORKER_CONCURRENCY: { kind: { type: 'int', min: 1, max: 256 }, default: '32', doc: 'Jobs run at once by this process.' },
  MARK_COMPLETE: { kind: { type: 'bool' }, default: 'false', doc: 'Call finish-status for the server-side flow\'s sessions (POST /onboardings, the CLI) once Incode\'s processing is done (needed when the Incode flow does not mark sessions completed on status; an SDK frontend calls it itself). Never over a reviewer\'s verdict, which comes after completion.' },

  ADMIN_API_KEYS: { kind: { type: 'list' }, secret: true, default: '', doc: 'Service keys for the results API (Bearer), comma-separated for rotation. None may also be an app key, a metrics token or a webhook secret.' },
  METRICS_TOKENS: {
    kind: { type: 'list' },
    secret: true,
    default: '',
    doc: 'Bearer tokens that may read GET /metrics, comma-separated for rotation (Prometheus: authorization.credentials); empty: /metrics is open to whoever reaches the port, which also serves POST /session and the webhooks, so block the path at the ingress.',
  },
  CALLBACK_URL: { kind: { type: 'url' }, doc: 'Customer endpoint notified when results are ready or fail for good (Standard Webhooks; session.results_ready, session.results_failed).' },
  CALLBACK_SECRET: { kind: { type: 'string' }, secret: true, doc: 'Signing secret for CALLBACK_URL: "whsec_" + base64 as Standard Webhooks libraries expect (e.g. "whsec_" + `openssl rand -base64 32`), or any other string of printable ASCII, used as its bytes (such a receiver verifies with the raw secret, format "raw", which reads one byte per character). To rotate a "whsec_" secret, list the new and the old, separated by a space (the new first): each signs every callback until receivers have the new one and the old is removed.' },

  SESSION_BODY_LIMIT_BYTES: { kind: { type: 'int', min: 256, max: 1048576 }, default: '16384', doc: 'Largest POST /session body.' },
  ONBOARDING_BODY_LIMIT_BYTES: { kind: { type: 'int', min: 1024, max: 104857600 }, default: '31457280', doc: 'Largest POST /onboardings body (three base64 images).' },
  ONBOARDING_MAX_INFLIGHT_BYTES: {
    kind: { type: 'int', min: 0, max: 4294967296 },
    default: '134217728',
    doc: 'POST /onboardings bodies (by Content-Length) held at once; beyond it 503 OVERLOADED before a body is read (0 = no bound).',
  },
  ONBOARDING_MAX_BACKGROUND: {
    kind: { type: 'int', min: 1, max: 100000 },
    default: '256',
    doc: 'POST /onboardings finishes watched in the background at once (each reads its session every 250 ms until its results are stored, up to 10 min); an onboarding accepted beyond it is left to what finishes an SDK session in the configured RESULTS_MODE (webhooks and polling, polling, or webhooks; with webhook and MARK_COMPLETE, a queued status check too).',
  },
  REQUEST_TIMEOUT_MS: {
    kind: { type: 'int', min: 1000, max: 3600000 },
    default: '300000',
    doc: 'A request whose headers and body have not all arrived after this long gets 408 and its connection is closed, releasing its share of ONBOARDING_MAX_INFLIGHT_BYTES (handler time is not counted). 5 min fits a full ONBOARDING_BODY_LIMIT_BYTES upload (30 MiB) over a 1 Mbit/s uplink (about 250 s).',
  },
  CAPTURE_MIN_GLARE: { kind: { type: 'int', min: 0, max: 100 }, default: '10', doc: 'ID capture rejected below this glare score.' },
  CAPTURE_MIN_SHARPNESS: { kind: { type: 'int', min: 0, max: 100 }, default: '10', doc: 'ID capture rejected below this sharpness.' },
  CAPTURE_MIN_HORIZONTAL_RESOLUTION: { kind: { type: 'int', min: 0, max: 100000 }, default: '155', doc: 'ID capture rejected below this horizontalResolution.' },

  REDIS_URL: { kind: { type: 'string' }, doc: 'Redis for the rate limits shared by replicas (memory otherwise): redis://[:password@]host[:port][/db], rediss:// for TLS, host:port or a Unix socket path; Idempotency-Keys always live in the database.' },
  TRUST_PROXY_HOPS: { kind: { type: 'int', min: 0, max: 10 }, default: '0', doc: 'Load balancer hops in front; X-Forwarded-For is read only this deep.' },
  RATE_LIMIT_WINDOW_MS: { kind: { type: 'int', min: 1000, max: 86400000 }, default: '60000', doc: 'Window of the POST /session rate limits: fixed, each starting at its key\'s first hit, so up to twice a budget can pass across a window\'s end.' },
  RATE_LIMIT_PER_IP: { kind: { type: 'int', min: 0, max: 1000000 }, default: '30', doc: 'Sessions per client IP per window (0 = off).' },
  RATE_LIMIT_PER_IPV6_SITE: { kind: { type: 'int', min: 0, max: 1000000 }, default: '0', doc: 'Sessions per IPv6 /48 per window (0 = off): RATE_LIMIT_PER_IP counts an IPv6 client by its /64, and one /48 (a free tunnel broker hands out one) holds 65,536 of them. Off by default: a mobile carrier may put many users in one /48; set it well above one site\'s use.' },
  RATE_LIMIT_PER_CUSTOMER: { kind: { type: 'int', min: 0, max: 1000000 }, default: '10', doc: 'Sessions per externalCustomerId per window (0 = off), per app key, or across every user of the identity provider with CALLER_AUTH=jwt.' },
  RATE_LIMIT_PER_SUBJECT: { kind: { type: 'int', min: 0, max: 1000000 }, default: '10', doc: 'With CALLER_AUTH=jwt, sessions per token subject (one end user) per window, whatever its address or externalCustomerId (0 = off).' },
  RATE_LIMIT_GLOBAL: { kind: { type: 'int', min: 0, max: 100000000 }, default: '0', doc: 'Sessions per window for the whole service, a spend budget (0 = off).' },
  RATE_LIMIT_MEMORY_MAX_KEYS: { kind: { type: 'int', min: 1, max: 10000000 }, default: String(MEMORY_COUNTER_MAX_KEYS), doc: 'Without REDIS_URL (or while Redis is down), the most clients (addresses, networks, customer ids) the in-memory rate counter holds, about 140 bytes each; when full, a client it is not counting yet gets 429 until a window ends (rate_limit_counter_full_total counts them).' },
  CALLER_AUTH: { kind: { type: 'enum', values: ['none', 'app-keys', 'jwt'] }, default: 'none', doc: 'Who may call POST /session.' },
  APP_API_KEYS: { kind: { type: 'list' }, secret: true, default: '', doc: 'Keys accepted in X-App-Key when CALLER_AUTH=app-keys.' },
  JWT_JWKS_URL: { kind: { type: 'url' }, doc: 'JWKS of the customer\'s identity provider (CALLER_AUTH=jwt).' },
  JWT_ISSUER: { kind: { type: 'string' }, doc: 'Expected iss of caller JWTs.' },
  JWT_AUDIENCE: { kind: { type: 'string' }, doc: 'Expected aud of caller JWTs.' },
  JWT_CUSTOMER_ID_CLAIM: {
    kind: { type: 'string' },
    doc: 'The caller JWT claim naming the user (e.g. sub): POST /session\'s externalCustomerId is then that claim\'s value (filled in when absent, 403 CUSTOMER_ID_MISMATCH when another, CUSTOMER_ID_CLAIM_MISSING when the token has none usable), so no user starts sessions under, or spends the budget of, another\'s id; and POST /session/resume resumes only a session of that id. Unset, the id is whatever the app sends.',
  },
  IDEMPOTENCY_TTL_SECONDS: { kind: { type: 'int', min: 1, max: 604800 }, default: '86400', doc: 'How long an Idempotency-Key replays its session. A key whose first request is still running holds for max(60 s, 4 x INCODE_TIMEOUT_MS) whatever this is.' },
  RESUME_TOKEN_TTL_SECONDS: { kind: { type: 'int', min: 60, max: 7776000 }, default: '86400', doc: 'Lifetime of resume tokens.' },
  CIRCUIT_FAILURE_THRESHOLD: { kind: { type: 'int', min: 1, max: 1000 }, default: '5', doc: 'Consecutive failed Incode calls that open the circuit; each retry is a call (at INCODE_MAX_RETRIES=2, two requests failing through their retries open it at 5).' },
  CIRCUIT_RESET_MS: { kind: { type: 'int', min: 100, max: 3600000 }, default: '10000', doc: 'Open circuit waits this long before a probe.' },
  EVENT_LOOP_MAX_LAG_MS: { kind: { type: 'int', min: 0, max: 60000 }, default: '1000', doc: 'Shed load (503) above this event-loop delay (0 = off, else at least 10).' },
  SHUTDOWN_GRACE_MS: { kind: { type: 'int', min: 0, max: 600000 }, default: '10000', doc: 'Time for in-flight work at shutdown; connections still open after it are closed (a stalled upload cannot hold shutdown).' },
  READINESS_REQUIRES_INCODE: { kind: { type: 'bool' }, default: 'true', doc: 'false: /readyz stays 200 ("degraded") while Incode is unreachable, so an Incode outage does not take every replica out of the load balancer (the results API and webhooks keep working; Incode calls get 503 from the circuit).' },
  SHUTDOWN_DELAY_MS: { kind: { type: 'int', min: 0, max: 120000 }, default: '5000', doc: 'On SIGTERM, time spent answering /readyz with 503 while still serving, before new connections are refused: a load balancer stops routing here first (SIGINT skips it).' },

  EMULATOR_PROCESSING_DELAY_MS: { kind: { type: 'int', min: 0, max: 600000 }, default: '1500', doc: 'Sandbox: emulator delay before a session\'s processing finishes.' },
} as const satisfies Record<string, VarSpec>;

export type EnvName = keyof typeof ENV_SCHEMA;

export interface Config {
  nodeEnv: 'development' | 'test' | 'production';
  port: number;
  host: string;
  publicUrl: string;
  logLevel: string;
  logBufferBytes: number;
  corsOrigins: string[];
  /** No API key: the built-in emulator is the upstream. */
  sandbox: boolean;
  incode: {
    apiUrl: string;
    apiKey: string;
    clientId?: string;
    configurationId?: string;
    /** Flows a caller may name (the default flow among them); ['*']: any. */
    allowedConfigurationIds: string[];
    /** Origins a redirectionUrl may point to; empty: none; ['*']: any. */
    redirectionUrlOrigins: string[];
    executiveEmail?: string;
    executivePassword?: string;
    timeoutMs: number;
    captureTimeoutMs: number;
    connectTimeoutMs: number;
    poolConnections: number;
    maxRetries: number;
    maxConcurrency: number;
  };
  database: { url: string; schema: string; timeoutMs: number; poolMax: number; sqliteSynchronous: 'normal' | 'full' };
  encryption: { keys: { id: string; key: Buffer }[]; generated: boolean };
  retentionDays: number;
  retentionDeleteAtIncode: boolean;
  webhook: {
    clientId?: string;
    clientSecret?: string;
    /** The client secret a rotation replaces (WEBHOOK_CLIENT_SECRET_PREVIOUS), still taken. */
    previousClientSecret?: string;
    secret?: string;
    /** The static secret a rotation replaces (WEBHOOK_SECRET_PREVIOUS), still taken. */
    previousSecret?: string;
    secretHeader: string;
    tokenTtlSeconds: number;
    allowUnauthenticated: boolean;
  };
  results: {
    mode: 'webhook' | 'polling' | 'both';
    pollIntervalMs: number;
    pollMaxIntervalMs: number;
    pollGiveUpHours: number;
    jobMaxAttempts: number;
    jobBackoffMs: number;
    jobLeaseMs: number;
    workerConcurrency: number;
    markComplete: boolean;
  };
  adminApiKeys: string[];
  /** Bearer tokens for GET /metrics; empty: open. */
  metricsTokens: string[];
  /** CALLBACK_SECRET's secrets (several, space-separated, during a rotation; the new one first), each signing every callback. */
  callback: { url?: string; secrets: string[] };
  limits: { sessionBodyBytes: number; onboardingBodyBytes: number; onboardingInflightBytes: number; onboardingMaxBackground: number; requestTimeoutMs: number };
  capture: { minGlare: number; minSharpness: number; minHorizontalResolution: number };
  redisUrl?: string;
  trustProxyHops: number;
  rateLimit: { windowMs: number; perIp: number; perIpv6Site: number; perCustomer: number; perSubject: number; global: number; memoryMaxKeys: number };
  callerAuth: {
    mode: 'none' | 'app-keys' | 'jwt';
    appKeys: string[];
    jwksUrl?: string;
    issuer?: string;
    audience?: string;
    /** The JWT claim POST /session's externalCustomerId must be (JWT_CUSTOMER_ID_CLAIM), if any. */
    customerIdClaim?: string;
  };
  idempotencyTtlSeconds: number;
  resumeTokenTtlSeconds: number;
  circuit: { failureThreshold: number; resetMs: number };
  eventLoopMaxLagMs: number;
  shutdownGraceMs: number;
  /** Whether /readyz fails while Incode is unreachable (else it answers 200, "degraded"). */
  readinessRequiresIncode: boolean;
  /** SIGTERM: out of the load balancer's rotation (readiness 503) this long before the server closes. */
  shutdownDelayMs: number;
  emulator: { processingDelayMs: number };
  /** Variables set that look like a misspelling of one of this service's (which would be ignored): warned at start. */
  misspeltVariables: { name: string; meant: string }[];
}

type Env = Record<string, string | undefined>;

/** Edit distance with adjacent transpositions (optimal string alignment), stopping early past `max`. */
function editDistance(a: string, b: string, max: number): number {
  if (Math.abs(a.length - b.length) > max) return max + 1;
  let prev2: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, prev2[j - 2] + 1);
      row.push(d);
      best = Math.min(best, d);
    }
    if (best > max) return max + 1;
    prev2 = prev;
    prev = row;
  }
  return prev[b.length];
}

/**
 * Names in the environment one or two letters off a variable of this service (or in another case), with an
 * underscore in both: a typo that would otherwise be ignored without a word (RETENTION_DAY keeping data for the
 * default 30 days). Only warned: the environment also holds other programs' variables.
 */
function misspeltVariables(env: Env): { name: string; meant: string }[] {
  const known = Object.keys(ENV_SCHEMA).filter((k) => k.includes('_'));
  const found: { name: string; meant: string }[] = [];
  for (const name of Object.keys(env)) {
    if (!name.includes('_') || name in ENV_SCHEMA || name.length > 64) continue;
    const upper = name.toUpperCase();
    const meant = upper !== name && upper in ENV_SCHEMA ? upper : known.find((k) => editDistance(upper, k, 2) <= 2);
    if (meant) found.push({ name, meant });
  }
  return found;
}

function read(env: Env, name: EnvName): string | undefined {
  const spec: VarSpec = ENV_SCHEMA[name];
  const raw = env[name];
  const value = raw === undefined || raw.trim() === '' ? spec.default : raw.trim();
  if (value === undefined || value === '') return undefined;
  const kind = spec.kind;
  switch (kind.type) {
    case 'int': {
      if (!/^-?\d+$/.test(value)) throw new ConfigError(name, `must be a whole number, got "${spec.secret ? '***' : value}"`);
      const n = Number(value);
      if (kind.min !== undefined && n < kind.min) throw new ConfigError(name, `must be at least ${kind.min}, got ${n}`);
      if (kind.max !== undefined && n > kind.max) throw new ConfigError(name, `must be at most ${kind.max}, got ${n}`);
      return value;
    }
    case 'bool':
      if (!['true', 'false', '1', '0', 'yes', 'no'].includes(value.toLowerCase()))
        throw new ConfigError(name, `must be true or false, got "${value}"`);
      return value;
    case 'enum':
      if (!kind.values.includes(value)) throw new ConfigError(name, `must be one of ${kind.values.join(', ')}, got "${value}"`);
      return value;
    case 'url': {
      let u: URL;
      try {
        u = new URL(value);
      } catch {
        // Not echoed: a URL can carry credentials in its user info or query.
        throw new ConfigError(name, 'must be an absolute http(s) URL');
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError(name, `must use http or https, got "${u.protocol}"`);
      // Paths are appended to a base URL: a query or fragment would end up in the middle of every URL made from it.
      if (kind.base && (u.search || u.hash || u.username || u.password || value.includes('?') || value.includes('#')))
        throw new ConfigError(name, 'must be a base URL without query, fragment or user info (paths are appended to it)');
      return value.replace(/\/+$/, '');
    }
    default:
      return value;
  }
}

const str = (env: Env, name: EnvName) => read(env, name);
const int = (env: Env, name: EnvName) => Number(read(env, name));
const bool = (env: Env, name: EnvName) => ['true', '1', 'yes'].includes((read(env, name) ?? 'false').toLowerCase());
const list = (env: Env, name: EnvName) =>
  (read(env, name) ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

function parseKeys(raw: string | undefined): { id: string; key: Buffer }[] {
  if (!raw) return [];
  const parts = raw.split(',');
  // A key without an id is k1 when it is the only one. In a list, ids by position would rename a key when the list
  // is reordered for a rotation (OLD was k1; in NEW,OLD it would be k2 and NEW k1), and every value stored under
  // "k1" would then be read with the wrong key: each entry of a list names its id.
  if (parts.length > 1 && parts.some((part) => !(part.indexOf(':') > 0)))
    throw new ConfigError('DATA_ENCRYPTION_KEY', 'with several keys, give each its id (id:base64key): a key set alone without one is k1 (a rotation from it lists "k2:<new>,k1:<old>"), and a list written without ids named its keys by place, k1, k2... (write that list as "k1:<first>,k2:<second>" before reordering it)');
  const keys = parts.map((part, i) => {
    const idx = part.indexOf(':');
    const id = idx > 0 ? part.slice(0, idx).trim() : 'k1';
    const b64 = (idx > 0 ? part.slice(idx + 1) : part).trim();
    // Neither message quotes what was given: a key written the wrong way round (`<key>:<id>`) would be its "id".
    if (!/^[A-Za-z0-9_-]{1,32}$/.test(id)) throw new ConfigError('DATA_ENCRYPTION_KEY', `entry ${i + 1}: the key id (before ":") must be 1-32 letters, digits, _ or -`);
    // Exactly 32 bytes of base64 (or base64url): Node's decoder skips what is not base64 and stops at "=", so a list
    // written with another separator ("k2:<new>;k1:<old>") would start with the old key silently dropped.
    if (!/^(?:[A-Za-z0-9+/]{43}|[A-Za-z0-9_-]{43})=?$/.test(b64) || !/[AEIMQUYcgkosw048]=?$/.test(b64))
      throw new ConfigError('DATA_ENCRYPTION_KEY', `key "${id}" must be 32 bytes in base64 (openssl rand -base64 32), entries separated by commas`);
    return { id, key: Buffer.from(b64, 'base64') };
  });
  const ids = new Set<string>();
  const material = new Set<string>();
  for (const { id, key } of keys) {
    if (ids.has(id)) throw new ConfigError('DATA_ENCRYPTION_KEY', `key id "${id}" is listed twice: each key needs an id of its own`);
    // The same key under a new id would make a rotation that completes without changing the key.
    if (material.has(key.toString('hex'))) throw new ConfigError('DATA_ENCRYPTION_KEY', `key "${id}" is the same key as another id's: a rotation needs a new key`);
    ids.add(id);
    material.add(key.toString('hex'));
  }
  return keys;
}

/** An HTTP header name (RFC 9110 token), lowercased as Node presents them: another could never arrive. */
function headerName(env: Env, name: EnvName): string {
  const value = str(env, name)!;
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(value)) throw new ConfigError(name, 'must be an HTTP header name (letters, digits and - only, in practice)');
  return value.toLowerCase();
}

/**
 * Keys a client sends in a header: printable ASCII without spaces, or no request could ever match them (a bearer
 * token ends at its first space; header bytes are read as latin1).
 */
function headerKeys(name: EnvName, keys: readonly string[]): void {
  if (keys.some((k) => !/^[\x21-\x7e]+$/.test(k))) throw new ConfigError(name, 'keys must be printable ASCII without spaces (a header carries them)');
}

const MIN_SECRET = 16;
/** Fewer distinct characters than this in a production secret: a placeholder ("aaaa...", "1111..."), not a secret. */
const MIN_DISTINCT = 6;
const MIN_API_KEY = 24;

/**
 * Production refuses secrets a guess could reach: shorter than `min` (characters; bytes for a Buffer), or a
 * placeholder of fewer than MIN_DISTINCT distinct ones, however long. A list is a variable of several keys.
 */
function requireSecret(variable: EnvName, secrets: string | Buffer | readonly (string | Buffer)[] | undefined, min: number): void {
  if (secrets === undefined) return;
  const list = Array.isArray(secrets);
  for (const secret of list ? secrets : [secrets as string | Buffer]) {
    const unit = typeof secret === 'string' ? 'characters' : 'bytes';
    if (secret.length < min) throw new ConfigError(variable, `${list ? 'keys ' : ''}must be at least ${min} ${unit} in production`);
    const distinct = new Set<string | number>(typeof secret === 'string' ? secret : secret.values()).size;
    if (distinct < MIN_DISTINCT) throw new ConfigError(variable, `looks like a placeholder (${distinct} distinct ${unit}): use a random secret in production`);
  }
}

/** Loopback only: http:// there never leaves the machine (the benchmark and tests run against a local emulator). */
function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/** A Standard Webhooks "whsec_" secret is its decoded key, as the signer uses it; anything else its bytes. */
function callbackSecretKey(secret: string): Buffer {
  return secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret);
}

/** Every spelling createStore() accepts for an in-memory database. */
export function isInMemoryDatabase(url: string): boolean {
  const target = parseStoreUrl(url);
  return target?.engine === 'sqlite' && target.filename === IN_MEMORY;
}

/** A list that may be "*" (any) instead, never both: "*, https://a" would silently mean any. */
function wildcardOr(name: EnvName, entries: string[], what: string): string[] {
  if (entries.includes('*') && entries.length > 1) throw new ConfigError(name, `is either "*" or a list of ${what}, not both`);
  return entries;
}

/**
 * A list of exact http(s) origins, each as URL#origin spells it (so a trailing slash cannot make an entry that
 * never matches a browser's Origin), or `*` for any, which production refuses (`why` says what to list instead).
 */
function origins(env: Env, name: EnvName, production: boolean, why = ''): string[] {
  const entries = wildcardOr(name, list(env, name), 'origins');
  if (production && entries.includes('*')) throw new ConfigError(name, `must not be "*" in production${why}`);
  return entries.map((o, i) => {
    if (o === '*') return o;
    let u: URL | undefined;
    try {
      u = new URL(o);
    } catch {
      /* reported below */
    }
    if (!u || !/^https?:$/.test(u.protocol) || u.origin !== o.replace(/\/$/, ''))
      // The entry is named by its place, not echoed: a URL can carry credentials in its user info.
      throw new ConfigError(name, `entries must be exact origins like https://app.example.com (entry ${i + 1} is not)`);
    return u.origin;
  });
}

/** The API key goes with every Incode call: production sends it over https, or plain http to this machine only. */
export function refuseCleartextIncode(incodeApiUrl: string): void {
  refuseCleartext('INCODE_API_URL', incodeApiUrl, 'the API key would travel in cleartext');
}

function refuseCleartext(name: EnvName, url: string, why: string): void {
  const u = new URL(url);
  if (u.protocol !== 'https:' && !isLoopbackHost(u.hostname)) throw new ConfigError(name, `must use https in production (${why}); http is allowed to a loopback host only`);
}

/** The flows a caller may name: those listed and the default one, or ['*'] for any. */
function allowedFlows(listed: string[], defaultFlow: string | undefined): string[] {
  if (wildcardOr('INCODE_ALLOWED_CONFIGURATION_IDS', listed, 'flows').includes('*')) return listed;
  return defaultFlow && !listed.includes(defaultFlow) ? [...listed, defaultFlow] : listed;
}

/** Whether node-postgres can read the URL: it parses it with URL and percent-decodes the user and password. */
function isValidPostgresUrl(url: string): boolean {
  try {
    const u = new URL(url);
    decodeURIComponent(u.username);
    decodeURIComponent(u.password);
    return u.hostname !== '' || u.searchParams.has('host');
  } catch {
    return false;
  }
}

/** Where this process reaches itself: loopback when it listens on every interface, else the address it binds. */
export function selfAddress(host: string): string {
  if (host === '0.0.0.0' || host === '::' || host === '') return '127.0.0.1';
  return host.includes(':') ? `[${host}]` : host;
}

/**
 * REDIS_URL, checked: a value whose parts a password's unencoded "/" or "@" shifted would make ioredis connect
 * somewhere else or to its defaults, and the shared limits silently per process. The forms ioredis reads: a
 * redis:// or rediss:// URL, host:port without a scheme, or a Unix socket path.
 */
function redisUrl(env: Env): string | undefined {
  const value = str(env, 'REDIS_URL');
  if (value === undefined || value.startsWith('/')) return value;
  const refuse = (why: string) => new ConfigError('REDIS_URL', `${why}: redis://[:password@]host[:port][/db], rediss:// for TLS, host:port or a socket path; characters such as / # ? % @ in the password must be percent-encoded`);
  let u: URL;
  try {
    u = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `redis://${value}`);
  } catch {
    throw refuse('is not a valid URL');
  }
  // The scheme is not echoed: a value without "//" would show a user name there.
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw refuse('must use redis: or rediss:');
  if (!u.hostname) throw refuse('must name a host');
  // ioredis reads the path as the database number.
  if (!/^(\/\d*)?$/.test(u.pathname) || u.hash) throw refuse('may end only in a database number');
  return value;
}

/** Pure apart from generating the sandbox's throwaway keys: same env in, same config out. */
export function loadConfig(env: Env): Config {
  const nodeEnv = str(env, 'NODE_ENV') as Config['nodeEnv'];
  const production = nodeEnv === 'production';
  const port = int(env, 'PORT');
  const apiKey = str(env, 'INCODE_API_KEY');
  // Sent as the x-api-key header: a line break or control character pasted in with it would fail every call as a
  // connection error, which sends the operator looking at the network.
  if (apiKey && /[^\x20-\x7e]/.test(apiKey))
    throw new ConfigError('INCODE_API_KEY', 'holds a character an HTTP header cannot carry (a line break, tab or other control or non-ASCII character, often pasted in with it)');
  const host = str(env, 'HOST')!;
  // An address or a name, as listen() takes it and as the sandbox's own URL is built from it (an IPv6 address goes in
  // brackets there, so it may not bring its own, nor a zone or a port).
  if (!(isIP(host) && !host.includes('%')) && !/^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?$/.test(host))
    throw new ConfigError('HOST', 'must be an IP address or a host name, without brackets, zone, port or spaces');
  const sandbox = !apiKey;
  // The built-in emulator is called over loopback at this service's own port, which must therefore be known.
  if (sandbox && port === 0) throw new ConfigError('PORT', 'must not be 0 in sandbox mode: the built-in Incode emulator is reached at this service\'s own port');
  if (production && sandbox) throw new ConfigError('INCODE_API_KEY', 'is required when NODE_ENV=production (sandbox mode is for development only)');

  let keys = parseKeys(str(env, 'DATA_ENCRYPTION_KEY'));
  let generated = false;
  if (keys.length === 0) {
    if (!sandbox) throw new ConfigError('DATA_ENCRYPTION_KEY', 'is required with INCODE_API_KEY: stored PII must be encrypted under a key you keep (openssl rand -base64 32)');
    keys = [{ id: 'sandbox', key: randomBytes(32) }];
    generated = true;
  }

  const corsOrigins = origins(env, 'CORS_ORIGINS', production);

  const webhook = {
    clientId: str(env, 'WEBHOOK_CLIENT_ID'),
    clientSecret: str(env, 'WEBHOOK_CLIENT_SECRET'),
    previousClientSecret: str(env, 'WEBHOOK_CLIENT_SECRET_PREVIOUS'),
    secret: str(env, 'WEBHOOK_SECRET'),
    previousSecret: str(env, 'WEBHOOK_SECRET_PREVIOUS'),
    secretHeader: headerName(env, 'WEBHOOK_SECRET_HEADER'),
    tokenTtlSeconds: int(env, 'WEBHOOK_TOKEN_TTL_SECONDS'),
    allowUnauthenticated: bool(env, 'WEBHOOK_ALLOW_UNAUTHENTICATED'),
  };
  if (!!webhook.clientId !== !!webhook.clientSecret)
    throw new ConfigError(webhook.clientId ? 'WEBHOOK_CLIENT_SECRET' : 'WEBHOOK_CLIENT_ID', 'must be set together with its pair');
  if (webhook.secret) headerKeys('WEBHOOK_SECRET', [webhook.secret]);
  for (const [previous, current, name, currentName] of [
    [webhook.previousClientSecret, webhook.clientSecret, 'WEBHOOK_CLIENT_SECRET_PREVIOUS', 'WEBHOOK_CLIENT_SECRET'],
    [webhook.previousSecret, webhook.secret, 'WEBHOOK_SECRET_PREVIOUS', 'WEBHOOK_SECRET'],
  ] as const) {
    if (previous === undefined) continue;
    if (!current) throw new ConfigError(name, `is the secret a rotation replaces: set the new one in ${currentName}`);
    if (previous === current) throw new ConfigError(name, `must differ from ${currentName} (remove it once the rotation is over)`);
    if (production) requireSecret(name, previous, MIN_SECRET);
  }
  if (webhook.previousSecret) headerKeys('WEBHOOK_SECRET_PREVIOUS', [webhook.previousSecret]);
  if (production) {
    if (webhook.allowUnauthenticated) throw new ConfigError('WEBHOOK_ALLOW_UNAUTHENTICATED', 'must not be true in production');
    if (!webhook.secret && !webhook.clientSecret) throw new ConfigError('WEBHOOK_CLIENT_SECRET', 'or WEBHOOK_SECRET is required in production: webhooks must be authenticated');
    requireSecret('WEBHOOK_SECRET', webhook.secret, MIN_SECRET);
    requireSecret('WEBHOOK_CLIENT_SECRET', webhook.clientSecret, MIN_SECRET);
    requireSecret('DATA_ENCRYPTION_KEY', keys.map((k) => k.key), 32);
  }

  const adminApiKeys = list(env, 'ADMIN_API_KEYS');
  headerKeys('ADMIN_API_KEYS', adminApiKeys);
  if (production) {
    if (adminApiKeys.length === 0) throw new ConfigError('ADMIN_API_KEYS', 'is required in production: the results API must be protected');
    requireSecret('ADMIN_API_KEYS', adminApiKeys, MIN_API_KEY);
  }
  const metricsTokens = list(env, 'METRICS_TOKENS');
  headerKeys('METRICS_TOKENS', metricsTokens);
  if (production) requireSecret('METRICS_TOKENS', metricsTokens, MIN_API_KEY);

  const callerAuthMode = str(env, 'CALLER_AUTH') as Config['callerAuth']['mode'];
  const appKeys = list(env, 'APP_API_KEYS');
  headerKeys('APP_API_KEYS', appKeys);
  if (callerAuthMode === 'app-keys' && appKeys.length === 0) throw new ConfigError('APP_API_KEYS', 'is required when CALLER_AUTH=app-keys');
  if (production) requireSecret('APP_API_KEYS', appKeys, MIN_API_KEY);
  // In every environment: app keys ship inside frontends, so one that also opens the results API leaks all PII.
  if (appKeys.some((k) => adminApiKeys.includes(k)))
    throw new ConfigError('APP_API_KEYS', 'must not contain a key of ADMIN_API_KEYS: app keys ship in frontends, service keys read personal data');
  if (appKeys.some((k) => metricsTokens.includes(k))) throw new ConfigError('METRICS_TOKENS', 'must not contain a key of APP_API_KEYS: app keys ship in frontends');
  // A service key opens every session's personal data: none may double as a secret held by a scraper or by Incode.
  if (metricsTokens.some((k) => adminApiKeys.includes(k)))
    throw new ConfigError('METRICS_TOKENS', 'must not contain a key of ADMIN_API_KEYS: a scraper\'s token would read personal data');
  for (const [name, secret] of [
    ['WEBHOOK_SECRET', webhook.secret],
    ['WEBHOOK_CLIENT_SECRET', webhook.clientSecret],
    ['WEBHOOK_SECRET_PREVIOUS', webhook.previousSecret],
    ['WEBHOOK_CLIENT_SECRET_PREVIOUS', webhook.previousClientSecret],
  ] as const) {
    if (secret && adminApiKeys.includes(secret))
      throw new ConfigError(name, 'must not be a key of ADMIN_API_KEYS: the secret Incode holds would read personal data');
    // An app key ships in frontends and a scraper's token sits in its configuration: either would let its holder post
    // webhooks, each one a status check at Incode.
    for (const [list, keys] of [['APP_API_KEYS', appKeys], ['METRICS_TOKENS', metricsTokens]] as const)
      if (secret && keys.includes(secret)) throw new ConfigError(name, `must not be a key of ${list}: whoever holds that key could post webhooks`);
  }
  const jwksUrl = str(env, 'JWT_JWKS_URL');
  if (callerAuthMode === 'jwt') {
    if (!jwksUrl) throw new ConfigError('JWT_JWKS_URL', 'is required when CALLER_AUTH=jwt');
    if (!str(env, 'JWT_ISSUER')) throw new ConfigError('JWT_ISSUER', 'is required when CALLER_AUTH=jwt');
    if (!str(env, 'JWT_AUDIENCE')) throw new ConfigError('JWT_AUDIENCE', 'is required when CALLER_AUTH=jwt');
    if (production) refuseCleartext('JWT_JWKS_URL', jwksUrl, 'whoever sits on the path could serve its own keys and sign as any caller');
  }
  const customerIdClaim = str(env, 'JWT_CUSTOMER_ID_CLAIM');
  if (customerIdClaim !== undefined && callerAuthMode !== 'jwt') throw new ConfigError('JWT_CUSTOMER_ID_CLAIM', 'applies only when CALLER_AUTH=jwt');
  if (customerIdClaim !== undefined && !/^\S{1,256}$/.test(customerIdClaim)) throw new ConfigError('JWT_CUSTOMER_ID_CLAIM', 'must be a claim name (no spaces)');

  const redirectionUrlOrigins = origins(env, 'REDIRECTION_URL_ORIGINS', production, ': list the origins a session may redirect to');
  // A link to the bank's onboarding that ends on any site is a phishing kit: whoever starts the session holds its token.
  const allowedConfigurationIds = allowedFlows(list(env, 'INCODE_ALLOWED_CONFIGURATION_IDS'), str(env, 'INCODE_CONFIGURATION_ID'));

  // Several "whsec_" secrets, separated by spaces, during a rotation: each signs every callback (the first is the new
  // one). A value whose words are not all "whsec_" is one raw secret, spaces included, as it always was.
  const rawCallbackSecret = str(env, 'CALLBACK_SECRET');
  const words = (rawCallbackSecret ?? '').split(/\s+/).filter(Boolean);
  const whsec = words.filter((w) => w.startsWith('whsec_')).length;
  // Mixed, it is neither: a rotation from or to a raw secret cannot be told from a raw secret with a space in it.
  if (words.length > 1 && whsec > 0 && whsec < words.length)
    throw new ConfigError('CALLBACK_SECRET', 'several secrets (a rotation) must all be "whsec_" secrets; a raw secret is one value');
  const callbackSecrets = words.length > 1 && whsec === words.length ? words : rawCallbackSecret ? [rawCallbackSecret] : [];
  const callback = { url: str(env, 'CALLBACK_URL'), secrets: callbackSecrets };
  if (callback.url && !callbackSecrets.length) throw new ConfigError('CALLBACK_SECRET', 'is required when CALLBACK_URL is set');
  if (callbackSecrets.length > 3) throw new ConfigError('CALLBACK_SECRET', 'holds at most 3 secrets (the new one first, during a rotation)');
  for (const secret of callbackSecrets) {
    // Standard Webhooks libraries read a raw secret one byte per character (charCodeAt), not as UTF-8: an accented
    // letter or a euro sign would be other bytes there, and every signature would fail at the receiver.
    if (!secret.startsWith('whsec_') && !/^[\x20-\x7E]+$/.test(secret))
      throw new ConfigError('CALLBACK_SECRET', 'a raw secret must be printable ASCII, as Standard Webhooks libraries read it one byte per character (use a "whsec_" secret for any bytes)');
    // Node decodes base64 leniently (it skips what is not base64): a receiver's Standard Webhooks library would refuse
    // such a secret, or read other bytes from it, and every signature would fail there.
    if (secret.startsWith('whsec_') && !/^(?=.)(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(secret.slice(6)))
      throw new ConfigError('CALLBACK_SECRET', 'must be "whsec_" followed by standard base64 (with its padding), as Standard Webhooks libraries read it');
    // By the bytes it signs with (a "whsec_" prefix alone has six distinct characters).
    if (production) requireSecret('CALLBACK_SECRET', callbackSecretKey(secret), MIN_SECRET);
  }
  // The keys that open something here (the results API, webhooks, metrics, session starts), by who holds them.
  const held = [
    ['ADMIN_API_KEYS', adminApiKeys],
    ['METRICS_TOKENS', metricsTokens],
    ['APP_API_KEYS', appKeys],
    ['WEBHOOK_SECRET', [webhook.secret, webhook.previousSecret].filter((k) => k !== undefined)],
    ['WEBHOOK_CLIENT_SECRET', [webhook.clientSecret, webhook.previousClientSecret].filter((k) => k !== undefined)],
  ] as const;
  // The callback's receiver holds its secret, and Incode's API key is Incode's and this service's: neither may open
  // anything else (whoever holds one would hold the other).
  for (const [list, keys] of held) {
    if (callbackSecrets.some((s) => keys.includes(s))) throw new ConfigError('CALLBACK_SECRET', `must not be a key of ${list}: the customer's receiver holds it`);
    if (apiKey && keys.includes(apiKey)) throw new ConfigError(list, 'must not contain the INCODE_API_KEY: each secret has one holder');
  }
  if (apiKey && callbackSecrets.includes(apiKey)) throw new ConfigError('CALLBACK_SECRET', "must not be the INCODE_API_KEY: the customer's receiver holds it");
  if (production && callback.url) refuseCleartext('CALLBACK_URL', callback.url, 'decisions would travel in cleartext');

  const executiveEmail = str(env, 'INCODE_EXECUTIVE_EMAIL');
  const executivePassword = str(env, 'INCODE_EXECUTIVE_PASSWORD');
  if (!!executiveEmail !== !!executivePassword)
    throw new ConfigError(executiveEmail ? 'INCODE_EXECUTIVE_PASSWORD' : 'INCODE_EXECUTIVE_EMAIL', 'must be set together with its pair');
  // Incode deletes only under an executive token: without one every deletion would be dead-lettered, silently keeping data.
  const retentionDeleteAtIncode = bool(env, 'RETENTION_DELETE_AT_INCODE');
  if (retentionDeleteAtIncode && !executiveEmail && !sandbox)
    throw new ConfigError('RETENTION_DELETE_AT_INCODE', 'needs INCODE_EXECUTIVE_EMAIL and INCODE_EXECUTIVE_PASSWORD: Incode deletes sessions only under an executive token');

  let databaseUrl = str(env, 'DATABASE_URL')!;
  const store = parseStoreUrl(databaseUrl);
  if (!store) throw new ConfigError('DATABASE_URL', 'must start with sqlite: or postgres://');
  // Checked here so that a bad value stops the start with the variable's name, never echoing it (it may hold a password).
  if (store.engine === 'sqlite' && !store.filename) throw new ConfigError('DATABASE_URL', 'sqlite: needs a file path or :memory: (e.g. sqlite:./data/broker.db)');
  if (store.engine === 'postgres' && !isValidPostgresUrl(databaseUrl))
    throw new ConfigError('DATABASE_URL', 'is not a valid URL (characters such as / # ? % @ in the password must be percent-encoded, or give the password in PGPASSWORD)');
  const databaseSchema = str(env, 'DATABASE_SCHEMA')!;
  if (!isSchemaName(databaseSchema)) throw new ConfigError('DATABASE_SCHEMA', 'must be lowercase letters, digits and _ (at most 63, not starting with a digit, nor pg_ or information_schema, which PostgreSQL keeps)');
  // The store puts the URL's options before its own search_path (splitPgOptions), where the later wins: one named in
  // them would be silently overridden, so it is refused by name instead.
  if (store.engine === 'postgres' && /search_path/i.test(splitPgOptions(databaseUrl).options ?? ''))
    throw new ConfigError('DATABASE_URL', 'sets search_path in its options: the service sets it on every connection; name the schema in DATABASE_SCHEMA instead');
  if (production && isInMemoryDatabase(databaseUrl))
    throw new ConfigError('DATABASE_URL', 'must not be an in-memory database in production: every session, result and queued job would be lost on restart');
  if (generated) {
    // Data encrypted under a throwaway key is unreadable after a restart: keep it in memory, or refuse.
    const explicit = env.DATABASE_URL !== undefined && env.DATABASE_URL.trim() !== '';
    if (!explicit) databaseUrl = 'sqlite::memory:';
    else if (!isInMemoryDatabase(databaseUrl))
      throw new ConfigError('DATA_ENCRYPTION_KEY', 'is required with a persistent DATABASE_URL (data under a throwaway sandbox key could not be read after a restart)');
  }

  const pollIntervalMs = int(env, 'POLL_INTERVAL_MS');
  const pollMaxIntervalMs = int(env, 'POLL_MAX_INTERVAL_MS');
  if (pollMaxIntervalMs < pollIntervalMs) throw new ConfigError('POLL_MAX_INTERVAL_MS', `must be at least POLL_INTERVAL_MS (${pollIntervalMs})`);

  // The lag is sampled every 10 ms and measured above that resolution: a smaller limit sheds on ordinary scheduling noise.
  const eventLoopMaxLagMs = int(env, 'EVENT_LOOP_MAX_LAG_MS');
  if (eventLoopMaxLagMs > 0 && eventLoopMaxLagMs < 10)
    throw new ConfigError('EVENT_LOOP_MAX_LAG_MS', `must be 0 (off) or at least 10 (the lag is sampled at a 10 ms resolution), got ${eventLoopMaxLagMs}`);

  const publicUrl = str(env, 'PUBLIC_URL') ?? `http://localhost:${port}`;
  const incodeApiUrl = str(env, 'INCODE_API_URL')!;
  // The key-authenticated API is the base; the SDK's token-only URL is derived from it (base + /0/), and the
  // executive login never lives under /0/, so a base that already ends there would break both.
  if (/\/0\/?$/.test(new URL(incodeApiUrl).pathname))
    throw new ConfigError('INCODE_API_URL', 'must be the API base (e.g. https://demo-api.incodesmile.com), not its token-only /0/ URL');
  // (Production without an API key was refused above: sandbox mode never gets here.)
  if (production) refuseCleartextIncode(incodeApiUrl);

  return {
    misspeltVariables: misspeltVariables(env),
    nodeEnv,
    port,
    host,
    publicUrl,
    logLevel: str(env, 'LOG_LEVEL')!,
    logBufferBytes: int(env, 'LOG_BUFFER_BYTES'),
    corsOrigins,
    sandbox,
    incode: {
      // In sandbox mode the upstream is the emulator mounted in this process, called over loopback like Incode.
      apiUrl: sandbox ? `http://${selfAddress(host)}:${port}/sandbox/incode` : incodeApiUrl,
      // Random per process: the emulator's admin routes (sessions, their customer ids, minted tokens) take this key,
      // and a sandbox bound to a reachable address must not open them to anyone who read this file.
      apiKey: apiKey ?? `sandbox-${randomBytes(18).toString('base64url')}`,
      clientId: str(env, 'INCODE_CLIENT_ID') ?? (sandbox ? 'sandbox' : undefined),
      configurationId: str(env, 'INCODE_CONFIGURATION_ID'),
      allowedConfigurationIds,
      redirectionUrlOrigins,
      executiveEmail: executiveEmail ?? (sandbox ? 'sandbox@example.com' : undefined),
      executivePassword: executivePassword ?? (sandbox ? `sandbox-${randomBytes(18).toString('base64url')}` : undefined),
      timeoutMs: int(env, 'INCODE_TIMEOUT_MS'),
      captureTimeoutMs: int(env, 'INCODE_CAPTURE_TIMEOUT_MS'),
      connectTimeoutMs: int(env, 'INCODE_CONNECT_TIMEOUT_MS'),
      poolConnections: int(env, 'INCODE_POOL_CONNECTIONS'),
      maxRetries: int(env, 'INCODE_MAX_RETRIES'),
      maxConcurrency: int(env, 'INCODE_MAX_CONCURRENCY'),
    },
    database: { url: databaseUrl, schema: databaseSchema, timeoutMs: int(env, 'DATABASE_TIMEOUT_MS'), poolMax: int(env, 'DATABASE_POOL_MAX'), sqliteSynchronous: str(env, 'SQLITE_SYNCHRONOUS') as 'normal' | 'full' },
    encryption: { keys, generated },
    retentionDays: int(env, 'RETENTION_DAYS'),
    retentionDeleteAtIncode,
    webhook,
    results: {
      mode: str(env, 'RESULTS_MODE') as Config['results']['mode'],
      pollIntervalMs,
      pollMaxIntervalMs,
      pollGiveUpHours: int(env, 'POLL_GIVE_UP_HOURS'),
      jobMaxAttempts: int(env, 'JOB_MAX_ATTEMPTS'),
      jobBackoffMs: int(env, 'JOB_BACKOFF_MS'),
      jobLeaseMs: int(env, 'JOB_LEASE_MS'),
      workerConcurrency: int(env, 'WORKER_CONCURRENCY'),
      markComplete: bool(env, 'MARK_COMPLETE'),
    },
    adminApiKeys,
    metricsTokens,
    callback,
    limits: {
      sessionBodyBytes: int(env, 'SESSION_BODY_LIMIT_BYTES'),
      onboardingBodyBytes: int(env, 'ONBOARDING_BODY_LIMIT_BYTES'),
      onboardingInflightBytes: int(env, 'ONBOARDING_MAX_INFLIGHT_BYTES'),
      onboardingMaxBackground: int(env, 'ONBOARDING_MAX_BACKGROUND'),
      requestTimeoutMs: int(env, 'REQUEST_TIMEOUT_MS'),
    },
    capture: {
      minGlare: int(env, 'CAPTURE_MIN_GLARE'),
      minSharpness: int(env, 'CAPTURE_MIN_SHARPNESS'),
      minHorizontalResolution: int(env, 'CAPTURE_MIN_HORIZONTAL_RESOLUTION'),
    },
    redisUrl: redisUrl(env),
    trustProxyHops: int(env, 'TRUST_PROXY_HOPS'),
    rateLimit: {
      windowMs: int(env, 'RATE_LIMIT_WINDOW_MS'),
      perIp: int(env, 'RATE_LIMIT_PER_IP'),
      perIpv6Site: int(env, 'RATE_LIMIT_PER_IPV6_SITE'),
      perCustomer: int(env, 'RATE_LIMIT_PER_CUSTOMER'),
      perSubject: int(env, 'RATE_LIMIT_PER_SUBJECT'),
      global: int(env, 'RATE_LIMIT_GLOBAL'),
      memoryMaxKeys: int(env, 'RATE_LIMIT_MEMORY_MAX_KEYS'),
    },
    callerAuth: {
      mode: callerAuthMode,
      appKeys,
      jwksUrl,
      issuer: str(env, 'JWT_ISSUER'),
      audience: str(env, 'JWT_AUDIENCE'),
      customerIdClaim,
    },
    idempotencyTtlSeconds: int(env, 'IDEMPOTENCY_TTL_SECONDS'),
    resumeTokenTtlSeconds: int(env, 'RESUME_TOKEN_TTL_SECONDS'),
    circuit: { failureThreshold: int(env, 'CIRCUIT_FAILURE_THRESHOLD'), resetMs: int(env, 'CIRCUIT_RESET_MS') },
    eventLoopMaxLagMs,
    shutdownGraceMs: int(env, 'SHUTDOWN_GRACE_MS'),
    shutdownDelayMs: int(env, 'SHUTDOWN_DELAY_MS'),
    readinessRequiresIncode: bool(env, 'READINESS_REQUIRES_INCODE'),
    emulator: { processingDelayMs: int(env, 'EMULATOR_PROCESSING_DELAY_MS') },
  };
}
