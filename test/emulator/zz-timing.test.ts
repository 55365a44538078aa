import * as s from '../../src/emulator/sample-images';
import { analyzeImage, decodeImage } from '../../src/emulator/image-analysis';
it('t', () => {
  for (const k of ['idFront','idBack','selfie','blurryIdFront','glareIdFront','smallIdFront','darkSelfie','croppedIdFace'] as const) { let t = Date.now(); const b = (s as any)[k](); const g = Date.now() - t; t = Date.now(); decodeImage(b); const d = Date.now() - t; t = Date.now(); analyzeImage(decodeImage(b)); console.log(k, g, d, Date.now() - t); }
});
