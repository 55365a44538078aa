// Webhook delivery against a real loopback receiver: OAuth2 exchange, static headers, retries, drop and duplicate faults.
import Fastify from 'fastify';
import type { FastifyInstance } from 'fastify';
import { Faults } from '../../src/emulator/faults';
import * as samples from '../../src/emulator/sample-images';
import { TimerSet } from '../../src/emulator/timer-set';
import { WebhookSender } from '../../src/emulator/webhook-sender';
import { b64, startEmulator, waitFor } from './helpers';

interface Hit {
  headers: Record<string, unknown>;
  body: any;
}

async function receiver(answer: (n: number) => { code: number; json?: boolean }, tokenAnswer: (n: number) => Record<string, unknown> = (n) => ({ access_token: `tok-${n}`, expires_in: 3600 })) {
  const app: FastifyInstance = Fastify();
  const hits: Hit[] = [];
  const tokenHits: Hit[] = [];
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_r, body, done) => done(null, body));
  app.post('/token', async (req, reply) => {
    tokenHits.push({ headers: req.headers, body: req.body });
    const expected = `Basic ${Buffer.from('cid:csecret').toString('base64')}`;
    if (req.headers.authorization !== expected || req.body !== 'grant_type=client_credentials' || !String(req.headers['content-type']).startsWith('application/x-www-form-urlencoded')) {
      return reply.code(401).send({ error: 'invalid_client' });
    }
    return tokenAnswer(tokenHits.length);
  });
  app.post('/hook', async (req, reply) => {
    hits.push({ headers: req.headers, body: req.body });
    const a = answer(hits.length);
    if (a.code === 204) return reply.code(204).send();
    if (a.json === false) return reply.code(a.code).type('text/plain').send('ok');
    return reply.code(a.code).send({ success: a.code === 200 });
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  return { app, hits, tokenHits, base };
}

const payload = (status = 'ID_VALIDATION_FINISHED') => ({ interviewId: 'aaaaaaaaaaaaaaaaaaaaaaaa', onboardingStatus: status, clientId: 'acme' });

describe('webhooks end to end', () => {
  it('sends every status change with an OAuth2 bearer token, fetched once', async () => {
    const rx = await receiver(() => ({ code: 200 }));
    const emu = await startEmulator({
      processingDelayMs: 0,
      webhook: { url: `${rx.base}/hook`, oauth: { tokenUrl: `${rx.base}/token`, clientId: 'cid', clientSecret: 'csecret' }, retryDelaysMs: [10] },
    });
    try {
      const s = await emu.start({ externalCustomerId: 'cust-7 emu:gov', configurationId: 'flow-1' });
      const t = s.token;
      await emu.call('POST', '/omni/add/front-id/v2', { token: t, body: { base64Image: b64(samples.idFront()) } });
      await emu.call('POST', '/omni/add/back-id/v2', { token: t, body: { base64Image: b64(samples.idBack()) } });
      await emu.call('POST', '/omni/process/id', { token: t });
      await emu.call('POST', '/omni/add/face/third-party?imageType=selfie', { token: t, body: { base64Image: b64(samples.selfie()) } });
      await emu.call('POST', '/omni/process/face?imageType=selfie', { token: t });
      await waitFor(() => rx.hits.some((h) => h.body.onboardingStatus === 'ONBOARDING_FINISHED'));
      const statuses = rx.hits.map((h) => h.body.onboardingStatus);
      expect(statuses).toEqual(['ID_VALIDATION_FINISHED', 'GOVERNMENT_VALIDATION_FINISHED', 'POST_PROCESSING_FINISHED', 'FACE_VALIDATION_FINISHED', 'ONBOARDING_FINISHED']);
      expect(rx.hits[0].body).toEqual({ interviewId: s.interviewId, externalId: 'cust-7 emu:gov', onboardingStatus: 'ID_VALIDATION_FINISHED', clientId: 'acme', flowId: 'flow-1' });
      for (const h of rx.hits) {
        expect(h.headers.authorization).toBe('Bearer tok-1');
        expect(h.headers['content-type']).toBe('application/json');
      }
      expect(rx.tokenHits).toHaveLength(1);
      expect((await emu.call('GET', '/__emulator/webhooks')).body.stats).toMatchObject({ delivered: 5, tokenRequests: 1 });
    } finally {
      await emu.close();
      await rx.app.close();
    }
  });

  it('sends static headers and omits externalId when none was given', async () => {
    const rx = await receiver(() => ({ code: 204 }));
    const emu = await startEmulator({ processingDelayMs: 0, webhook: { url: `${rx.base}/hook`, headers: { 'x-incode-secret': 's3cret' } } });
    try {
      const s = await emu.start();
      expect(emu.app.emulator.expire(s.interviewId)).toBe(true);
      await waitFor(() => rx.hits.length === 1);
      expect(rx.hits[0].headers['x-incode-secret']).toBe('s3cret');
      expect(rx.hits[0].headers.authorization).toBeUndefined();
      expect(rx.hits[0].body).toEqual({ interviewId: s.interviewId, onboardingStatus: 'EXPIRED', clientId: 'acme' });
    } finally {
      await emu.close();
      await rx.app.close();
    }
  });
});

describe('WebhookSender', () => {
  const timers: TimerSet[] = [];
  const senders: WebhookSender[] = [];
  afterEach(() => {
    senders.splice(0).forEach((s) => s.close());
    timers.splice(0).forEach((t) => t.clear());
  });
  function sender(url: string, faults = new Faults(), extra: Partial<ConstructorParameters<typeof WebhookSender>[0]> = {}, exists?: (id: string) => boolean) {
    const t = new TimerSet();
    timers.push(t);
    const s = new WebhookSender({ url, retryDelaysMs: [10, 10, 10], timeoutMs: 2000, ...extra }, faults, t, exists);
    senders.push(s);
    return s;
  }

  it('retries on 500 until delivered', async () => {
    const rx = await receiver((n) => ({ code: n < 3 ? 500 : 200 }));
    try {
      const s = sender(`${rx.base}/hook`);
      s.send(payload());
      await waitFor(() => s.recent[0].outcome === 'delivered');
      expect(rx.hits).toHaveLength(3);
      expect(s.recent[0]).toMatchObject({ attempts: 3, lastStatusCode: 200 });
      expect(s.stats.retries).toBe(2);
    } finally {
      await rx.app.close();
    }
  });

  it('gives up after the last retry, and a 200 without JSON is not a success', async () => {
    const rx = await receiver(() => ({ code: 200, json: false }));
    try {
      const s = sender(`${rx.base}/hook`, new Faults(), { retryDelaysMs: [5, 5] });
      s.send(payload());
      await waitFor(() => s.recent[0].outcome === 'failed');
      expect(rx.hits).toHaveLength(3);
      expect(s.stats.failed).toBe(1);
    } finally {
      await rx.app.close();
    }
  });

  it('retries when the receiver is unreachable', async () => {
    const s = sender('http://127.0.0.1:9/hook', new Faults(), { retryDelaysMs: [5] });
    s.send(payload());
    await waitFor(() => s.recent[0].outcome === 'failed');
    expect(s.recent[0].attempts).toBe(2);
    expect(s.recent[0].lastError).toMatch(/ECONNREFUSED|connect/i);
  });

  it('drops webhooks at the drop rate', async () => {
    const rx = await receiver(() => ({ code: 200 }));
    try {
      const faults = new Faults({ dropWebhookRate: 1 });
      const s = sender(`${rx.base}/hook`, faults);
      s.send(payload());
      s.send(payload('POST_PROCESSING_FINISHED'));
      expect(s.stats.dropped).toBe(2);
      // One sent after them, with drops off, is delivered: anything the first two had sent would be in by then too.
      faults.set({ dropWebhookRate: 0 });
      s.send(payload('ONBOARDING_FINISHED'));
      await waitFor(() => s.recent[2]?.outcome === 'delivered');
      expect(rx.hits.map((h) => (h.body as { onboardingStatus: string }).onboardingStatus)).toEqual(['ONBOARDING_FINISHED']);
      expect(s.recent.map((r) => r.outcome)).toEqual(['dropped', 'dropped', 'delivered']);
    } finally {
      await rx.app.close();
    }
  });

  it('duplicates webhooks at the duplicate rate, in order', async () => {
    const rx = await receiver(() => ({ code: 200 }));
    try {
      const s = sender(`${rx.base}/hook`, new Faults({ duplicateWebhookRate: 1 }));
      s.send(payload('ID_VALIDATION_FINISHED'));
      s.send(payload('POST_PROCESSING_FINISHED'));
      await waitFor(() => rx.hits.length === 4);
      expect(rx.hits.map((h) => h.body.onboardingStatus)).toEqual(['ID_VALIDATION_FINISHED', 'ID_VALIDATION_FINISHED', 'POST_PROCESSING_FINISHED', 'POST_PROCESSING_FINISHED']);
    } finally {
      await rx.app.close();
    }
  });

  it('a duplicate is one more delivery, sent once: it does not double the retries of a webhook that keeps failing', async () => {
    const rx = await receiver(() => ({ code: 500 }));
    try {
      const s = sender(`${rx.base}/hook`, new Faults({ duplicateWebhookRate: 1 }), { retryDelaysMs: [5, 5] });
      s.send(payload());
      await waitFor(() => s.recent[0].outcome === 'failed');
      await new Promise((r) => setTimeout(r, 50));
      // Three attempts of the webhook, and its one duplicate.
      expect(rx.hits).toHaveLength(4);
      expect(s.stats).toMatchObject({ failed: 1, duplicated: 1, retries: 2 });
      expect(s.recent[0].attempts).toBe(3);
    } finally {
      await rx.app.close();
    }
  });

  it('static headers never replace the JSON content type or the OAuth bearer, whatever their spelling', async () => {
    const rx = await receiver(() => ({ code: 200 }));
    try {
      const s = sender(`${rx.base}/hook`, new Faults(), {
        headers: { 'Content-Type': 'text/plain', Authorization: 'Basic c3RhdGljOnN0YXRpYw==', 'X-Incode-Secret': 's3cret' },
        oauth: { tokenUrl: `${rx.base}/token`, clientId: 'cid', clientSecret: 'csecret' },
      });
      s.send(payload());
      await waitFor(() => s.recent[0].outcome === 'delivered');
      expect(rx.hits[0].headers).toMatchObject({ 'content-type': 'application/json', authorization: 'Bearer tok-1', 'x-incode-secret': 's3cret' });
      expect(rx.hits[0].body).toEqual(payload());
    } finally {
      await rx.app.close();
    }
  });

  it('sends no retry for a session deleted meanwhile', async () => {
    let exists = true;
    // The session is deleted as its first delivery fails, before any retry is due.
    const rx = await receiver(() => ((exists = false), { code: 500 }));
    try {
      const s = sender(`${rx.base}/hook`, new Faults(), { retryDelaysMs: [30, 30] }, () => exists);
      s.send(payload());
      await waitFor(() => s.recent[0].outcome === 'failed');
      expect(rx.hits).toHaveLength(1);
      expect(s.recent[0]).toMatchObject({ attempts: 1, lastError: 'session deleted' });
    } finally {
      await rx.app.close();
    }
  });

  it('refetches the OAuth token after a 401 from the receiver', async () => {
    const rx = await receiver((n) => ({ code: n === 1 ? 401 : 200 }));
    try {
      const s = sender(`${rx.base}/hook`, new Faults(), { oauth: { tokenUrl: `${rx.base}/token`, clientId: 'cid', clientSecret: 'csecret' } });
      s.send(payload());
      await waitFor(() => s.recent[0].outcome === 'delivered');
      expect(rx.tokenHits).toHaveLength(2);
      expect(rx.hits[1].headers.authorization).toBe('Bearer tok-2');
    } finally {
      await rx.app.close();
    }
  });

  it('fails the delivery when the token endpoint answers without expires_in, which the exchange requires', async () => {
    const rx = await receiver(() => ({ code: 200 }), (n) => ({ access_token: `tok-${n}`, token_type: 'Bearer' }));
    try {
      const s = sender(`${rx.base}/hook`, new Faults(), { retryDelaysMs: [], oauth: { tokenUrl: `${rx.base}/token`, clientId: 'cid', clientSecret: 'csecret' } });
      s.send(payload());
      await waitFor(() => s.recent[0].outcome === 'failed');
      expect(rx.tokenHits).toHaveLength(1);
      expect(rx.hits).toHaveLength(0);
    } finally {
      await rx.app.close();
    }
  });

  it('fails the delivery when the token endpoint rejects the client', async () => {
    const rx = await receiver(() => ({ code: 200 }));
    try {
      const s = sender(`${rx.base}/hook`, new Faults(), { retryDelaysMs: [], oauth: { tokenUrl: `${rx.base}/token`, clientId: 'cid', clientSecret: 'wrong' } });
      s.send(payload());
      await waitFor(() => s.recent[0].outcome === 'failed');
      expect(rx.hits).toHaveLength(0);
      // Nothing was sent: its stats say so (the tally of POSTs counted only those that left).
      expect(s.stats).toMatchObject({ sent: 0, failed: 1, tokenRequests: 1 });
    } finally {
      await rx.app.close();
    }
  });
});
