// The few fields of Incode's scores and OCR a person reads first (the CLI's verdict, the sandbox demo); the full payloads stay on the server.

type Json = Record<string, unknown>;
const obj = (v: unknown): Json | null => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : null);
// Incode sends score values as strings, sometimes as numbers.
const str = (v: unknown): string | null => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : null);

/** A non-empty string, trimmed; Incode sends "" for a field it could not read. */
const text = (v: unknown): string | null => {
  const s = str(v)?.trim();
  return s ? s : null;
};

export interface ScoreLeaf {
  value: string | null;
  status: string | null;
}

/** {value, status} of a score block's `overall` leaf (or of the leaf itself); null when it has neither. */
function leafOf(block: unknown): ScoreLeaf | null {
  const b = obj(block);
  if (!b) return null;
  const l = obj(b.overall) ?? b;
  // A blank status (Incode's answer seen with `overall.status: ""`) is no verdict: shown as unknown, not as nothing.
  const leaf = { value: str(l.value), status: text(l.status) };
  // A block without an overall verdict (e.g. liveness {livenessScore} alone) is "not scored", not "unknown".
  return leaf.value === null && leaf.status === null ? null : leaf;
}

export function summarizeScores(scores: unknown) {
  const s = obj(scores) ?? {};
  return {
    overall: leafOf(s.overall),
    idValidation: leafOf(s.idValidation),
    liveness: leafOf(s.liveness),
    faceRecognition: leafOf(s.faceRecognition),
    reason: text(s.reasonMsg),
  };
}

export function summarizeOcr(ocr: unknown) {
  const o = obj(ocr) ?? {};
  const name = obj(o.name) ?? {};
  // givenName holds every given name (firstName only the first); Hispanic and Brazilian documents carry two surnames.
  const given = text(name.givenName) ?? ([text(name.firstName), text(name.middleName)].filter(Boolean).join(' ') || null);
  const parts = [given, text(name.paternalLastName), text(name.maternalLastName)];
  const fields = obj(o.addressFields) ?? {};
  const fromFields = [fields.street, fields.colony, fields.city, fields.state, fields.postalCode].map(text).filter(Boolean).join(', ');
  // Incode's address is multi-line; one line reads better in a table or a terminal.
  const address = text(o.address) ?? text(o.checkedAddress);
  return {
    fullName: text(name.fullName) ?? (parts.filter(Boolean).join(' ') || null),
    address: address ? address.split('\n').map((line) => line.trim()).filter(Boolean).join(', ') : fromFields || null,
    typeOfId: text(o.typeOfId),
  };
}
