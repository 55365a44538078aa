// Key rotation: stored values re-encrypted under the first DATA_ENCRYPTION_KEY in bounded batches, the same on both engines.
import { Cipher } from './crypto';
import { aad, clampLimit, hasRequestSha256, type SqlArg, type SweepLimit } from './rows';
import type { RekeyBatch, RekeyCursor, Store } from './types';

/** How many key ids that no configured key matches a pass names (enough to act on, bounded per pass). */
const MAX_MISSING_KEY_IDS = 5;

/** Rows read per batch: a batch's decryptions run on the event loop, so it stays at a few milliseconds. */
export const REKEY_BATCH = 250;

export interface EncryptedTable {
  table: 'sessions' | 'results' | 'idempotency_keys';
  pk: readonly string[];
  /**
   * Each encrypted column and the associated data its ciphertexts are bound to (by the row's primary key). `waits`
   * tells a value that still needs its key for something else: it stays where it is until it expires, and keeps the
   * rotation from reporting the older keys removable.
   */
  columns: readonly { name: string; aad: (pk: readonly string[]) => string; waits?: (plain: string) => boolean }[];
  /** A column naming the key the row's values are under, kept in step with them. */
  keyId?: string;
}

/** Every column that holds a Cipher envelope. A new one must be listed here, or a rotation never finishes with it. */
export const ENCRYPTED_TABLES: readonly EncryptedTable[] = [
  {
    table: 'sessions',
    pk: ['interview_id'],
    columns: [
      { name: 'token_enc', aad: ([id]) => aad.token(id) },
      { name: 'external_customer_id_enc', aad: ([id]) => aad.externalCustomerId(id) },
    ],
  },
  {
    table: 'results',
    pk: ['interview_id'],
    columns: [
      { name: 'scores_enc', aad: ([id]) => aad.scores(id) },
      { name: 'ocr_enc', aad: ([id]) => aad.ocr(id) },
    ],
    keyId: 'key_id',
  },
  {
    table: 'idempotency_keys',
    pk: ['scope', 'key'],
    columns: [
      {
        name: 'response_enc',
        aad: ([scope, key]) => aad.idempotencyResponse(scope, key),
        // Written before responses carried the request's SHA-256: a replay compares request_hash, an HMAC under the
        // old key, until the key expires (IDEMPOTENCY_TTL_SECONDS) and the sweep deletes it. Transitional: remove
        // (with hasRequestSha256 and `waits`) once no deployment upgrades from a version before stop 16.
        waits: (plain) => !hasRequestSha256(plain),
      },
    ],
  },
];

export const REKEY_START: RekeyCursor = { table: 0, after: null };

/**
 * The next `limit` rows of a table after the cursor, in primary-key order: the key columns, then each encrypted column
 * only when it is not under the first key (else NULL, so values already rotated are not sent back). `prefix` is what
 * every ciphertext under the first key starts with; its key id is checked by Cipher, so it is safe as a literal.
 * Parameters: the cursor's key values (when `after`), then the limit.
 */
export function rekeySelectSql(t: EncryptedTable, arg: SqlArg, prefix: string, after: boolean): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(prefix)) throw new Error('unexpected ciphertext prefix');
  const keys = t.pk.join(', ');
  const stale = t.columns.map((c) => `CASE WHEN substr(${c.name}, 1, ${prefix.length}) <> '${prefix}' THEN ${c.name} END AS ${c.name}`);
  const where = after ? `WHERE (${keys}) > (${t.pk.map((_, i) => arg(i)).join(', ')})` : '';
  return `SELECT ${keys}, ${stale.join(', ')} FROM ${t.table} ${where} ORDER BY ${keys} LIMIT ${arg(after ? t.pk.length : 0)}`;
}

/** A row of the batch as re-encrypted: per column the value read and its replacement (both null when left alone). */
interface RekeyedRow {
  pk: string[];
  old: (string | null)[];
  next: (string | null)[];
  /** The first key's id when every value found in the row was re-encrypted, for the table's key-id column. */
  keyId: string | null;
  reencrypted: number;
}

/**
 * Decrypts each value the select returned and encrypts it again under the first key, with the same associated data.
 * A value under a key no longer configured cannot be read: it is counted as unreadable and left as it is.
 */
function reencryptRows(cipher: Cipher, t: EncryptedTable, rows: Record<string, string | null>[]) {
  let found = 0;
  let unreadable = 0;
  let waiting = 0;
  // The key ids of what cannot be read, for the warning to name the key to list again (a handful is enough).
  const missing = new Set<string>();
  const changed: RekeyedRow[] = [];
  for (const r of rows) {
    const pk = t.pk.map((k) => String(r[k]));
    const row: RekeyedRow = { pk, old: [], next: [], keyId: null, reencrypted: 0 };
    let rowFound = 0;
    for (const c of t.columns) {
      const v = r[c.name];
      let next: string | null = null;
      if (v !== null && v !== undefined) {
        rowFound++;
        let plain: string | null = null;
        try {
          plain = cipher.decrypt(v, c.aad(pk));
        } catch {
          unreadable++;
          const id = Cipher.keyIdOf(v);
          if (id !== null && missing.size < MAX_MISSING_KEY_IDS) missing.add(id);
        }
        if (plain !== null && c.waits?.(plain)) waiting++;
        else if (plain !== null) next = cipher.encrypt(plain, c.aad(pk));
      }
      row.old.push(next === null ? null : v);
      row.next.push(next);
      if (next !== null) row.reencrypted++;
    }
    found += rowFound;
    if (row.reencrypted === 0) continue;
    if (row.reencrypted === rowFound) row.keyId = cipher.primaryKeyId;
    changed.push(row);
  }
  return { found, unreadable, waiting, changed, missingKeyIds: [...missing] };
}

/**
 * Writes re-encrypted values of one row (SQLite, named parameters @p0.., @o0.., @n0.., @kid), each only if it is still
 * the value that was read: one the service wrote meanwhile is newer and stays (the next pass looks at it again).
 */
export function rekeyUpdateSqlite(t: EncryptedTable): string {
  const set = t.columns.map((c, i) => `${c.name} = coalesce(@n${i}, ${c.name})`);
  if (t.keyId) set.push(`${t.keyId} = coalesce(@kid, ${t.keyId})`);
  const where = [...t.pk.map((k, i) => `${k} = @p${i}`), ...t.columns.map((c, i) => `(@o${i} IS NULL OR ${c.name} = @o${i})`)];
  return `UPDATE ${t.table} SET ${set.join(', ')} WHERE ${where.join(' AND ')}`;
}

/** The SQLite statement's named parameters for one row. */
export function rekeyUpdateNamed(t: EncryptedTable, r: RekeyedRow): Record<string, string | null> {
  const named: Record<string, string | null> = {};
  r.pk.forEach((v, i) => (named[`p${i}`] = v));
  t.columns.forEach((_, i) => {
    named[`o${i}`] = r.old[i];
    named[`n${i}`] = r.next[i];
  });
  if (t.keyId) named.kid = r.keyId;
  return named;
}

/**
 * The same for a whole batch in one PostgreSQL statement: parameter arrays p0.., o0.., n0.. (and kid), one element per
 * row. Each row it changed answers how many of its values it re-encrypted.
 */
export function rekeyUpdatePostgres(t: EncryptedTable): string {
  const names = [...t.pk.map((_, i) => `p${i}`), ...t.columns.flatMap((_, i) => [`o${i}`, `n${i}`]), ...(t.keyId ? ['kid'] : [])];
  const set = t.columns.map((c, i) => `${c.name} = coalesce(v.n${i}, t.${c.name})`);
  if (t.keyId) set.push(`${t.keyId} = coalesce(v.kid, t.${t.keyId})`);
  const where = [...t.pk.map((k, i) => `t.${k} = v.p${i}`), ...t.columns.map((c, i) => `(v.o${i} IS NULL OR t.${c.name} = v.o${i})`)];
  return `UPDATE ${t.table} AS t SET ${set.join(', ')}
    FROM unnest(${names.map((_, i) => `$${i + 1}::text[]`).join(', ')}) AS v(${names.join(', ')})
    WHERE ${where.join(' AND ')}
    RETURNING ${t.columns.map((_, i) => `(v.n${i} IS NOT NULL)::int`).join(' + ')} AS n`;
}

/** The PostgreSQL statement's parameters, in its order. */
export function rekeyUpdateParams(t: EncryptedTable, rows: RekeyedRow[]): (string | null)[][] {
  return [
    ...t.pk.map((_, i) => rows.map((r) => r.pk[i])),
    ...t.columns.flatMap((_, i) => [rows.map((r) => r.old[i]), rows.map((r) => r.next[i])]),
    ...(t.keyId ? [rows.map((r) => r.keyId)] : []),
  ];
}

/** Where the walk goes after a batch: on in this table after its last row when it was full, or on to the next table. */
function nextCursor(cursor: RekeyCursor, t: EncryptedTable, rows: Record<string, string | null>[], limit: number): RekeyCursor | null {
  if (rows.length === limit && limit > 0) return { table: cursor.table, after: t.pk.map((k) => String(rows[rows.length - 1][k])) };
  return cursor.table + 1 < ENCRYPTED_TABLES.length ? { table: cursor.table + 1, after: null } : null;
}

/** What an engine brings to a batch: its select (rekeySelectSql in its dialect) and its compare-and-set write. */
interface RekeyEngine {
  /** Runs the select with these parameters (the cursor's key values when `after`, then the limit). */
  read(t: EncryptedTable, params: unknown[], after: boolean): Promise<Record<string, string | null>[]>;
  /** Writes the changed rows where their values are still the ones read; answers how many values it wrote. */
  write(t: EncryptedTable, changed: RekeyedRow[]): Promise<number>;
}

/** Store.reencryptBatch, the same on both engines but for their dialects. */
export async function reencryptBatch(cipher: Cipher, cursor: RekeyCursor, asked: number, engine: RekeyEngine): Promise<RekeyBatch> {
  const t = ENCRYPTED_TABLES[cursor.table];
  const limit = clampLimit(asked, REKEY_BATCH * 4);
  const rows = await engine.read(t, [...(cursor.after ?? []), limit], cursor.after !== null);
  // Decrypted and encrypted again before the write: on SQLite, not while holding the write lock.
  const { found, unreadable, waiting, changed, missingKeyIds } = reencryptRows(cipher, t, rows);
  // Counted from what the write changed: a value the service rewrote since the read is newer and stays.
  const reencrypted = changed.length ? await engine.write(t, changed) : 0;
  return { next: nextCursor(cursor, t, rows, limit), found, reencrypted, unreadable, waiting, ...(missingKeyIds.length ? { missingKeyIds } : {}) };
}

type RekeyPass = Omit<RekeyBatch, 'next'>;

const EMPTY_PASS: RekeyPass = { found: 0, reencrypted: 0, unreadable: 0, waiting: 0 };

/**
 * Walks every encrypted column in passes, re-encrypting what is under an older key, a bounded amount at a time (the
 * hourly sweep's budget), going on where it stopped. Passes repeat while the last one found something it could read
 * under an older key, because a replica still running with the old key order may have written behind it (and a value
 * the service changed while it was being re-encrypted is left to the next pass); a pass that found nothing left is
 * the proof that older keys are no longer needed, and the walk stops there until the next sweep, which checks it with
 * one more pass: a replica still on the old key order (a rolling deploy) may have written since, and the gauge must
 * not go on saying 0 over it. Values under a key no longer configured stop it too: no pass can read them. Values that wait for their expiry are found again by
 * each pass until the retention sweep has deleted them.
 */
export class KeyRotation {
  private cursor: RekeyCursor = REKEY_START;
  private pass: RekeyPass = EMPTY_PASS;
  done = false;
  private unreadableLeft = false;

  constructor(private readonly store: Pick<Store, 'reencryptBatch'>) {}

  /** Goes on with the walk until it is done or `limit` stops it; returns each pass that completed meanwhile. */
  async run(limit: SweepLimit, onBatch?: (b: RekeyBatch) => void): Promise<RekeyPass[]> {
    const completed: RekeyPass[] = [];
    // Stopped by values no configured key reads: no pass can change that before a restart with the key listed again.
    if (this.unreadableLeft) return completed;
    // Done at an earlier sweep: checked again now, from the start.
    this.done = false;
    while (!this.done && !limit.signal?.aborted && Date.now() < limit.until) {
      const b = await this.store.reencryptBatch(this.cursor, REKEY_BATCH);
      onBatch?.(b);
      const p = this.pass;
      const missing = [...new Set([...(p.missingKeyIds ?? []), ...(b.missingKeyIds ?? [])])].slice(0, MAX_MISSING_KEY_IDS);
      this.pass = { found: p.found + b.found, reencrypted: p.reencrypted + b.reencrypted, unreadable: p.unreadable + b.unreadable, waiting: p.waiting + b.waiting, ...(missing.length ? { missingKeyIds: missing } : {}) };
      if (b.next) {
        this.cursor = b.next;
        continue;
      }
      const pass = this.pass;
      completed.push(pass);
      this.done = pass.found === pass.unreadable;
      this.unreadableLeft = this.done && pass.unreadable > 0;
      this.cursor = REKEY_START;
      this.pass = EMPTY_PASS;
      // A pass that moved something is checked at once by the next; one that could move nothing (values waiting to
      // expire, or rewritten under it) is tried again at the next sweep, not over and over within this one.
      if (pass.reencrypted === 0) break;
    }
    return completed;
  }
}
