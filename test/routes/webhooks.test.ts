// The webhook token endpoint's stateless tokens (valid for at least the expires_in they are issued with) and secret rotation.
import request from 'supertest';
import { ConfigError, loadConfig } from '../../src/config';
import { WEBHOOK_TOKEN_GRACE_SECONDS, WebhookTokens } from '../../src/routes/webhooks';
import { WEBHOOK_CLIENT_ID, brokerEnv, startBroker, startEmulator } from '../helpers/harness';

describe('WebhookTokens', () => {
  it('holds a token for its whole expires_in, whatever the millisecond it was issued at, plus a short grace', () => {
    const tokens = new WebhookTokens(['webhook-client-secret'], 60);
    for (const issuedAt of [1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_999]) {
      const { token, expiresIn } = tokens.issue(issuedAt);
      expect(expiresIn).toBe(60);
      // The last millisecond of its advertised life, and the grace after it.
      expect(tokens.verify(token, issuedAt + expiresIn * 1000 - 1)).toBe(true);
      expect(tokens.verify(token, issuedAt + expiresIn * 1000 + WEBHOOK_TOKEN_GRACE_SECONDS * 1000 - 1000)).toBe(true);
      expect(tokens.verify(token, issuedAt + expiresIn * 1000 + WEBHOOK_TOKEN_GRACE_SECONDS * 1000 + 1000)).toBe(false);
    }
  });

  it('refuses a token signed with another secret, or altered', () => {
    const { token } = new WebhookTokens(['webhook-client-secret'], 60).issue();
    expect(new WebhookTokens(['another-client-secret'], 60).verify(token)).toBe(false);
    const [v, exp, nonce, mac] = token.split('.');
    expect(new WebhookTokens(['webhook-client-secret'], 60).verify([v, String(Number(exp) + 3600), nonce, mac].join('.'))).toBe(false);
  });
});

describe('webhook secret rotation', () => {
  const OLD = 'old-webhook-secret-0123456789';
  const NEW = 'new-webhook-secret-9876543210';
  const token = (url: string, secret: string) =>
    request(url).post('/webhooks/incode/token').auth(WEBHOOK_CLIENT_ID, secret).type('form').send({ grant_type: 'client_credentials' });
  const webhook = (url: string, headers: Record<string, string>) =>
    request(url).post('/webhooks/incode').set(headers).send({ interviewId: 'aaaaaaaaaaaaaaaaaaaaaaaa', onboardingStatus: 'ID_VALIDATION_FINISHED' });

  it('takes the previous client secret and the tokens issued for it until the rotation is over, and no token of it after', async () => {
    const emu = await startEmulator();
    const before = await startBroker(brokerEnv(emu.url, { WEBHOOK_CLIENT_SECRET: OLD, RESULTS_MODE: 'webhook' }), { runWorker: false });
    const during = await startBroker(brokerEnv(emu.url, { WEBHOOK_CLIENT_SECRET: NEW, WEBHOOK_CLIENT_SECRET_PREVIOUS: OLD, RESULTS_MODE: 'webhook' }), { runWorker: false });
    const after = await startBroker(brokerEnv(emu.url, { WEBHOOK_CLIENT_SECRET: NEW, RESULTS_MODE: 'webhook' }), { runWorker: false });
    try {
      const held = (await token(before.url, OLD).expect(200)).body.access_token as string;
      // The token Incode cached before the rotation, and the old credentials, still work during it.
      await webhook(during.url, { authorization: `Bearer ${held}` }).expect(200);
      const viaOld = (await token(during.url, OLD).expect(200)).body.access_token as string;
      await webhook(during.url, { authorization: `Bearer ${viaOld}` }).expect(200);
      const fresh = (await token(during.url, NEW).expect(200)).body.access_token as string;
      await token(during.url, 'some-other-secret-0123456789').expect(401);
      // Tokens asked for with the new secret are good after the rotation too; every token of the old secret's, asked
      // for before the rotation or during it, goes with it (the old secret may be leaving because it leaked).
      await webhook(after.url, { authorization: `Bearer ${fresh}` }).expect(200);
      await webhook(after.url, { authorization: `Bearer ${held}` }).expect(401);
      await webhook(after.url, { authorization: `Bearer ${viaOld}` }).expect(401);
      await token(after.url, OLD).expect(401);
    } finally {
      for (const b of [before, during, after]) await b.close();
      await emu.close();
    }
  });

  it('takes the previous static secret beside the new one', async () => {
    const emu = await startEmulator();
    const b = await startBroker(brokerEnv(emu.url, { WEBHOOK_CLIENT_ID: '', WEBHOOK_CLIENT_SECRET: '', WEBHOOK_SECRET: NEW, WEBHOOK_SECRET_PREVIOUS: OLD, RESULTS_MODE: 'webhook' }), { runWorker: false });
    try {
      await webhook(b.url, { 'x-webhook-secret': OLD }).expect(200);
      await webhook(b.url, { 'x-webhook-secret': NEW }).expect(200);
      await webhook(b.url, { 'x-webhook-secret': 'another-secret-0123456789ab' }).expect(401);
    } finally {
      await b.close();
      await emu.close();
    }
  });

  it('takes a webhook and a token request at a URL given with a trailing slash, as Incode is configured with it', async () => {
    const emu = await startEmulator();
    const b = await startBroker(brokerEnv(emu.url, { WEBHOOK_CLIENT_SECRET: NEW, RESULTS_MODE: 'webhook' }), { runWorker: false });
    try {
      const res = await request(b.url).post('/webhooks/incode/token/').auth(WEBHOOK_CLIENT_ID, NEW).type('form').send({ grant_type: 'client_credentials' }).expect(200);
      await request(b.url)
        .post('/webhooks/incode/')
        .set('authorization', `Bearer ${res.body.access_token as string}`)
        .send({ interviewId: 'aaaaaaaaaaaaaaaaaaaaaaaa', onboardingStatus: 'ID_VALIDATION_FINISHED' })
        .expect(200);
    } finally {
      await b.close();
      await emu.close();
    }
  });

  it.each([
    [{ WEBHOOK_SECRET_PREVIOUS: OLD }, 'WEBHOOK_SECRET_PREVIOUS', /set the new one in WEBHOOK_SECRET/],
    [{ WEBHOOK_SECRET: NEW, WEBHOOK_SECRET_PREVIOUS: NEW }, 'WEBHOOK_SECRET_PREVIOUS', /must differ/],
    [{ WEBHOOK_CLIENT_ID: 'c', WEBHOOK_CLIENT_SECRET: NEW, WEBHOOK_CLIENT_SECRET_PREVIOUS: 'short', NODE_ENV: 'production' }, 'WEBHOOK_CLIENT_SECRET_PREVIOUS', /at least 16 characters in production/],
  ])('refuses %j naming %s', (env, variable, message) => {
    let err: unknown;
    try {
      loadConfig({ INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: Buffer.alloc(32, 1).toString('base64'), ...env } as Record<string, string>);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).variable).toBe(variable);
    expect((err as ConfigError).message).toMatch(message);
  });
});
