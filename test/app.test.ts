// The app's validation messages: one readable sentence per place, from Ajv's errors as Fastify hands them over.
import Ajv from 'ajv';
import { Type, type TSchema } from '@sinclair/typebox';
import { validationError } from '../src/app';

/** The message for `value` under `schema`, from the errors Ajv (as Fastify runs it: every branch of a union) reports. */
function messageFor(schema: TSchema, value: unknown): string {
  const validate = new Ajv({ allErrors: false, strict: false }).compile(Type.Object({ v: schema }));
  expect(validate({ v: value })).toBe(false);
  return validationError(validate.errors as Parameters<typeof validationError>[0], 'body').message;
}

describe('validationError', () => {
  it('names the set a value must be one of, once', () => {
    expect(messageFor(Type.Union([Type.Literal('pending'), Type.Literal('ready')]), 'x')).toBe('body/v must be one of: pending, ready');
  });

  it('joins the branches of a union with "or": any one of them would do', () => {
    expect(messageFor(Type.Union([Type.Literal('a'), Type.Literal('b'), Type.Null()]), 'x')).toBe('body/v must be one of: a, b or must be null');
    expect(messageFor(Type.Union([Type.Literal('ALL'), Type.String({ pattern: '^[A-Z]{3}$' })]), 'xx')).toBe('body/v must be one of: ALL or must match pattern "^[A-Z]{3}$"');
  });

  it('words everything else as Fastify does, one place after another', () => {
    expect(messageFor(Type.String({ maxLength: 2 }), 'abc')).toBe('body/v must NOT have more than 2 characters');
    expect(validationError([], 'querystring').message).toBe('');
  });
});
