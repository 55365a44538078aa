// Start-up check that each DATA_ENCRYPTION_KEY is the key its id stood for when the database's data was written.
import { hkdfSync } from 'node:crypto';
import { ConfigError } from '../config';
import { Cipher, hashesEqual, type CipherKey } from './crypto';
import { ENCRYPTED_TABLES } from './rekey';
import type { SqlArg } from './rows';
import type { Store } from './types';

/**
 * What the database keeps of a key: derived one way (HKDF, its own label), so it says whether two keys are the same
 * and nothing about either. Ciphertexts name their key only by id, and a bare key is always `k1`: a key regenerated,
 * or taken from another environment, under an id already used would otherwise be taken as the right one, every stored
 * value would read as 500 STORED_DATA_UNREADABLE, and what it wrote meanwhile could not be told from the rest.
 */
export function keyFingerprint(key: Buffer): string {
  return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), 'incode-broker/key-fingerprint/v1', 32)).toString('base64url');
}

/** How many rows of a table a sample reads at most: a start reads them once, so a large table cannot hold it long. */
const SAMPLE_ROWS = 10_000;

/**
 * For each encrypted column, a select of one value under a key id among the first rows the table yields (its one
 * parameter: `prefix`, what every ciphertext under that key starts with), and the value with the associated data its
 * row binds it to, from the row the select found.
 */
export function keySamples(arg: SqlArg, keyId: string): { sql: string; prefix: string; sampled: (row: Record<string, unknown>) => { value: string; aad: string } }[] {
  const prefix = `v1.${keyId}.`;
  return ENCRYPTED_TABLES.flatMap((t) =>
    t.columns.map((c) => ({
      sql: `SELECT ${t.pk.join(', ')}, ${c.name} AS value FROM (SELECT ${t.pk.join(', ')}, ${c.name} FROM ${t.table} LIMIT ${SAMPLE_ROWS}) AS s WHERE substr(${c.name}, 1, ${prefix.length}) = ${arg(0)} LIMIT 1`,
      prefix,
      sampled: (row) => ({ value: String(row.value), aad: c.aad(t.pk.map((k) => String(row[k]))) }),
    })),
  );
}

const refusal = (id: string, why: string) =>
  new ConfigError(
    'DATA_ENCRYPTION_KEY',
    `lists key ${id}, but ${why}: it is another key under the same id. List the key the data was written with under that id (or, for a new key, a new id: put it first as "k2:<key>,${id}:<old key>" to rotate)`,
  );

/** A key checked against what is stored under its id, whose fingerprint is not recorded yet. */
export interface UnrecordedKey {
  id: string;
  fingerprint: string;
}

type KeyStore = Pick<Store, 'keyFingerprints' | 'recordKeyFingerprint' | 'sampleCiphertexts'>;

/**
 * Refuses a key that is not the one its id stood for: the fingerprint recorded for the id differs, or, for an id with
 * none recorded (a database written before this check, or a key new to it), a value already stored under the id does
 * not decrypt. Records nothing: it answers the keys to record (recordEncryptionKeys), so that a list refused for its
 * second key records nothing and a retry checks the first one again rather than taking it as known. It can run before
 * the migrations: a table of fingerprints not created yet reads as empty.
 */
export async function checkEncryptionKeys(store: KeyStore, keys: readonly CipherKey[]): Promise<UnrecordedKey[]> {
  const recorded = await store.keyFingerprints();
  const unrecorded: UnrecordedKey[] = [];
  for (const k of keys) {
    const fingerprint = keyFingerprint(k.key);
    const known = recorded.get(k.id);
    if (known !== undefined) {
      if (!hashesEqual(known, fingerprint)) throw refusal(k.id, 'the data stored under that id was written with another key (its fingerprint differs)');
      continue;
    }
    const one = new Cipher([k]);
    for (const s of await store.sampleCiphertexts(k.id)) {
      try {
        one.decrypt(s.value, s.aad);
      } catch {
        throw refusal(k.id, 'a value stored under that id does not decrypt with it');
      }
    }
    unrecorded.push({ id: k.id, fingerprint });
  }
  return unrecorded;
}

/** Records the fingerprints of keys checkEncryptionKeys passed; another replica's, kept first under an id, refuses. */
export async function recordEncryptionKeys(store: KeyStore, unrecorded: readonly UnrecordedKey[], now: number): Promise<void> {
  for (const { id, fingerprint } of unrecorded)
    if (!hashesEqual(await store.recordKeyFingerprint(id, fingerprint, now), fingerprint)) throw refusal(id, 'another replica recorded a different key under that id as this one started');
}

/** checkEncryptionKeys, then recordEncryptionKeys: the whole check of a migrated database. */
export async function verifyEncryptionKeys(store: KeyStore, keys: readonly CipherKey[], now: number): Promise<void> {
  await recordEncryptionKeys(store, await checkEncryptionKeys(store, keys), now);
}
