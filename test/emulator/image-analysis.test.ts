// Pixel metrics on the synthetic samples and on a real Chromium fake-camera frame.
import { readFileSync } from 'node:fs';
import { PNG } from 'pngjs';
import { analyzeImage, base64ToBuffer, decodeImage, ImageDecodeError, THRESHOLDS } from '../../src/emulator/image-analysis';
import * as samples from '../../src/emulator/sample-images';

const metrics = (b: Buffer) => analyzeImage(decodeImage(b));

describe('image analysis', () => {
  it('scores the good front and back high and tells their sides apart', () => {
    const f = metrics(samples.idFront());
    expect(f).toMatchObject({ width: 1200, height: 760, side: 'front' });
    expect(f.sharpness).toBeGreaterThanOrEqual(80);
    expect(f.glare).toBeGreaterThanOrEqual(90);
    const b = metrics(samples.idBack());
    expect(b.side).toBe('back');
    expect(b.sharpness).toBeGreaterThanOrEqual(80);
    expect(b.glare).toBeGreaterThanOrEqual(90);
  });

  it('fails the blurry, glare and small fronts on exactly their own check', () => {
    const blurry = metrics(samples.blurryIdFront());
    expect(blurry.sharpness).toBeLessThan(THRESHOLDS.sharpness);
    expect(blurry.glare).toBeGreaterThanOrEqual(THRESHOLDS.glare);
    const glare = metrics(samples.glareIdFront());
    expect(glare.glare).toBeLessThan(THRESHOLDS.glare);
    expect(glare.sharpness).toBeGreaterThanOrEqual(THRESHOLDS.sharpness);
    const small = metrics(samples.smallIdFront());
    expect(small.width).toBeLessThan(THRESHOLDS.horizontalResolution);
    expect(small.sharpness).toBeGreaterThanOrEqual(THRESHOLDS.sharpness);
    expect(small.glare).toBeGreaterThanOrEqual(THRESHOLDS.glare);
  });

  it('fails the blurry, glare and small backs on exactly their own check, still read as backs', () => {
    const blurry = metrics(samples.blurryIdBack());
    expect(blurry).toMatchObject({ side: 'back' });
    expect(blurry.sharpness).toBeLessThan(THRESHOLDS.sharpness);
    expect(blurry.glare).toBeGreaterThanOrEqual(THRESHOLDS.glare);
    const glare = metrics(samples.glareIdBack());
    expect(glare).toMatchObject({ side: 'back' });
    expect(glare.glare).toBeLessThan(THRESHOLDS.glare);
    expect(glare.sharpness).toBeGreaterThanOrEqual(THRESHOLDS.sharpness);
    const small = metrics(samples.smallIdBack());
    expect(small).toMatchObject({ side: 'back' });
    expect(small.width).toBeLessThan(THRESHOLDS.horizontalResolution);
    expect(small.sharpness).toBeGreaterThanOrEqual(THRESHOLDS.sharpness);
    expect(small.glare).toBeGreaterThanOrEqual(THRESHOLDS.glare);
  });

  it('measures selfie brightness', () => {
    expect(metrics(samples.selfie()).brightness).toBeGreaterThanOrEqual(THRESHOLDS.brightness);
    expect(metrics(samples.darkSelfie()).brightness).toBeLessThan(THRESHOLDS.brightness);
  });

  it('passes real webcam frames (Chromium fake camera) on every check', () => {
    for (const f of ['chromium-fake-camera.jpg', 'chromium-fake-camera-2.jpg']) {
      const m = metrics(readFileSync(`${__dirname}/fixtures/${f}`));
      expect(m).toMatchObject({ width: 640, height: 480, side: 'unknown' });
      expect(m.sharpness).toBeGreaterThanOrEqual(THRESHOLDS.sharpness);
      expect(m.glare).toBeGreaterThanOrEqual(THRESHOLDS.glare);
      expect(m.brightness).toBeGreaterThanOrEqual(THRESHOLDS.brightness);
    }
  });

  it('decodes PNG too', () => {
    const png = new PNG({ width: 40, height: 30 });
    for (let i = 0; i < png.data.length; i += 4) {
      png.data[i] = 255;
      png.data[i + 3] = 255;
    }
    const m = metrics(PNG.sync.write(png));
    expect(m).toMatchObject({ width: 40, height: 30 });
  });

  it('rejects what is not an image', () => {
    expect(() => decodeImage(samples.notAnImage())).toThrow(ImageDecodeError);
    expect(() => decodeImage(Buffer.from([0xff, 0xd8, 0xff, 0x00, 0x01]))).toThrow(ImageDecodeError);
    expect(() => decodeImage(Buffer.from('89504e470d0a1a0a0000', 'hex'))).toThrow(ImageDecodeError);
  });

  it('refuses a PNG declaring a huge image from its header, before inflating anything (a decompression bomb)', () => {
    // A real bomb: 20000 x 20000 RGBA of zeros, whose IDAT deflates to about 1.6 MB; only the header is needed here.
    const png = new PNG({ width: 1, height: 1 });
    const small = PNG.sync.write(png);
    const bomb = Buffer.from(small);
    bomb.writeUInt32BE(20_000, 16);
    bomb.writeUInt32BE(20_000, 20);
    let err: unknown;
    try {
      decodeImage(bomb);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ImageDecodeError);
    // Its IDAT holds a few bytes: inflated first, it would fail as truncated data, not as too large.
    expect(err).toMatchObject({ tooLarge: true, message: 'PNG too large' });
  });

  it('refuses a JPEG of thousands of scans before decoding it (each would be decoded over the whole image)', () => {
    const good = samples.selfie();
    // Empty start-of-scan segments after the image's own: what matters is that no decoder ever walks them.
    const scans = Buffer.concat(Array.from({ length: 5000 }, () => Buffer.from([0xff, 0xda, 0x00, 0x02])));
    const bomb = Buffer.concat([good.subarray(0, good.length - 2), scans, Buffer.from([0xff, 0xd9])]);
    expect(() => decodeImage(bomb)).toThrow(/more than 100 scans/);
    // A real progressive-sized count is fine.
    expect(decodeImage(good).width).toBeGreaterThan(0);
  });

  it('reads bare base64, and not a data: URL (Incode wants the base64 without its prefix)', () => {
    const raw = Buffer.from([1, 2, 3, 4]);
    expect(base64ToBuffer(raw.toString('base64'))).toEqual(raw);
    expect(base64ToBuffer(`data:image/jpeg;base64,${raw.toString('base64')}`)).toBeUndefined();
    expect(base64ToBuffer('')).toBeUndefined();
    expect(base64ToBuffer('%%%')).toBeUndefined();
  });
});
