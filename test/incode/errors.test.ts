// Incode errors built by the one factory: which failures prove that Incode did nothing for the call.
import { IncodeError, circuitOpenError, incodeErrorFromResponse, incodeErrorFromTransport } from '../../src/incode/errors';

describe('IncodeError.certainlyNotDone', () => {
  it('holds for calls that never left and for error answers', () => {
    expect(circuitOpenError('start', 1000).certainlyNotDone).toBe(true);
    expect(incodeErrorFromTransport('start', { code: 'UND_ERR_CONNECT_TIMEOUT' }).certainlyNotDone).toBe(true);
    expect(incodeErrorFromTransport('start', { code: 'ECONNREFUSED' }).certainlyNotDone).toBe(true);
    for (const status of [400, 403, 429, 500, 503]) expect(incodeErrorFromResponse('start', status, { status, error: 'x' }).certainlyNotDone).toBe(true);
  });

  it('does not hold when Incode may have created a session', () => {
    expect(incodeErrorFromTransport('start', { code: 'UND_ERR_HEADERS_TIMEOUT' }).certainlyNotDone).toBe(false);
    expect(incodeErrorFromTransport('start', { code: 'ECONNRESET' }).certainlyNotDone).toBe(false);
    // A 2xx answer the client could not use: the session exists at Incode.
    expect(new IncodeError('INCODE_BAD_RESPONSE', 'start', 'Incode start answered a body that is not JSON', { httpStatus: 200 }).certainlyNotDone).toBe(false);
  });
});
