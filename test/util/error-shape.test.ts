// What a log line keeps of an unexpected error: its kind, code and frames, never its text, even text shaped like frames.
import { errorShape } from '../../src/util/error-shape';

describe('errorShape', () => {
  it('keeps the kind, the code and where it was thrown', () => {
    const err = Object.assign(new TypeError('Cannot read "MARIA"'), { code: 'E_X' });
    const shape = errorShape(err);
    expect(shape).toMatchObject({ type: 'TypeError', code: 'E_X', at: expect.arrayContaining([expect.stringMatching(/^at .*error-shape\.test\.ts/)]) });
    expect(JSON.stringify(shape)).not.toContain('MARIA');
  });

  it('drops lines of the message that look like frames', () => {
    const shape = errorShape(new Error('bad row\n    at GONZALEZ (1985-04-12)\n    at MAIN ST 12'));
    expect(JSON.stringify(shape)).not.toMatch(/GONZALEZ|MAIN ST/);
    expect(shape.at!.length).toBeGreaterThan(0);
  });

  it('describes what is not an Error by its type alone', () => {
    expect(errorShape('MARIA GONZALEZ')).toEqual({ type: 'string' });
    expect(errorShape(undefined)).toEqual({ type: 'undefined' });
  });
});
