// Renders .env.example from the config schema, so the documented defaults cannot drift from the code.
import { ENV_SCHEMA } from './config';

const SECTIONS: Record<string, string> = {
  NODE_ENV: 'Service',
  INCODE_API_URL: 'Incode',
  DATABASE_URL: 'Storage and PII',
  WEBHOOK_CLIENT_ID: 'Incode webhooks',
  RESULTS_MODE: 'Results pipeline',
  ADMIN_API_KEYS: 'Results API and customer callback',
  SESSION_BODY_LIMIT_BYTES: 'Limits and capture checks',
  REDIS_URL: 'Abuse and cost protection, resilience',
  EMULATOR_PROCESSING_DELAY_MS: 'Sandbox emulator',
};

// Left commented: unset, these mean something their default does not (sandbox mode keeps data in memory unless
// DATABASE_URL is set), so a copy of this file must behave like no file at all. NODE_ENV and HOST too: given to
// `docker run --env-file`, a copy would override the image's production and 0.0.0.0 with development and loopback.
// INCODE_API_URL too: a copy must not choose Incode's demo environment for a deployment (compose requires it set).
const COMMENTED = new Set(['DATABASE_URL', 'NODE_ENV', 'HOST', 'INCODE_API_URL']);

export function renderEnvExample(): string {
  let out =
    '# Every variable the broker reads (src/config.ts is the schema; `npm run env:example` rewrites this file).\n' +
    '# Leave INCODE_API_KEY empty to run in sandbox mode against the built-in Incode emulator.\n';
  for (const [name, spec] of Object.entries(ENV_SCHEMA) as [string, { doc: string; default?: string }][]) {
    if (SECTIONS[name]) out += `\n# --- ${SECTIONS[name]} ---\n`;
    out += `# ${spec.doc}\n${COMMENTED.has(name) ? '# ' : ''}${name}=${spec.default ?? ''}\n`;
  }
  out += '\n# --- docker-compose.yml only (the broker does not read these; compose refuses to start without them) ---\n';
  for (const [name, doc] of COMPOSE_ONLY) out += `# ${doc}\n# ${name}=\n`;
  return out;
}

/** What docker-compose.yml needs beside the broker's own variables: hex secrets (each sits in a URL or a command). */
const COMPOSE_ONLY: readonly [string, string][] = [
  ['POSTGRES_PASSWORD', "PostgreSQL's superuser password, set on its first start (e.g. openssl rand -hex 32)."],
  ['BROKER_DB_PASSWORD', "The broker's own database role's password (deploy/postgres-init.sh creates the role), hex."],
  ['REDIS_PASSWORD', "Redis's password (requirepass), hex: it sits in the broker's REDIS_URL."],
];

if (require.main === module) process.stdout.write(renderEnvExample());
