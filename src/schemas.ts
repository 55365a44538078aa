// TypeBox schemas shared by several routes: the error body every route declares for its 4xx/5xx.
import { Type, type TSchema } from '@sinclair/typebox';

export const ErrorBody = Type.Object(
  {
    code: Type.String({ description: 'Stable machine-readable error code' }),
    message: Type.String(),
    requestId: Type.Optional(Type.String()),
  },
  { $id: 'ErrorBody', additionalProperties: true },
);

const errorRef = Type.Ref('ErrorBody');

/** A status answered either by the route itself (schema) or by the error handler (e.g. 503 while shutting down). */
export function orError(schema: TSchema): TSchema {
  return Type.Union([schema, errorRef]);
}

/** Response map with the given success schemas plus the error body for every error status a route can give. */
export function withErrors<T extends Record<number, TSchema>>(ok: T, statuses: number[] = []): Record<number, TSchema> {
  const out: Record<number, TSchema> = { ...ok };
  for (const s of [400, 413, 415, 429, 500, 503, ...statuses]) out[s] = errorRef;
  return out;
}

/**
 * A customer id: no C0/C1 controls and no bidirectional overrides or isolates, which would let an id display as
 * another one in Incode's dashboard and in logs of the customer's own systems.
 */
export const CUSTOMER_ID_PATTERN = '^[^\\u0000-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069]+$';

/** The app's own session token, for routes that answer a session about itself (never PII). */
export const SessionTokenHeaders = Type.Object({ 'x-incode-hardware-id': Type.Optional(Type.String({ maxLength: 4096 })) });

/** The Idempotency-Key header of a route that starts billable sessions; `description` says what a retry gets. */
export const IdempotencyKeyHeaders = (description?: string) =>
  Type.Object({ 'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 255, ...(description ? { description } : {}) })) });
