// TypeBox schemas shared by several routes: the error body every route declares for its 4xx/5xx.
import { Type, type TSchema } from '@sinclair/typebox';

export const ErrorBody = Type.Object(
  {
    code: Type.String({ description: "Stable machine-readable error code (the README's error table lists them by status)" }),
    message: Type.String(),
    requestId: Type.Optional(Type.String()),
    interviewId: Type.Optional(Type.String({ description: 'The session an error is about, where there is one (ONBOARDING_NOT_COMPLETED)' })),
  },
  { $id: 'ErrorBody', additionalProperties: true },
);

const errorRef = Type.Ref('ErrorBody');

/** A session's decision, wherever it is answered: null until its results are in. */
export const Decision = Type.Union([Type.Literal('approve'), Type.Literal('decline'), Type.Literal('review'), Type.Null()]);
/** Where a session's results stand, wherever it is answered. */
export const ResultsStatus = Type.Union(['pending', 'ready', 'failed', 'unprocessable', 'erased'].map((s) => Type.Literal(s)));

const EventTime = (description: string) => Type.String({ format: 'date-time', description });
const CALLBACK_DATA = {
  interviewId: Type.String(),
  onboardingStatus: Type.String({ description: "The session's last status this service read (UNKNOWN when it has read none); Incode's list grows, so any text" }),
  updatedAt: EventTime("The session's last change as the event left: order a session's events by it"),
};

/**
 * The bodies of the customer callbacks (CALLBACK_URL), signed per Standard Webhooks: published in the OpenAPI document
 * (x-webhooks), and each one sent is checked against them by the tests.
 */
export const ResultsReadyEvent = Type.Object(
  {
    type: Type.Literal('session.results_ready'),
    timestamp: EventTime('When the results were stored: the same on every attempt of one webhook-id'),
    // Never null here: stored results always have a decision.
    data: Type.Object({ ...CALLBACK_DATA, decision: Type.Union([Type.Literal('approve'), Type.Literal('decline'), Type.Literal('review')]) }, { additionalProperties: false }),
  },
  { $id: 'ResultsReadyEvent', additionalProperties: false, description: 'Results were stored: read them with GET /sessions/{interviewId}' },
);
export const ResultsFailedEvent = Type.Object(
  {
    type: Type.Literal('session.results_failed'),
    timestamp: EventTime('When the results were marked failed: the same on every attempt of one webhook-id'),
    data: Type.Object(
      { ...CALLBACK_DATA, resultsStatus: Type.Literal('failed'), code: Type.String({ description: 'Why (an open set: SESSION_EXPIRED, POLLING_GAVE_UP, INCODE_SESSION_GONE, CAPTURE_REJECTED, an INCODE_... code...)' }) },
      { additionalProperties: false },
    ),
  },
  { $id: 'ResultsFailedEvent', additionalProperties: false, description: "The session's results failed for good (its latest failure only)" },
);

const CALLBACK_HEADERS = [
  ['webhook-id', "The event's id, the same on every attempt of it: dedupe by it"],
  ['webhook-timestamp', "The attempt's time (Unix seconds): refuse one far from your clock"],
  ['webhook-signature', 'v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>"> per CALLBACK_SECRET, space-separated: verify it over the body as it arrived, before parsing'],
].map(([name, description]) => ({ name, in: 'header', required: true, description, schema: { type: 'string' } }));

/**
 * The document with the customer callbacks: under x-webhooks (OpenAPI 3.0 has no webhooks; documentation tools read
 * x-webhooks); their bodies are named schemas (added to the app as shared schemas, which the generator renders as
 * OpenAPI 3.0, as it does ErrorBody) a receiver's types can be generated from.
 */
export function withCallbacks<D extends object>(doc: D): D {
  const callback = (schema: string, summary: string) => ({
    post: {
      summary,
      description: 'Sent to CALLBACK_URL, signed per Standard Webhooks (https://www.standardwebhooks.com/)',
      parameters: CALLBACK_HEADERS,
      requestBody: { required: true, content: { 'application/json': { schema: { $ref: `#/components/schemas/${schema}` } } } },
      responses: { '2XX': { description: 'Taken: the event is not sent again' }, default: { description: 'Anything else, or no answer within 10 s: sent again with backoff' } } },
  });
  return {
    ...doc,
    'x-webhooks': {
      'session.results_ready': callback('ResultsReadyEvent', 'Results stored'),
      'session.results_failed': callback('ResultsFailedEvent', 'Results failed for good'),
    },
  };
}

/** A status answered either by the route itself (schema) or by the error handler (e.g. 503 while shutting down). */
export function orError(schema: TSchema): TSchema {
  return Type.Union([schema, errorRef]);
}

/**
 * Error statuses any route can give, whatever it does: a malformed request or a header sent twice (400), a compressed
 * body (415), a fault (500), shutdown or load shedding (503).
 */
const EVERY_ROUTE = [400, 415, 500, 503];
/** A route that reads a body (any POST or DELETE: one may be sent) adds 413, and 408 for one still arriving after REQUEST_TIMEOUT_MS. */
export const WITH_BODY = [408, 413];
/** A route with a path parameter adds 414: one longer than the router takes is refused before the route runs. */
export const WITH_PATH_PARAM = [414];
/** A route behind a rate limit adds 429. */
export const RATE_LIMITED = [429];

/** What each status means, as the OpenAPI document says it (never its generator's "Default Response"). */
const STATUS_DESCRIPTIONS: Readonly<Record<number, string>> = {
  200: 'Success',
  202: 'Accepted: the work goes on in the background',
  400: 'Invalid request: `code` says which check failed',
  401: 'Missing or invalid credentials',
  403: 'Forbidden',
  404: 'Not found',
  408: 'The request body was still arriving after REQUEST_TIMEOUT_MS',
  409: 'Conflict with the state of the session or of the Idempotency-Key',
  413: 'Body too large',
  414: 'URL too long',
  415: 'Unsupported media type or content encoding',
  422: 'Refused for its content (a reused Idempotency-Key, a rejected capture)',
  429: 'Rate limited: retry after Retry-After seconds',
  500: 'Unexpected error (never with internals)',
  502: 'Incode failed or refused the call',
  503: 'Unavailable for now (shutting down, overloaded, a circuit open, the database down): retry after Retry-After seconds',
  504: 'Incode timed out',
};

const header = (type: 'string' | 'integer', description: string) => ({ type, description });
/** Every answer carries its request id, the one every log line of the request carries. */
const REQUEST_ID = { 'x-request-id': header('string', 'The request id: the one you sent when it is valid, else a new one; every log line of the request carries it') };
const RETRY_AFTER = { 'retry-after': header('integer', 'Seconds to wait before retrying') };
const STATUS_HEADERS: Readonly<Record<number, Record<string, { type: string; description: string }>>> = {
  401: { 'www-authenticate': header('string', 'The credentials expected (not sent for a refused resume token)') },
  409: { 'retry-after': header('integer', 'With IDEMPOTENCY_IN_PROGRESS: seconds before a retry') },
  429: { ...RETRY_AFTER, 'x-ratelimit-limit': header('integer', 'The limit that was reached, in its window (RATE_LIMIT_WINDOW_MS for sessions; a minute for failed webhook token requests); absent when no limit was reached but the service counts too many clients to count one more') },
  503: RETRY_AFTER,
};

/**
 * A response as the OpenAPI document shows it: its description and the headers it carries, in the two keywords
 * @fastify/swagger reads from a response schema and the serializer ignores. The description goes in its own keyword
 * (but beside a reference), not `description`: fast-json-stringify copies a union's keywords into each branch, and
 * would refuse to merge two descriptions.
 */
function documented(status: number, schema: TSchema): TSchema {
  const description = schema.description ?? STATUS_DESCRIPTIONS[status] ?? 'Answer';
  // A reference is resolved before its own keywords are read: its description stays beside it (a ref is no union).
  return { ...schema, 'x-response-description': description, ...('$ref' in schema ? { description } : {}), headers: { ...REQUEST_ID, ...STATUS_HEADERS[status] } } as TSchema;
}

/**
 * Response map with the given schemas (success statuses, and error statuses a route answers with a body of its own)
 * plus the error body for every other error status the route can give, each with its description and headers.
 */
export function withErrors<T extends Record<number, TSchema>>(own: T, statuses: number[] = []): Record<number, TSchema> {
  const out: Record<number, TSchema> = {};
  for (const [s, schema] of Object.entries(own)) out[Number(s)] = documented(Number(s), schema);
  for (const s of [...EVERY_ROUTE, ...statuses]) out[s] ??= documented(s, errorRef);
  return out;
}

/**
 * The characters that change how text reads rather than what it says, as the inside of a character class: C0 and C1
 * controls (a terminal's escape sequences among them), bidirectional overrides and isolates, and those that display
 * as nothing on their own (the soft hyphen, the combining grapheme joiner, Hangul and Khmer fillers, the Mongolian
 * vowel separator, the zero-width space, direction marks, the Arabic letter mark, word joiners and invisible operators,
 * a BOM, line and paragraph separators). The zero-width joiner and non-joiner and the variation selectors are not
 * among them: Persian, Indic scripts and emoji are written with them.
 */
export const MISLEADING_CHARACTERS =
  '\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u034f\\u061c\\u115f\\u1160\\u17b4\\u17b5\\u180e\\u200b\\u200e\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\u3164\\ufeff\\uffa0';

/**
 * A customer id: no C0/C1 controls, no bidirectional overrides or isolates, and no characters that display as nothing
 * on their own (the soft hyphen, the combining grapheme joiner, the Hangul and Khmer fillers, the Mongolian vowel
 * separator, the zero-width space, direction marks, the Arabic letter mark, word joiners and invisible operators, a
 * BOM, line and paragraph separators), any of which would let an id display as another one (`ab\u200bcd` as `abcd`) in
 * Incode's dashboard, on the operator page and in logs of the customer's own systems; no lone surrogate either, which
 * UTF-8 cannot carry (the stored id would read U+FFFD in its place, no longer the id the customer sent). The zero-width
 * joiner and non-joiner and the variation selectors stay: they are part of how Persian, Indic scripts and emoji are
 * written. Compiled with the `u` flag (Ajv does; so must any other use), so a well-formed pair is one code point
 * outside the range and passes.
 */
export const CUSTOMER_ID_PATTERN = `^[^${MISLEADING_CHARACTERS}\\ud800-\\udfff]+$`;

/** The app's own session token, for routes that answer a session about itself (never PII). */
export const SessionTokenHeaders = Type.Object({ 'x-incode-hardware-id': Type.Optional(Type.String({ maxLength: 4096 })) });

/** The Idempotency-Key header of a route that starts billable sessions; `description` says what a retry gets. */
export const IdempotencyKeyHeaders = (description?: string, minLength = 1) =>
  Type.Object({ 'idempotency-key': Type.Optional(Type.String({ minLength, maxLength: 255, ...(description ? { description } : {}) })) });

/** An OpenAPI security requirement: any one of the listed schemes. */
export type Security = Record<string, string[]>[];

/** OpenAPI security schemes: how each kind of caller proves itself; each route names the ones it accepts. */
export function securitySchemes(secretHeader: string) {
  return {
    serviceKey: { type: 'http', scheme: 'bearer', description: 'A service key of ADMIN_API_KEYS: the customer backend' },
    appKey: { type: 'apiKey', in: 'header', name: 'x-app-key', description: 'CALLER_AUTH=app-keys: one of APP_API_KEYS' },
    callerJwt: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: "CALLER_AUTH=jwt: a JWT from the customer's identity provider (JWT_JWKS_URL, JWT_ISSUER, JWT_AUDIENCE)" },
    sessionToken: { type: 'apiKey', in: 'header', name: 'x-incode-hardware-id', description: 'The Incode session token POST /session answered' },
    webhookOAuth: { type: 'oauth2', description: 'Incode\'s webhooks: a bearer token from the client-credentials endpoint (WEBHOOK_CLIENT_ID)', flows: { clientCredentials: { tokenUrl: '/webhooks/incode/token', scopes: {} } } },
    webhookSecret: { type: 'apiKey', in: 'header', name: secretHeader, description: 'Incode\'s webhooks: the static WEBHOOK_SECRET' },
    webhookClient: { type: 'http', scheme: 'basic', description: 'The token endpoint: WEBHOOK_CLIENT_ID and WEBHOOK_CLIENT_SECRET' },
    metricsToken: { type: 'http', scheme: 'bearer', description: 'GET /metrics when METRICS_TOKENS is set: one of its tokens' },
  } as const;
}

/** What POST /session and /session/resume require under CALLER_AUTH: nothing (none), an app key or a JWT. */
export function callerSecurity(mode: 'none' | 'app-keys' | 'jwt'): { security?: Security } {
  if (mode === 'app-keys') return { security: [{ appKey: [] }] };
  if (mode === 'jwt') return { security: [{ callerJwt: [] }] };
  return {};
}

export const SESSION_TOKEN_SECURITY: Security = [{ sessionToken: [] }];

/**
 * onRequest hook of a route whose body is optional: a request announcing JSON but carrying nothing (no length, or
 * Content-Length: 0, as HTTP wrappers that always set Content-Type send it) is taken as a request without a body,
 * not refused as empty JSON.
 */
export function emptyBodyAsNone(req: { headers: Record<string, string | string[] | undefined> }, _reply: unknown, done: () => void): void {
  const length = req.headers['content-length'];
  if ((length === undefined || length === '0') && req.headers['transfer-encoding'] === undefined) delete req.headers['content-type'];
  done();
}
