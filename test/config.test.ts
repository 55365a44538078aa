// Config validation: defaults, sandbox, production refusals, and messages that name the variable.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, ENV_SCHEMA, loadConfig } from '../src/config';
import { renderEnvExample } from '../src/env-example';

const KEY = Buffer.alloc(32, 1).toString('base64');
const prodEnv = {
  NODE_ENV: 'production',
  INCODE_API_KEY: 'live-key',
  DATA_ENCRYPTION_KEY: `main:${KEY}`,
  ADMIN_API_KEYS: 'a'.repeat(32),
  WEBHOOK_CLIENT_ID: 'incode',
  WEBHOOK_CLIENT_SECRET: 's'.repeat(32),
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
    const c = loadConfig({ ...prodEnv, INCODE_API_URL: 'https://saas-api.incodesmile.com/', CORS_ORIGINS: 'https://app.example.com, https://m.example.com' });
    expect(c.sandbox).toBe(false);
    expect(c.incode.apiUrl).toBe('https://saas-api.incodesmile.com');
    expect(c.corsOrigins).toEqual(['https://app.example.com', 'https://m.example.com']);
    expect(c.encryption.keys[0].id).toBe('main');
  });

  it.each([
    [{ NODE_ENV: 'production' }, 'INCODE_API_KEY', /required when NODE_ENV=production/],
    [{ PORT: 'abc' }, 'PORT', /whole number/],
    [{ PORT: '70000' }, 'PORT', /at most 65535/],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL', /one of/],
    [{ INCODE_API_URL: 'ftp://x' }, 'INCODE_API_URL', /http or https/],
    [{ INCODE_API_URL: 'not a url' }, 'INCODE_API_URL', /absolute http\(s\) URL/],
    [{ DATA_ENCRYPTION_KEY: 'short' }, 'DATA_ENCRYPTION_KEY', /32 bytes/],
    [{ INCODE_API_KEY: 'k' }, 'DATA_ENCRYPTION_KEY', /required with INCODE_API_KEY/],
    [{ CORS_ORIGINS: 'https://app.example.com/path' }, 'CORS_ORIGINS', /exact origins/],
    [{ WEBHOOK_CLIENT_ID: 'x' }, 'WEBHOOK_CLIENT_SECRET', /together/],
    [{ CALLER_AUTH: 'app-keys' }, 'APP_API_KEYS', /required when CALLER_AUTH=app-keys/],
    [{ CALLER_AUTH: 'jwt' }, 'JWT_JWKS_URL', /required/],
    [{ CALLBACK_URL: 'https://cb.example.com/hook' }, 'CALLBACK_SECRET', /required/],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL', /sqlite: or postgres/],
    [{ POLL_INTERVAL_MS: '5000', POLL_MAX_INTERVAL_MS: '1000' }, 'POLL_MAX_INTERVAL_MS', /at least POLL_INTERVAL_MS/],
    [{ WEBHOOK_ALLOW_UNAUTHENTICATED: 'maybe' }, 'WEBHOOK_ALLOW_UNAUTHENTICATED', /true or false/],
  ])('rejects %j naming %s', (env, variable, message) => {
    const e = errorFor(env as Record<string, string>);
    expect(e.variable).toBe(variable);
    expect(e.message).toContain(variable);
    expect(e.message).toMatch(message);
  });

  it.each([
    [{ WEBHOOK_ALLOW_UNAUTHENTICATED: 'true' }, 'WEBHOOK_ALLOW_UNAUTHENTICATED'],
    [{ WEBHOOK_CLIENT_ID: '', WEBHOOK_CLIENT_SECRET: '' }, 'WEBHOOK_CLIENT_SECRET'],
    [{ WEBHOOK_CLIENT_SECRET: 'short' }, 'WEBHOOK_CLIENT_SECRET'],
    [{ ADMIN_API_KEYS: '' }, 'ADMIN_API_KEYS'],
    [{ ADMIN_API_KEYS: 'tooshort' }, 'ADMIN_API_KEYS'],
    [{ CORS_ORIGINS: '*' }, 'CORS_ORIGINS'],
  ])('refuses unsafe production setting %j', (override, variable) => {
    expect(errorFor({ ...prodEnv, ...override }).variable).toBe(variable);
  });

  it('never echoes a secret value in its message', () => {
    const e = errorFor({ INCODE_API_KEY: 'k', DATA_ENCRYPTION_KEY: 'supersecretvalue' });
    expect(e.message).not.toContain('supersecretvalue');
  });

  it('documents every variable with its default in .env.example (npm run env:example)', () => {
    const example = readFileSync(join(__dirname, '..', '.env.example'), 'utf8');
    expect(example).toBe(renderEnvExample());
    for (const name of Object.keys(ENV_SCHEMA)) expect(example).toMatch(new RegExp(`^${name}=`, 'm'));
  });
});
