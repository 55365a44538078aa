// Drives an onboarding on the emulator's token-only (/0/) surface, as the Web SDK or a mobile app would.
import { request } from 'undici';
import { idBack, idFront, selfie } from '../../src/emulator/sample-images';

type Images = { front: string; back: string; selfie: string };
let images: Images | undefined;
/** The full-size sample photos as base64, built on first use (about half a second), not on import. */
export function sampleImages(): Images {
  return (images ??= { front: idFront().toString('base64'), back: idBack().toString('base64'), selfie: selfie().toString('base64') });
}

/** A JPEG grown to about `bytes` more by comment (COM) segments after its start marker, which decoders skip. */
export function withCommentSegments(jpegBytes: Buffer, bytes: number): Buffer {
  const segments: Buffer[] = [];
  for (let left = bytes; left > 0; left -= 65_533) {
    const data = Buffer.alloc(Math.min(left, 65_533), 0x61);
    const head = Buffer.from([0xff, 0xfe, 0, 0]);
    head.writeUInt16BE(data.length + 2, 2);
    segments.push(head, data);
  }
  return Buffer.concat([jpegBytes.subarray(0, 2), ...segments, jpegBytes.subarray(2)]);
}

/** POST to the emulator with the session token only; retries 5xx so fault-injection tests still finish. */
export async function zeroPost(apiUrl: string, path: string, token: string, body: unknown, tries = 8): Promise<unknown> {
  const base = apiUrl.replace(/\/+$/, '');
  for (let i = 0; ; i++) {
    const res = await request(`${base}${path}`, {
      method: 'POST',
      headers: { 'api-version': '1.0', 'x-incode-hardware-id': token, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const json = await res.body.json().catch(() => null);
    if (res.statusCode < 500 || i >= tries) {
      if (res.statusCode >= 400) throw new Error(`${path} answered ${res.statusCode}: ${JSON.stringify(json)}`);
      return json;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Front, back, process ID, selfie, process face: after this Incode finishes the session on its own. */
export async function captureAll(apiUrl: string, token: string, imgs: Images = sampleImages()): Promise<void> {
  await zeroPost(apiUrl, '/omni/add/front-id/v2', token, { base64Image: imgs.front });
  await zeroPost(apiUrl, '/omni/add/back-id/v2', token, { base64Image: imgs.back });
  await zeroPost(apiUrl, '/omni/process/id', token, {});
  await zeroPost(apiUrl, '/omni/add/face/third-party?imageType=selfie', token, { base64Image: imgs.selfie });
  await zeroPost(apiUrl, '/omni/process/face?imageType=selfie', token, {});
}
