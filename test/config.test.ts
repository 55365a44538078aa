// Config validation: defaults, sandbox, production refusals, and messages that name the variable.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseDotenv } from 'dotenv';
import { ConfigError, ENV_SCHEMA, loadConfig, type Config } from '../src/config';
import { renderEnvExample } from '../src/env-example';

/** A production-looking secret of n characters starting with c (distinct per c; not a run of one character). */
const key = (c: string, n: number) => `${c}-Zq8Wm2Xr7Tp4Vn6Ys1Lb9Hd5`.repeat(Math.ceil(n / 26) + 1).slice(0, n);
const KEY = Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 37 + 11) % 256)).toString('base64');
const prodEnv = {
  NODE_ENV: 'production',
  INCODE_API_KEY: 'live-key',
  DATA_ENCRYPTION_KEY: `main:${KEY}`,
  ADMIN_API_KEYS: key('a', 32),
  WEBHOOK_CLIENT_ID: 'incode',
  WEBHOOK_CLIENT_SECRET: key('s', 32),
};

function errorFor(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig', () => {
  it('starts in sandbox mode without an API key, with a generated key and the emulator as upstream', () => {
    const c = loadConfig({});
    expect(c.sandbox).toBe(true);
    expect(c.port).toBe(3000);
    expect(c.incode.apiUrl).toBe('http://127.0.0.1:3000/sandbox/incode');
    expect(c.encryption.generated).toBe(true);
    expect(c.encryption.keys[0].key).toHaveLength(32);
    expect(c.results.mode).toBe('both');
    expect(c.corsOrigins).toEqual([]);
    // A throwaway key makes stored data unreadable after a restart, so sandbox keeps it in memory.
    expect(c.database.url).toBe('sqlite::memory:');
    expect(errorFor({ DATABASE_URL: 'sqlite:./x.db' }).variable).toBe('DATA_ENCRYPTION_KEY');
    expect(loadConfig({ DATABASE_URL: 'sqlite:./x.db', DATA_ENCRYPTION_KEY: KEY }).database.url).toBe('sqlite:./x.db');
  });

  it('reads a production configuration', () => {
    const c = loadConfig({
      ...prodEnv,
      INCODE_API_URL: 'https://saas-api.incodesmile.com/',
      CORS_ORIGINS: 'https://app.example.com, https://m.example.com/',
      REDIRECTION_URL_ORIGINS: 'https://app.example.com/',
    });
    expect(c.sandbox).toBe(false);
    expect(c.incode.apiUrl).toBe('https://saas-api.incodesmile.com');
    // Spelled as a browser's Origin header spells them: a trailing slash would otherwise never match.
    expect(c.corsOrigins).toEqual(['https://app.example.com', 'https://m.example.com']);
    expect(c.incode.redirectionUrlOrigins).toEqual(['https://app.example.com']);
    expect(c.encryption.keys[0].id).toBe('main');
  });

  it.each([
    [{ NODE_ENV: 'production' }, 'INCODE_API_KEY', /required when NODE_ENV=production/],
    [{ PORT: 'abc' }, 'PORT', /whole number/],
    [{ PORT: '70000' }, 'PORT', /at most 65535/],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL', /one of/],
    [{ INCODE_API_URL: 'ftp://x' }, 'INCODE_API_URL', /http or https/],
    [{ INCODE_API_URL: 'not a url' }, 'INCODE_API_URL', /absolute http\(s\) URL/],
    [{ INCODE_API_URL: 'https://demo-api.incodesmile.com/0/' }, 'INCODE_API_URL', /not its token-only \/0\/ URL/],
    [{ REDIRECTION_URL_ORIGINS: 'https://app.example.com/done' }, 'REDIRECTION_URL_ORIGINS', /exact origins/],
    [{ REDIRECTION_URL_ORIGINS: '*, https://app.example.com' }, 'REDIRECTION_URL_ORIGINS', /either "\*" or a list/],
    [{ INCODE_ALLOWED_CONFIGURATION_IDS: 'flow-a,*' }, 'INCODE_ALLOWED_CONFIGURATION_IDS', /either "\*" or a list/],
    [{ CORS_ORIGINS: 'https://app.example.com,*' }, 'CORS_ORIGINS', /either "\*" or a list/],
    [{ INCODE_API_URL: 'https://proxy.example.com/incode/0' }, 'INCODE_API_URL', /not its token-only/],
    [{ DATA_ENCRYPTION_KEY: 'short' }, 'DATA_ENCRYPTION_KEY', /32 bytes/],
    [{ INCODE_API_KEY: 'k' }, 'DATA_ENCRYPTION_KEY', /required with INCODE_API_KEY/],
    [{ CORS_ORIGINS: 'https://app.example.com/path' }, 'CORS_ORIGINS', /exact origins/],
    [{ WEBHOOK_CLIENT_ID: 'x' }, 'WEBHOOK_CLIENT_SECRET', /together/],
    [{ CALLER_AUTH: 'app-keys' }, 'APP_API_KEYS', /required when CALLER_AUTH=app-keys/],
    [{ CALLER_AUTH: 'jwt' }, 'JWT_JWKS_URL', /required/],
    [{ CALLBACK_URL: 'https://cb.example.com/hook' }, 'CALLBACK_SECRET', /required/],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL', /sqlite: or postgres/],
    [{ DATABASE_URL: 'sqlite:' }, 'DATABASE_URL', /file path or :memory:/],
    // A generated password with / in it, pasted into the URL: refused by name, and the value never echoed.
    [{ DATABASE_URL: 'postgres://broker:s3cr/t+x@db:5432/broker' }, 'DATABASE_URL', /^(?!.*s3cr).*not a valid URL/],
    [{ DATABASE_URL: 'postgres://broker:50%off@db:5432/broker' }, 'DATABASE_URL', /percent-encoded/],
    // node-postgres would let the URL's search_path replace the one the service pins: tables made in one schema,
    // queried in another.
    [{ DATABASE_URL: 'postgres://broker@db/broker?options=-c%20search_path%3Dbroker' }, 'DATABASE_URL', /DATABASE_SCHEMA/],
    [{ DATABASE_SCHEMA: 'Broker' }, 'DATABASE_SCHEMA', /lowercase/],
    [{ DATABASE_SCHEMA: 'a;drop' }, 'DATABASE_SCHEMA', /lowercase/],
    // PostgreSQL refuses to create these: the start failed later, naming DATABASE_URL.
    [{ DATABASE_SCHEMA: 'pg_broker' }, 'DATABASE_SCHEMA', /nor pg_/],
    [{ DATABASE_SCHEMA: 'information_schema' }, 'DATABASE_SCHEMA', /nor pg_/],
    // Standard Webhooks libraries read a raw secret one byte per character: a UTF-8 one would verify nowhere.
    [{ CALLBACK_URL: 'https://cb.example.com/hook', CALLBACK_SECRET: 'pässwörd-€-secret-1234567890' }, 'CALLBACK_SECRET', /printable ASCII/],
    [{ PORT: '0' }, 'PORT', /sandbox mode/],
    [{ POLL_INTERVAL_MS: '5000', POLL_MAX_INTERVAL_MS: '1000' }, 'POLL_MAX_INTERVAL_MS', /at least POLL_INTERVAL_MS/],
    [{ EVENT_LOOP_MAX_LAG_MS: '5' }, 'EVENT_LOOP_MAX_LAG_MS', /0 \(off\) or at least 10/],
    [{ WEBHOOK_ALLOW_UNAUTHENTICATED: 'maybe' }, 'WEBHOOK_ALLOW_UNAUTHENTICATED', /true or false/],
    // A password's unencoded "/" shifts the URL's parts: ioredis would connect to host "ss", database "word@redis:6379".
    [{ REDIS_URL: 'redis://:p@ss/word@redis:6379' }, 'REDIS_URL', /^(?!.*ss\/word).*database number.*percent-encoded/],
    [{ REDIS_URL: 'http://redis:6379' }, 'REDIS_URL', /must use redis: or rediss:/],
    [{ REDIS_URL: 'redis:///0' }, 'REDIS_URL', /must name a host/],
    [{ SHUTDOWN_DELAY_MS: '-1' }, 'SHUTDOWN_DELAY_MS', /at least 0/],
    [{ INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: `main:${KEY}`, RETENTION_DELETE_AT_INCODE: 'true' }, 'RETENTION_DELETE_AT_INCODE', /executive token/],
  ])('rejects %j naming %s', (env, variable, message) => {
    const e = errorFor(env as Record<string, string>);
    expect(e.variable).toBe(variable);
    expect(e.message).toContain(variable);
    expect(e.message).toMatch(message);
  });

  it("names variables one or two letters off one of this service's (ignored otherwise), and no other", () => {
    const env = {
      RETENTION_DAY: '7',
      DATABASE_SHEMA: 'broker',
      WEBHOOK_SECRET_PREVOIUS: 'old-secret-0123456789',
      database_schema: 'broker',
      // Another program's variables, however close to this service's names in form.
      HOME: '/root',
      PATH: '/usr/bin',
      HOSTNAME: 'vm',
      POSTGRES_PASSWORD: 'x',
      REDIS_PASSWORD: 'x',
      NODE_OPTIONS: '',
      RETENTION_DAYS: '30',
    };
    expect(loadConfig(env).misspeltVariables).toEqual([
      { name: 'RETENTION_DAY', meant: 'RETENTION_DAYS' },
      { name: 'DATABASE_SHEMA', meant: 'DATABASE_SCHEMA' },
      { name: 'WEBHOOK_SECRET_PREVOIUS', meant: 'WEBHOOK_SECRET_PREVIOUS' },
      { name: 'database_schema', meant: 'DATABASE_SCHEMA' },
    ]);
    expect(loadConfig({}).misspeltVariables).toEqual([]);
  });

  it('reads REDIS_URL (redis:// or rediss://) and SHUTDOWN_DELAY_MS (5 s by default)', () => {
    expect(loadConfig({}).redisUrl).toBeUndefined();
    // Every form ioredis reads.
    for (const url of ['rediss://user:pw@cache.internal:6380/2', 'redis://:p%2Fw@redis:6379/0', 'redis://[::1]:6379', 'redis://redis?family=6', 'redis-host:6379', '/run/redis/redis.sock'])
      expect(loadConfig({ REDIS_URL: url }).redisUrl).toBe(url);
    expect(loadConfig({}).shutdownDelayMs).toBe(5000);
    expect(loadConfig({ SHUTDOWN_DELAY_MS: '0' }).shutdownDelayMs).toBe(0);
  });

  it('reads DATABASE_POOL_MAX (10 by default) within its bounds', () => {
    expect(loadConfig({}).database.poolMax).toBe(10);
    expect(loadConfig({ DATABASE_POOL_MAX: '40' }).database.poolMax).toBe(40);
    for (const bad of ['0', '1001', 'ten']) expect(errorFor({ DATABASE_POOL_MAX: bad }).variable).toBe('DATABASE_POOL_MAX');
  });

  it('lets callers name only the default flow and no redirect origin unless told otherwise', () => {
    expect(loadConfig({}).incode).toMatchObject({ allowedConfigurationIds: [], redirectionUrlOrigins: [] });
    expect(loadConfig({ INCODE_CONFIGURATION_ID: 'flow-default' }).incode.allowedConfigurationIds).toEqual(['flow-default']);
    expect(loadConfig({ INCODE_CONFIGURATION_ID: 'flow-default', INCODE_ALLOWED_CONFIGURATION_IDS: 'flow-a' }).incode.allowedConfigurationIds).toEqual(['flow-a', 'flow-default']);
    expect(loadConfig({ INCODE_CONFIGURATION_ID: 'flow-default', INCODE_ALLOWED_CONFIGURATION_IDS: '*', REDIRECTION_URL_ORIGINS: '*' }).incode).toMatchObject({
      allowedConfigurationIds: ['*'],
      redirectionUrlOrigins: ['*'],
    });
  });

  it('accepts a percent-encoded password, and a socket directory as host', () => {
    for (const url of ['postgres://broker:s3cr%2Ft%25x@db:5432/broker', 'postgres:///broker?host=/var/run/postgresql'])
      expect(loadConfig({ DATABASE_URL: url, DATA_ENCRYPTION_KEY: KEY }).database.url).toBe(url);
  });

  it('sandbox mode calls its built-in emulator at the address it listens on', () => {
    const at = (HOST: string) => loadConfig({ HOST, PORT: '4100' }).incode.apiUrl;
    expect(at('0.0.0.0')).toBe('http://127.0.0.1:4100/sandbox/incode');
    expect(at('::')).toBe('http://127.0.0.1:4100/sandbox/incode');
    expect(at('::1')).toBe('http://[::1]:4100/sandbox/incode');
    expect(at('127.0.0.1')).toBe('http://127.0.0.1:4100/sandbox/incode');
  });

  it.each([
    [{ WEBHOOK_ALLOW_UNAUTHENTICATED: 'true' }, 'WEBHOOK_ALLOW_UNAUTHENTICATED'],
    [{ WEBHOOK_CLIENT_ID: '', WEBHOOK_CLIENT_SECRET: '' }, 'WEBHOOK_CLIENT_SECRET'],
    [{ WEBHOOK_CLIENT_SECRET: 'short' }, 'WEBHOOK_CLIENT_SECRET'],
    [{ ADMIN_API_KEYS: '' }, 'ADMIN_API_KEYS'],
    [{ ADMIN_API_KEYS: 'tooshort' }, 'ADMIN_API_KEYS'],
    [{ METRICS_TOKENS: 'tooshort' }, 'METRICS_TOKENS'],
    [{ CORS_ORIGINS: '*' }, 'CORS_ORIGINS'],
    // A bank-branded onboarding link that ends on any site: whoever started the session holds its token.
    [{ REDIRECTION_URL_ORIGINS: '*' }, 'REDIRECTION_URL_ORIGINS'],
    // Everything would be lost on restart: sessions, results, queued jobs.
    [{ DATABASE_URL: 'sqlite::memory:' }, 'DATABASE_URL'],
    [{ DATABASE_URL: 'sqlite://:memory:' }, 'DATABASE_URL'],
    // The API key would cross the network in cleartext.
    [{ INCODE_API_URL: 'http://demo-api.incodesmile.com' }, 'INCODE_API_URL'],
    [{ INCODE_API_URL: 'http://10.0.0.5:8080' }, 'INCODE_API_URL'],
    [{ INCODE_API_URL: 'http://127.0.0.1.example.com' }, 'INCODE_API_URL'],
    [{ CALLER_AUTH: 'app-keys', APP_API_KEYS: 'short-app-key' }, 'APP_API_KEYS'],
    // One short key among good ones is enough to refuse (rotation lists).
    [{ APP_API_KEYS: `${key('p', 32)},x` }, 'APP_API_KEYS'],
    [{ CALLBACK_URL: 'https://cb.example.com/hook', CALLBACK_SECRET: 'x' }, 'CALLBACK_SECRET'],
    // A Standard Webhooks secret counts by its decoded key, not by the length of its text.
    [{ CALLBACK_URL: 'https://cb.example.com/hook', CALLBACK_SECRET: `whsec_${Buffer.alloc(8, 3).toString('base64')}` }, 'CALLBACK_SECRET'],
    // Decisions in cleartext; keys anyone on the path could replace to sign as any caller.
    [{ CALLBACK_URL: 'http://cb.example.com/hook', CALLBACK_SECRET: key('c', 32) }, 'CALLBACK_URL'],
    [{ CALLER_AUTH: 'jwt', JWT_JWKS_URL: 'http://idp.example.com/jwks.json', JWT_ISSUER: 'https://idp.example.com/', JWT_AUDIENCE: 'broker' }, 'JWT_JWKS_URL'],
  ])('refuses unsafe production setting %j', (override, variable) => {
    const e = errorFor({ ...prodEnv, ...override });
    expect(e.variable).toBe(variable);
    expect(e.message).toContain(variable);
  });

  it.each(['key-123\r\nX-Evil: 1', 'key\u0001123', 'kéy-123', 'key\t123'])('refuses an INCODE_API_KEY no HTTP header can carry (%j), naming it and not its value', (apiKey) => {
    const e = errorFor({ INCODE_API_KEY: apiKey, DATA_ENCRYPTION_KEY: KEY });
    expect(e.variable).toBe('INCODE_API_KEY');
    expect(e.message).toMatch(/header cannot carry/);
    expect(e.message).not.toContain(apiKey.trim());
  });

  it('takes JWT_CUSTOMER_ID_CLAIM only with CALLER_AUTH=jwt, and only as a claim name', () => {
    const jwt = { INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: KEY, CALLER_AUTH: 'jwt', JWT_JWKS_URL: 'https://idp.example.com/jwks.json', JWT_ISSUER: 'https://idp.example.com/', JWT_AUDIENCE: 'broker' };
    expect(loadConfig({ ...jwt, JWT_CUSTOMER_ID_CLAIM: 'https://bank.example/customer' }).callerAuth.customerIdClaim).toBe('https://bank.example/customer');
    expect(loadConfig(jwt).callerAuth.customerIdClaim).toBeUndefined();
    expect(errorFor({ ...jwt, JWT_CUSTOMER_ID_CLAIM: 'two words' }).variable).toBe('JWT_CUSTOMER_ID_CLAIM');
    expect(errorFor({ INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: KEY, JWT_CUSTOMER_ID_CLAIM: 'sub' }).message).toMatch(/JWT_CUSTOMER_ID_CLAIM applies only when CALLER_AUTH=jwt/);
  });

  it.each([
    ['whsec_abc$def+ghij', 'a character outside base64'],
    ['whsec_', 'nothing after the prefix'],
    ['whsec_' + Buffer.alloc(32, 7).toString('base64url'), 'the URL-safe alphabet'],
    ['whsec_' + Buffer.alloc(32, 7).toString('base64').replace(/=+$/, ''), 'no padding'],
    ['whsec_ ' + Buffer.alloc(32, 7).toString('base64'), 'a space'],
  ])('refuses a "whsec_" CALLBACK_SECRET that is not standard base64 (%s: %s) in every environment', (secret) => {
    for (const env of [prodEnv, { INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: KEY }]) {
      const e = errorFor({ ...env, CALLBACK_URL: 'https://cb.example.com/hook', CALLBACK_SECRET: secret });
      expect(e.variable).toBe('CALLBACK_SECRET');
      if (secret.length > 6) expect(e.message).not.toContain(secret.slice(6));
    }
  });

  it('takes a "whsec_" CALLBACK_SECRET of standard base64 with its padding', () => {
    const good = 'whsec_' + Buffer.from(KEY, 'base64').toString('base64');
    expect(loadConfig({ ...prodEnv, CALLBACK_URL: 'https://cb.example.com/hook', CALLBACK_SECRET: good }).callback.secrets).toEqual([good]);
  });

  it('takes several CALLBACK_SECRETs during a rotation (the new one first), each checked as one', () => {
    const next = 'whsec_' + Buffer.from(key('n', 32)).toString('base64');
    const old = 'whsec_' + Buffer.from(KEY, 'base64').toString('base64');
    const cb = { ...prodEnv, CALLBACK_URL: 'https://cb.example.com/hook' };
    expect(loadConfig({ ...cb, CALLBACK_SECRET: `${next}  ${old}` }).callback.secrets).toEqual([next, old]);
    expect(errorFor({ ...cb, CALLBACK_SECRET: `${next} whsec_not-base64!` })).toMatchObject({ variable: 'CALLBACK_SECRET', message: expect.stringMatching(/standard base64/) });
    expect(errorFor({ ...cb, CALLBACK_SECRET: `${next} whsec_${Buffer.alloc(32).toString('base64')}` })).toMatchObject({ variable: 'CALLBACK_SECRET' });
    const w = (c: string) => 'whsec_' + Buffer.from(key(c, 32)).toString('base64');
    expect(errorFor({ ...cb, CALLBACK_SECRET: `${next} ${old} ${w('x')} ${w('y')}` }).message).toMatch(/at most 3/);
    // Neither may be another role's key.
    expect(errorFor({ ...cb, ADMIN_API_KEYS: w('z'), CALLBACK_SECRET: `${next} ${w('z')}` }).message).toMatch(/ADMIN_API_KEYS/);
    // A raw secret (not "whsec_") is one secret, spaces and all, as before; a rotation mixing the two is refused (it could
    // not be told from a raw secret with a space in it).
    expect(errorFor({ ...cb, CALLBACK_SECRET: `${next} ${key('r', 24)}` }).message).toMatch(/must all be "whsec_" secrets/);
    const raw = `${key('r', 20)} and ${key('q', 20)}`;
    expect(loadConfig({ ...cb, CALLBACK_SECRET: raw }).callback.secrets).toEqual([raw]);
  });

  it.each([
    [{ ADMIN_API_KEYS: 'a'.repeat(32) }, 'ADMIN_API_KEYS'],
    [{ ADMIN_API_KEYS: `${key('a', 32)},${'ab'.repeat(16)}` }, 'ADMIN_API_KEYS'],
    [{ WEBHOOK_CLIENT_SECRET: '1'.repeat(32) }, 'WEBHOOK_CLIENT_SECRET'],
    [{ WEBHOOK_SECRET: '12341234123412341234' }, 'WEBHOOK_SECRET'],
    [{ METRICS_TOKENS: 'm'.repeat(32) }, 'METRICS_TOKENS'],
    [{ CALLER_AUTH: 'app-keys', APP_API_KEYS: 'p'.repeat(32) }, 'APP_API_KEYS'],
    [{ CALLBACK_URL: 'https://cb.example.com/hook', CALLBACK_SECRET: 'c'.repeat(32) }, 'CALLBACK_SECRET'],
    [{ CALLBACK_URL: 'https://cb.example.com/hook', CALLBACK_SECRET: `whsec_${Buffer.alloc(24, 3).toString('base64')}` }, 'CALLBACK_SECRET'],
    [{ DATA_ENCRYPTION_KEY: Buffer.alloc(32).toString('base64') }, 'DATA_ENCRYPTION_KEY'],
  ])('refuses a placeholder secret in production (few distinct characters, however long): %j', (override, variable) => {
    const e = errorFor({ ...prodEnv, ...override });
    expect([e.variable, e.message]).toEqual([variable, expect.stringMatching(/placeholder/)]);
    // Allowed elsewhere: a developer's "dev-key" is nobody's business.
    if (variable !== 'CALLBACK_SECRET') expect(() => loadConfig({ ...prodEnv, ...override, NODE_ENV: 'development' })).not.toThrow();
  });

  it.each([
    ['CALLBACK_SECRET', { CALLBACK_URL: 'https://cb.example.com/hook', CALLBACK_SECRET: key('a', 32) }],
    ['ADMIN_API_KEYS', { INCODE_API_KEY: key('a', 32) }],
    ['WEBHOOK_CLIENT_SECRET', { INCODE_API_KEY: key('s', 32) }],
    ['CALLBACK_SECRET', { INCODE_API_KEY: key('c', 32), CALLBACK_URL: 'https://cb.example.com/hook', CALLBACK_SECRET: key('c', 32) }],
  ])('refuses one secret held in two roles (%s), in every environment', (variable, override) => {
    for (const NODE_ENV of ['production', 'development']) expect(errorFor({ ...prodEnv, ...override, NODE_ENV }).variable).toBe(variable);
  });

  it.each([
    [{ HOST: '[::1]' }, 'HOST'],
    [{ HOST: 'fe80::1%lo' }, 'HOST'],
    [{ HOST: 'localhost:80' }, 'HOST'],
    [{ HOST: 'not a host' }, 'HOST'],
    [{ WEBHOOK_SECRET_HEADER: 'x bad header' }, 'WEBHOOK_SECRET_HEADER'],
    [{ WEBHOOK_SECRET_HEADER: 'x-webhook-secret:' }, 'WEBHOOK_SECRET_HEADER'],
    [{ ADMIN_API_KEYS: 'dev key with space' }, 'ADMIN_API_KEYS'],
    [{ ADMIN_API_KEYS: 'clé-secrète-ünïcode-0123456789' }, 'ADMIN_API_KEYS'],
    [{ METRICS_TOKENS: 'tab\there' }, 'METRICS_TOKENS'],
    [{ WEBHOOK_SECRET: 'with space inside' }, 'WEBHOOK_SECRET'],
    [{ PUBLIC_URL: 'https://pub.example.com/?x=1' }, 'PUBLIC_URL'],
    [{ PUBLIC_URL: 'https://pub.example.com/#x' }, 'PUBLIC_URL'],
    [{ INCODE_API_URL: 'https://user:pw@saas-api.incodesmile.com' }, 'INCODE_API_URL'],
  ])('refuses a value no request could match, or a base URL others could not be appended to: %j', (override, variable) => {
    const e = errorFor({ ...override });
    expect(e.variable).toBe(variable);
    // Never echoed: it may be a secret (a URL's user info among them).
    expect(e.message).not.toContain(Object.values(override)[0]);
    expect(e.message).not.toMatch(/user:pw/);
  });

  it('takes IPv4, IPv6 and host names for HOST, and a header name of any case', () => {
    for (const HOST of ['0.0.0.0', '::', '::1', 'localhost', 'broker.internal', 'broker_1']) expect(loadConfig({ HOST, PORT: '3000' }).host).toBe(HOST);
    expect(loadConfig({ HOST: '::1' }).incode.apiUrl).toBe('http://[::1]:3000/sandbox/incode');
    expect(loadConfig({ WEBHOOK_SECRET_HEADER: 'X-Incode-Secret' }).webhook.secretHeader).toBe('x-incode-secret');
  });

  it('says why in production refusals, without echoing the value', () => {
    expect(errorFor({ ...prodEnv, DATABASE_URL: 'sqlite::memory:' }).message).toMatch(/lost on restart/);
    expect(errorFor({ ...prodEnv, INCODE_API_URL: 'http://demo-api.incodesmile.com' }).message).toMatch(/https.*cleartext/);
    const short = errorFor({ ...prodEnv, APP_API_KEYS: 'short-app-key' });
    expect(short.message).toMatch(/at least 24 characters/);
    expect(short.message).not.toContain('short-app-key');
    expect(errorFor({ ...prodEnv, CALLBACK_URL: 'https://cb.example.com/hook', CALLBACK_SECRET: 'tiny' }).message).toMatch(/at least 16 bytes/);
  });

  it('accepts in production what the refusals leave alone', () => {
    // The benchmark and the tests run the production broker against an emulator on loopback.
    for (const url of ['http://127.0.0.1:4010', 'http://localhost:4010', 'http://[::1]:4010', 'https://saas-api.incodesmile.com'])
      expect(loadConfig({ ...prodEnv, INCODE_API_URL: url }).incode.apiUrl).toBe(url);
    const c = loadConfig({
      ...prodEnv,
      DATABASE_URL: 'sqlite:./data/broker.db',
      CALLER_AUTH: 'app-keys',
      APP_API_KEYS: `${key('p', 24)},${key('q', 40)}`,
      CALLBACK_URL: 'https://cb.example.com/hook',
      CALLBACK_SECRET: `whsec_${Buffer.from(KEY, 'base64').subarray(0, 24).toString('base64')}`,
    });
    expect(c.callerAuth.appKeys).toHaveLength(2);
    expect(c.database.url).toBe('sqlite:./data/broker.db');
    // Outside production short keys and an in-memory database are fine (development, tests).
    expect(loadConfig({ INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: KEY, APP_API_KEYS: 'dev', CALLBACK_URL: 'http://cb.test/h', CALLBACK_SECRET: 'x', INCODE_API_URL: 'http://incode.test' }).callerAuth.appKeys).toEqual(['dev']);
  });

  it.each(['production', 'development', 'test'])('refuses an app key that is also an admin key (%s): app keys ship in frontends', (nodeEnv) => {
    const shared = 'shared-key-0123456789abcdefghij';
    const env = nodeEnv === 'production' ? prodEnv : { INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: KEY };
    const e = errorFor({ ...env, NODE_ENV: nodeEnv, ADMIN_API_KEYS: `${key('a', 32)},${shared}`, CALLER_AUTH: 'app-keys', APP_API_KEYS: `${key('b', 32)},${shared}` });
    expect(e.variable).toBe('APP_API_KEYS');
    expect(e.message).toMatch(/ADMIN_API_KEYS/);
    expect(e.message).not.toContain(shared);
  });

  it.each(['production', 'development', 'test'])('refuses a metrics token that is also an app key (%s)', (nodeEnv) => {
    const shared = 'shared-key-0123456789abcdefghij';
    const env = nodeEnv === 'production' ? prodEnv : { INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: KEY };
    const e = errorFor({ ...env, NODE_ENV: nodeEnv, METRICS_TOKENS: shared, CALLER_AUTH: 'app-keys', APP_API_KEYS: `${key('b', 32)},${shared}` });
    expect(e.variable).toBe('METRICS_TOKENS');
    expect(e.message).toMatch(/APP_API_KEYS/);
    expect(e.message).not.toContain(shared);
  });

  it.each([
    ['METRICS_TOKENS', (k: string) => ({ METRICS_TOKENS: `${key('m', 32)},${k}` })],
    ['WEBHOOK_SECRET', (k: string) => ({ WEBHOOK_SECRET: k })],
    ['WEBHOOK_CLIENT_SECRET', (k: string) => ({ WEBHOOK_CLIENT_ID: 'incode', WEBHOOK_CLIENT_SECRET: k })],
  ])('refuses %s equal to an admin key, in every environment: a service key reads personal data', (variable, set) => {
    const shared = 'shared-key-0123456789abcdefghij';
    for (const env of [prodEnv, { INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: KEY }]) {
      const e = errorFor({ ...env, ADMIN_API_KEYS: `${key('a', 32)},${shared}`, ...set(shared) });
      expect(e.variable).toBe(variable);
      expect(e.message).toMatch(/ADMIN_API_KEYS/);
      expect(e.message).not.toContain(shared);
    }
  });

  it.each([
    ['WEBHOOK_SECRET', 'APP_API_KEYS', (k: string) => ({ WEBHOOK_SECRET: k, CALLER_AUTH: 'app-keys', APP_API_KEYS: `${key('b', 32)},${k}` })],
    ['WEBHOOK_CLIENT_SECRET', 'METRICS_TOKENS', (k: string) => ({ WEBHOOK_CLIENT_ID: 'incode', WEBHOOK_CLIENT_SECRET: k, METRICS_TOKENS: k })],
  ])('refuses %s equal to a key of %s, in every environment: its holder could post webhooks', (variable, other, set) => {
    const shared = 'shared-key-0123456789abcdefghij';
    for (const env of [prodEnv, { INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: KEY }]) {
      const e = errorFor({ ...env, ...set(shared) });
      expect(e.variable).toBe(variable);
      expect(e.message).toBe(`Invalid configuration: ${variable} must not be a key of ${other}: whoever holds that key could post webhooks`);
      expect(e.message).not.toContain(shared);
    }
  });

  it('reads DATA_ENCRYPTION_KEY strictly: a list written with another separator, trailing junk or one key under two ids is refused', () => {
    const NEW = Buffer.alloc(32, 7).toString('base64');
    const OLD = Buffer.alloc(32, 9).toString('base64');
    for (const value of [`k2:${NEW};k1:${OLD}`, `k2:${NEW} k1:${OLD}`, `k2:${NEW}k1:${OLD}`, `${NEW}JUNKJUNK`, `k1:${NEW.slice(0, -2)}B=`]) {
      const e = errorFor({ INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: value });
      expect(e.variable).toBe('DATA_ENCRYPTION_KEY');
      expect(e.message).not.toContain(NEW);
    }
    expect(errorFor({ INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: `k2:${NEW},k1:${NEW}` }).message).toMatch(/same key as another id/);
    // The spellings of one key: base64 with or without its padding, and base64url.
    for (const value of [NEW, NEW.replace(/=$/, ''), Buffer.alloc(32, 7).toString('base64url'), `k2:${NEW}, k1:${OLD}`])
      expect(loadConfig({ INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: value }).encryption.keys[0].key).toEqual(Buffer.alloc(32, 7));
  });

  it('reads DATABASE_TIMEOUT_MS and REQUEST_TIMEOUT_MS with bounded ranges', () => {
    const d = loadConfig({});
    expect(d.database.timeoutMs).toBe(10_000);
    expect(d.limits.requestTimeoutMs).toBe(300_000);
    const c = loadConfig({ DATABASE_TIMEOUT_MS: '2500', REQUEST_TIMEOUT_MS: '120000' });
    expect(c.database.timeoutMs).toBe(2500);
    expect(c.limits.requestTimeoutMs).toBe(120_000);
    // 0 would mean "wait forever", the very defect these bound.
    expect(errorFor({ DATABASE_TIMEOUT_MS: '0' }).variable).toBe('DATABASE_TIMEOUT_MS');
    expect(errorFor({ REQUEST_TIMEOUT_MS: '0' }).variable).toBe('REQUEST_TIMEOUT_MS');
  });

  it('names every key of a DATA_ENCRYPTION_KEY list by its id, never by its place, and refuses an id listed twice', () => {
    const other = Buffer.alloc(32, 2).toString('base64');
    // Alone, a key without an id is k1, as it always was.
    expect(loadConfig({ DATA_ENCRYPTION_KEY: KEY }).encryption.keys.map((k) => k.id)).toEqual(['k1']);
    // Reordered for a rotation, bare keys would swap names (and every stored value be read with the other key).
    for (const value of [`${other},${KEY}`, `k2:${other},${KEY}`]) {
      const e = errorFor({ DATA_ENCRYPTION_KEY: value });
      expect(e.variable).toBe('DATA_ENCRYPTION_KEY');
      expect(e.message).toMatch(/give each its id/);
      expect(e.message).not.toContain(KEY.slice(0, 12));
    }
    expect(loadConfig({ DATA_ENCRYPTION_KEY: `k2:${other},k1:${KEY}` }).encryption.keys.map((k) => k.id)).toEqual(['k2', 'k1']);
    const twice = errorFor({ DATA_ENCRYPTION_KEY: `a:${KEY},a:${other}` });
    expect([twice.variable, twice.message]).toEqual(['DATA_ENCRYPTION_KEY', expect.stringMatching(/"a" is listed twice/)]);
  });

  it('never echoes a secret value in its message', () => {
    const e = errorFor({ INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: 'supersecretvalue' });
    expect(e.message).not.toContain('supersecretvalue');
    // A key written the wrong way round (`<key>:<id>`): its id would be the key itself.
    const reversed = errorFor({ INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: `${KEY}:main` });
    expect(reversed.variable).toBe('DATA_ENCRYPTION_KEY');
    expect(reversed.message).not.toContain(KEY.slice(0, 12));
    // A URL that does not parse may still carry credentials.
    const url = errorFor({ CALLBACK_URL: 'https://u:p4ssw0rd@[bad/h?token=S3CRET', CALLBACK_SECRET: key('x', 32) });
    expect(url.variable).toBe('CALLBACK_URL');
    expect(url.message).not.toMatch(/p4ssw0rd|S3CRET/);
    // Nor an origin list's entry: it is named by its place.
    const origin = errorFor({ CORS_ORIGINS: 'https://app.example.com,https://u:s3cret@evil.example.com/path' });
    expect(origin.variable).toBe('CORS_ORIGINS');
    expect(origin.message).toMatch(/entry 2 is not/);
    expect(origin.message).not.toContain('s3cret');
  });

  it('documents every variable with its default in .env.example (npm run env:example)', () => {
    const example = readFileSync(join(__dirname, '..', '.env.example'), 'utf8');
    expect(example).toBe(renderEnvExample());
    for (const name of Object.keys(ENV_SCHEMA)) expect(example).toMatch(new RegExp(`^(# )?${name}=`, 'm'));
  });

  it('copied to .env unchanged, .env.example starts the same sandbox as no .env at all', () => {
    const fromExample = loadConfig(parseDotenv(readFileSync(join(__dirname, '..', '.env.example'), 'utf8')));
    const fromNothing = loadConfig({});
    expect(fromExample.sandbox).toBe(true);
    expect(fromExample.database.url).toBe('sqlite::memory:');
    // Only the throwaway keys differ between two loads: the encryption key, the emulator's API key and executive password.
    const withoutKeys = (c: Config) => ({
      ...c,
      encryption: { ...c.encryption, keys: c.encryption.keys.map((k) => k.id) },
      incode: { ...c.incode, apiKey: c.incode.apiKey.replace(/^sandbox-[\w-]{24}$/, 'sandbox-*'), executivePassword: c.incode.executivePassword?.replace(/^sandbox-[\w-]{24}$/, 'sandbox-*') },
    });
    expect(withoutKeys(fromExample)).toEqual(withoutKeys(fromNothing));
    expect(fromNothing.incode.apiKey).not.toBe(loadConfig({}).incode.apiKey);
  });
});
