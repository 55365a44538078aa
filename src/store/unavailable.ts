// Tells a database that is down, stalled or locked apart from a bug, by the errors pg and better-sqlite3 raise, without loading either; and hears a checked-out client lose its connection.

// pg and pg-pool raise these as plain Errors with no code: the message is their only stable mark.
const PG_CLIENT_MESSAGES = new Set([
  'Query read timeout', // query_timeout
  'timeout exceeded when trying to connect', // connectionTimeoutMillis, waiting for a pooled client
  'Connection terminated due to connection timeout', // connectionTimeoutMillis, opening a new one
  'timeout expired', // connectionTimeoutMillis of a lone Client
  'Connection terminated unexpectedly', // the server or the network dropped it mid-query
  'Client has encountered a connection error and is not queryable', // a statement on a client whose connection ended
]);

// SQLSTATEs that say "try again later", not "this statement is wrong": 57014 is statement_timeout's cancel,
// 57P01-57P03 a server shutting down or starting, 53300 too many connections, class 08 a broken connection, 40P01 a
// deadlock PostgreSQL broke (two replicas' writes locking rows in opposite orders), 40001 a serialization failure.
const UNAVAILABLE_SQLSTATE = /^(57014|57P0[123]|53300|08...|40P01|40001)$/;

/** Of those, the ones after which the connection is still sound: its transaction is rolled back and it is reused. */
const CONNECTION_SOUND_SQLSTATE = /^(40P01|40001)$/;

/** The error and its causes, as far as the checks below look. */
function* causes(err: unknown): Generator<Record<string, unknown>> {
  // Duck-typed, not instanceof Error: a native addon's errors may come from another realm (test runners' sandboxes).
  for (let e = err, depth = 0; typeof e === 'object' && e !== null && depth < 3; e = (e as { cause?: unknown }).cause, depth++) yield e as Record<string, unknown>;
}

/** Whether a failed transaction's connection can still be rolled back and reused (a deadlock broken by the server). */
export function connectionSound(err: unknown): boolean {
  for (const { code, severity } of causes(err)) if (typeof severity === 'string' && typeof code === 'string' && CONNECTION_SOUND_SQLSTATE.test(code)) return true;
  return false;
}

// Node's socket and resolver errors, raised by pg when it cannot open a connection at all (the server is down,
// restarting or unreachable, or its name does not resolve yet, as in a compose stack that is still starting).
const SOCKET_CODES = /^E(CONNREFUSED|CONNRESET|TIMEDOUT|HOSTUNREACH|NETUNREACH|PIPE|ADDRNOTAVAIL|NOTFOUND|AI_AGAIN)$/;

export function isDatabaseUnavailable(err: unknown): boolean {
  for (const { message, code, severity, name, syscall } of causes(err)) {
    if (typeof message === 'string' && PG_CLIENT_MESSAGES.has(message)) return true;
    // A server-side error carries a severity; other libraries' five-letter codes must not match by accident.
    if (typeof severity === 'string' && typeof code === 'string' && UNAVAILABLE_SQLSTATE.test(code)) return true;
    // Only system errors carry a syscall, so an application error that happens to use one of these codes does not match.
    if (typeof syscall === 'string' && typeof code === 'string' && SOCKET_CODES.test(code)) return true;
    // SQLite: another process held the write lock for the whole busy timeout.
    if (name === 'SqliteError' && typeof code === 'string' && /^SQLITE_(BUSY|LOCKED)/.test(code)) return true;
  }
  return false;
}

/**
 * Whether a failure says the database itself may be down (unreachable, stalled, restarting), not that one transaction
 * lost a race: a deadlock or serialization failure leaves the database answering, and so does a SQLite file another
 * process holds locked (its reads go on).
 */
export function suggestsDatabaseDown(err: unknown): boolean {
  if (!isDatabaseUnavailable(err) || connectionSound(err)) return false;
  for (const { name } of causes(err)) if (name === 'SqliteError') return false;
  return true;
}

/**
 * Listens on a checked-out PostgreSQL client for the error its connection raises when the server ends it between two
 * statements (a restart, a terminated backend): the pool stops listening once the client is handed out, and an
 * unheard 'error' is an uncaught exception that ends the process. `lost` is that error (the next statement only says
 * the client is not queryable); `release` stops listening and hands the client back, destroyed when it was lost or
 * `broken` names why.
 */
export function watchCheckedOut(client: { on(e: 'error', f: (err: Error) => void): unknown; off(e: 'error', f: (err: Error) => void): unknown; release(err?: Error | boolean): void }): {
  readonly lost: Error | undefined;
  release(broken?: Error): void;
} {
  let lost: Error | undefined;
  const onLost = (err: Error) => (lost ??= err);
  client.on('error', onLost);
  return {
    get lost() {
      return lost;
    },
    release(broken) {
      client.off('error', onLost);
      client.release(lost ?? broken);
    },
  };
}
