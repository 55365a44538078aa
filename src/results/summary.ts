// The few fields of Incode's scores and OCR a person reads first (the CLI's verdict, the sandbox demo); the full payloads stay on the server.

type Json = Record<string, unknown>;
const obj = (v: unknown): Json | null => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : null);
// Incode sends score values as strings, sometimes as numbers.
const str = (v: unknown): string | null => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : null);

export interface ScoreLeaf {
  value: string | null;
  status: string | null;
}

/** {value, status} of a score block's `overall` leaf (or of the leaf itself). */
function leafOf(block: unknown): ScoreLeaf | null {
  const b = obj(block);
  if (!b) return null;
  const l = obj(b.overall) ?? b;
  return { value: str(l.value), status: str(l.status) };
}

export function summarizeScores(scores: unknown) {
  const s = obj(scores) ?? {};
  return {
    overall: leafOf(s.overall),
    idValidation: leafOf(s.idValidation),
    liveness: leafOf(s.liveness),
    faceRecognition: leafOf(s.faceRecognition),
    reason: str(s.reasonMsg),
  };
}

export function summarizeOcr(ocr: unknown) {
  const o = obj(ocr) ?? {};
  const name = obj(o.name) ?? {};
  const parts = [name.firstName, name.paternalLastName].filter((x): x is string => typeof x === 'string');
  return {
    fullName: str(name.fullName) ?? (parts.join(' ') || null),
    // Incode's address is multi-line; one line reads better in a table or a terminal.
    address: typeof o.address === 'string' ? o.address.replace(/\s*\n\s*/g, ', ') : null,
    typeOfId: str(o.typeOfId),
  };
}
