// Incode errors built by the one factory: which failures prove that Incode did nothing for the call.
import { IncodeError, MAX_UPSTREAM_RETRY_AFTER_MS, circuitOpenError, incodeErrorFromResponse, incodeErrorFromTransport } from '../../src/incode/errors';
import { retryAfter } from '../../src/errors';

describe('IncodeError.certainlyNotDone', () => {
  it('holds for calls that never left and for refusals (4xx)', () => {
    expect(circuitOpenError('start', 1000).certainlyNotDone).toBe(true);
    expect(incodeErrorFromTransport('start', { code: 'UND_ERR_CONNECT_TIMEOUT' }).certainlyNotDone).toBe(true);
    expect(incodeErrorFromTransport('start', { code: 'ECONNREFUSED' }).certainlyNotDone).toBe(true);
    for (const status of [400, 401, 403, 404, 409, 413, 429]) expect(incodeErrorFromResponse('start', status, { status, error: 'x' }).certainlyNotDone).toBe(true);
  });

  it('does not hold when Incode may have created a session', () => {
    expect(incodeErrorFromTransport('start', { code: 'UND_ERR_HEADERS_TIMEOUT' }).certainlyNotDone).toBe(false);
    expect(incodeErrorFromTransport('start', { code: 'ECONNRESET' }).certainlyNotDone).toBe(false);
    // A 5xx is an unknown outcome: a gateway's 502 or 504 may follow the session's creation behind it.
    for (const status of [500, 502, 503, 504]) expect(incodeErrorFromResponse('start', status, { status, error: 'x' }).certainlyNotDone).toBe(false);
    expect(incodeErrorFromResponse('start', 408, { status: 408, error: 'x' }).certainlyNotDone).toBe(false);
    // A 2xx answer the client could not use: the session exists at Incode.
    expect(new IncodeError('INCODE_BAD_RESPONSE', 'start', 'Incode start answered a body that is not JSON', { httpStatus: 200 }).certainlyNotDone).toBe(false);
  });
});

describe('an HTTP 408 from Incode', () => {
  it('is a timeout, not a refusal: no capture to repeat, no proof that Incode is up, retryable', () => {
    const e = incodeErrorFromResponse('addFace', 408, {});
    expect(e.code).toBe('INCODE_TIMEOUT');
    expect(e.isClientError).toBe(false);
    expect(e.isCaptureAnswer).toBe(false);
    expect(e.retryable).toBe(true);
    // A real refusal still is one.
    expect(incodeErrorFromResponse('addFace', 400, { status: 4019, error: 'Face not found.' }).isCaptureAnswer).toBe(true);
  });
});

describe("Incode's Retry-After", () => {
  it('reads delay-seconds, whole or not, and an HTTP date', () => {
    expect(incodeErrorFromResponse('start', 429, {}, { 'retry-after': '3' }).details.retryAfterMs).toBe(3000);
    expect(incodeErrorFromResponse('start', 429, {}, { 'retry-after': '1.5' }).details.retryAfterMs).toBe(1500);
    const at = new Date(Date.now() + 10_000).toUTCString();
    const ms = incodeErrorFromResponse('start', 503, {}, { 'retry-after': at }).details.retryAfterMs!;
    expect(ms).toBeGreaterThan(5000);
    expect(ms).toBeLessThanOrEqual(10_000);
  });

  it('takes at most 15 minutes of it, so a caller is never told to come back next year or given a header like 1e+23', () => {
    expect(MAX_UPSTREAM_RETRY_AFTER_MS).toBe(900_000);
    for (const v of ['99999999999999999999999', '31536000', new Date(Date.now() + 400 * 86_400_000).toUTCString()]) {
      const ms = incodeErrorFromResponse('start', 429, {}, { 'retry-after': v }).details.retryAfterMs!;
      expect(ms).toBe(MAX_UPSTREAM_RETRY_AFTER_MS);
      expect(retryAfter(ms)).toEqual({ 'retry-after': '900' });
    }
  });
});
