// The synthetic samples: deterministic, right sizes, and identical to the files shipped in samples/.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as jpeg from 'jpeg-js';
import * as samples from '../../src/emulator/sample-images';
import { SAMPLE_FILES } from '../../src/emulator/write-samples';

const size = (b: Buffer) => {
  const d = jpeg.decode(b, { useTArray: true });
  return [d.width, d.height];
};

describe('sample images', () => {
  it('have ID and selfie sizes and stay well under 1 MB', () => {
    expect(size(samples.idFront())).toEqual([1200, 760]);
    expect(size(samples.idBack())).toEqual([1200, 760]);
    expect(size(samples.selfie())).toEqual([1000, 1200]);
    expect(size(samples.darkSelfie())).toEqual([1000, 1200]);
    expect(size(samples.smallIdFront())[0]).toBeLessThan(155);
    for (const make of Object.values(SAMPLE_FILES)) expect(make().length).toBeLessThan(1024 * 1024);
  });

  it('match the files shipped in samples/', () => {
    const dir = join(__dirname, '..', '..', 'samples');
    for (const [name, make] of Object.entries(SAMPLE_FILES)) {
      const path = join(dir, name);
      expect(existsSync(path)).toBe(true);
      expect(readFileSync(path).equals(make())).toBe(true);
    }
  });
});
