// Writes the synthetic sample images to samples/*.jpg (run: npx tsx src/emulator/write-samples.ts [dir]).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as samples from './sample-images';

export const SAMPLE_FILES: Record<string, () => Buffer> = {
  'id-front.jpg': samples.idFront,
  'id-back.jpg': samples.idBack,
  'selfie.jpg': samples.selfie,
  'id-front-blurry.jpg': samples.blurryIdFront,
  'id-front-glare.jpg': samples.glareIdFront,
  'id-front-small.jpg': samples.smallIdFront,
  'id-back-blurry.jpg': samples.blurryIdBack,
  'id-back-glare.jpg': samples.glareIdBack,
  'id-back-small.jpg': samples.smallIdBack,
  'selfie-dark.jpg': samples.darkSelfie,
  'not-an-image.jpg': samples.notAnImage,
};

export function writeSamples(dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  return Object.entries(SAMPLE_FILES).map(([name, make]) => {
    const path = join(dir, name);
    writeFileSync(path, make());
    return path;
  });
}

if (require.main === module) {
  const dir = resolve(process.argv[2] ?? join(__dirname, '..', '..', 'samples'));
  for (const p of writeSamples(dir)) process.stdout.write(`${p}\n`);
}
