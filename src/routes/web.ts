// Browser pages: the sandbox demo running Incode's real Web SDK (sandbox only) and the operator page (service key).
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { Config } from '../config';
import { AppError } from '../errors';
import { checkIdCapture, checkSelfie } from '../incode/capture-checks';
import { Decision, ResultsStatus, SESSION_TOKEN_SECURITY, SessionTokenHeaders, WITH_BODY, withErrors } from '../schemas';
import { sessionForToken } from '../plugins/service-auth';
import type { SessionRecord } from '../store/types';
import { summarizeOcr, summarizeScores } from '../results/summary';

export interface WebRouteOptions {
  config: Config;
  /** The API URL the SDK is initialised with; its origin must be reachable from the demo page (CSP connect-src). */
  sdkApiUrl: string;
}

// src/routes -> src/web; a build in dist/routes still finds the pages next to the sources.
// src/web beside src/routes, or dist/web beside dist/routes (npm run build copies it, so dist is self-contained).
const WEB_DIR = path.join(__dirname, '..', 'web');
const VENDOR_DIR = path.join(__dirname, '..', '..', 'vendor', 'web-sdk');

/** The only files /demo/vendor serves (scripts/fetch-web-sdk.js puts them there). */
export const VENDOR_FILES = ['react.production.min.js', 'react-dom.production.min.js', 'onBoarding.umd.js'] as const;

const ASSETS: Record<string, { file: string; type: string; sandboxOnly: boolean }> = {
  '/demo/demo.js': { file: 'demo.js', type: 'text/javascript; charset=utf-8', sandboxOnly: true },
  '/web/operator.js': { file: 'operator.js', type: 'text/javascript; charset=utf-8', sandboxOnly: false },
  '/web/styles.css': { file: 'styles.css', type: 'text/css; charset=utf-8', sandboxOnly: false },
};

// Hosts the SDK fetches translations, ML models and OpenCV from. None is required (the flow falls back
// to manual capture and label keys), but with them a person on a laptop gets real texts and auto-capture.
const SDK_ASSET_HOSTS = ['https://api.i18nexus.com', 'https://template-console.s3.amazonaws.com', 'https://sdk.incode.com'];
// Of those, the hosts of code: OpenCV (a script tag) from sdk.incode.com, the tfjs wasm backend and its worker from the
// S3 bucket. i18nexus only serves translation JSON, fetched: it never needs to run script.
const SDK_SCRIPT_HOSTS = ['https://template-console.s3.amazonaws.com', 'https://sdk.incode.com'];

const COMMON_CSP = ["default-src 'none'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'", "object-src 'none'"];

/** The demo's CSP. The SDK bundle needs: inline styles (styled-components, framer-motion), blob: images and
 *  workers, the camera stream, and 'unsafe-eval' + 'wasm-unsafe-eval' for its tfjs/OpenCV runtime. */
function demoCsp(sdkApiUrl: string): string {
  let apiOrigin = '';
  try {
    apiOrigin = new URL(sdkApiUrl).origin;
  } catch {
    // An unparsable URL simply adds nothing beyond 'self'.
  }
  const hosts = SDK_ASSET_HOSTS.join(' ');
  return [
    ...COMMON_CSP,
    `script-src 'self' 'unsafe-eval' 'wasm-unsafe-eval' ${SDK_SCRIPT_HOSTS.join(' ')}`,
    "style-src 'self' 'unsafe-inline'",
    `img-src 'self' data: blob: ${hosts}`,
    "media-src 'self' blob: mediastream:",
    "font-src 'self' data:",
    `connect-src 'self' ${apiOrigin} ${hosts}`.replace(/\s+/g, ' '),
    "worker-src 'self' blob:",
  ].join('; ');
}

const OPERATOR_CSP = [...COMMON_CSP, "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self'"].join('; ');

const LeafOut = Type.Union([Type.Object({ value: Type.Union([Type.String(), Type.Null()]), status: Type.Union([Type.String(), Type.Null()]) }), Type.Null()]);

const DemoResults = Type.Object({
  interviewId: Type.String(),
  onboardingStatus: Type.String(),
  resultsStatus: ResultsStatus,
  decision: Decision,
  scores: Type.Union([
    Type.Object({ overall: LeafOut, idValidation: LeafOut, liveness: LeafOut, faceRecognition: LeafOut, reason: Type.Union([Type.String(), Type.Null()]) }),
    Type.Null(),
  ]),
  ocr: Type.Union([Type.Object({ fullName: Type.Union([Type.String(), Type.Null()]), address: Type.Union([Type.String(), Type.Null()]), typeOfId: Type.Union([Type.String(), Type.Null()]) }), Type.Null()]),
});

const CaptureCheckBody = Type.Object(
  {
    kind: Type.Union([Type.Literal('id'), Type.Literal('selfie')]),
    /** The add-id / add-face answer, or Incode's error envelope ({status: <Incode error code>, ...}) of a refused call. */
    response: Type.Record(Type.String(), Type.Unknown()),
  },
  { additionalProperties: false },
);

const CaptureCheckResult = Type.Object({
  ok: Type.Boolean(),
  reason: Type.Optional(Type.String()),
  message: Type.Optional(Type.String()),
  // What the checks return with a rejection that came from Incode's own answer, as POST /onboardings' 422 carries it.
  incodeCode: Type.Optional(Type.Integer()),
  failReason: Type.Optional(Type.String()),
});

/** The few fields a demo shows; everything else of Incode's payloads stays on the server. */
function demoView(s: SessionRecord, scores: unknown, ocr: unknown) {
  return {
    interviewId: s.interviewId,
    onboardingStatus: s.onboardingStatus,
    resultsStatus: s.resultsStatus,
    decision: s.decision,
    scores: scores && typeof scores === 'object' ? summarizeScores(scores) : null,
    ocr: ocr && typeof ocr === 'object' ? summarizeOcr(ocr) : null,
  };
}

const webRoutes: FastifyPluginAsyncTypebox<WebRouteOptions> = async (app, opts) => {
  const { config } = opts;
  // Files read once; `version` (the vendor files' ETag) makes a changed file be read again.
  const cache = new Map<string, { version: string; body: Buffer }>();
  async function readCached(full: string, version = ''): Promise<Buffer> {
    const hit = cache.get(full);
    if (hit && hit.version === version) return hit.body;
    const body = await readFile(full);
    cache.set(full, { version, body });
    return body;
  }
  const webFile = (name: string) => readCached(path.join(WEB_DIR, name));

  function page(name: string, csp: string) {
    return async (_req: FastifyRequest, reply: FastifyReply) => {
      const body = await webFile(name);
      return reply
        .header('content-type', 'text/html; charset=utf-8')
        .header('content-security-policy', csp)
        .header('cache-control', 'no-cache')
        .header('referrer-policy', 'no-referrer')
        .send(body);
    };
  }

  for (const [url, asset] of Object.entries(ASSETS)) {
    if (asset.sandboxOnly && !config.sandbox) continue;
    app.get(url, { schema: { hide: true } }, async (_req, reply) => reply.header('content-type', asset.type).header('cache-control', 'no-cache').send(await webFile(asset.file)));
  }

  app.get('/operator', { schema: { hide: true } }, page('operator.html', OPERATOR_CSP));

  if (!config.sandbox) return;

  app.get('/', { schema: { hide: true } }, page('demo.html', demoCsp(opts.sdkApiUrl)));

  app.get<{ Params: { file: string } }>('/demo/vendor/:file', { schema: { hide: true } }, async (req, reply) => {
    const file = req.params.file;
    if (!(VENDOR_FILES as readonly string[]).includes(file)) throw new AppError(404, 'NOT_FOUND', 'Unknown vendor file');
    const full = path.join(VENDOR_DIR, file);
    const st = await stat(full).catch(() => null);
    if (!st) throw new AppError(404, 'WEB_SDK_MISSING', 'The Web SDK files are not installed: run `node scripts/fetch-web-sdk.js`');
    // Pinned versions: the content changes only when the script is re-run, which changes size or mtime.
    const etag = `"${st.size.toString(36)}-${Math.floor(st.mtimeMs).toString(36)}"`;
    reply.header('content-type', 'text/javascript; charset=utf-8').header('cache-control', 'public, max-age=3600').header('etag', etag);
    if (req.headers['if-none-match'] === etag) return reply.status(304).send();
    return reply.send(await readCached(full, etag));
  });

  // The page hands over what the SDK's camera got back when it retook a capture; the broker's own checks
  // word the message, so the demo shows exactly what a server-side integration would tell the user.
  app.post(
    '/demo/capture-check',
    {
      bodyLimit: 16 * 1024,
      schema: {
        summary: 'Sandbox only: the capture checks\' verdict and message for an add-id or add-face answer',
        tags: ['sandbox'],
        body: CaptureCheckBody,
        response: withErrors({ 200: CaptureCheckResult }, WITH_BODY),
      },
    },
    async (req) => {
      const { kind, response } = req.body;
      if (kind === 'id') return checkIdCapture(response, config.capture);
      // An answer, or Incode's error envelope (the checks read its status as the code).
      return checkSelfie(response);
    },
  );

  // Sandbox only: in production scores and OCR (PII) go to the customer's backend, never to the browser.
  app.get(
    '/demo/results',
    {
      schema: {
        summary: "Sandbox only: the decision, main scores and OCR fields of the caller's own session",
        tags: ['sandbox'],
        security: SESSION_TOKEN_SECURITY,
        headers: SessionTokenHeaders,
        response: withErrors({ 200: DemoResults }, [401]),
      },
    },
    async (req) => {
      const s = await sessionForToken(app.store, req.headers['x-incode-hardware-id']);
      const results = s.resultsStatus === 'ready' ? await app.store.getResults(s.interviewId) : null;
      return demoView(s, results?.scores, results?.ocr);
    },
  );
};

export default webRoutes;
