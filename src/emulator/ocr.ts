// OCR payload builder: a deterministic person per interviewId, Brazilian when the session is BRA, with Incode's mixed date formats.
import type { Session } from './state';

export interface DocumentKind {
  typeOfId: string;
  subtype: string;
  /** ISO3 of the issuing country. */
  country: string;
  oneSided: boolean;
}

/** Which document the synthetic person "holds": decided by country and the one-sided test value. */
export function documentKind(s: Session): DocumentKind {
  const country = s.countryCode === 'ALL' ? 'USA' : s.countryCode;
  if (s.directives.oneSided) return { typeOfId: 'Passport', subtype: 'NATIONAL_PASSPORT', country, oneSided: true };
  if (country === 'USA') return { typeOfId: 'DriversLicense', subtype: 'DRIVERS_LICENSE', country, oneSided: false };
  return { typeOfId: 'IdentificationCard', subtype: 'IDENTIFICATION_CARD', country, oneSided: false };
}

/** Small stable hash of the interviewId (its tail is a counter, so neighbours differ). */
export function seedOf(id: string, salt = 0): number {
  let h = 2166136261 ^ salt;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 16777619);
  return h >>> 0;
}

const pick = <T>(list: readonly T[], n: number): T => list[n % list.length];

const BR_FIRST: ReadonlyArray<[string, 'F' | 'M']> = [
  ['MARIA', 'F'], ['ANA', 'F'], ['JULIANA', 'F'], ['FERNANDA', 'F'], ['BEATRIZ', 'F'],
  ['JOAO', 'M'], ['PEDRO', 'M'], ['LUCAS', 'M'], ['RAFAEL', 'M'], ['GABRIEL', 'M'],
];
const BR_MIDDLE_F = ['APARECIDA', 'CRISTINA', 'LUIZA', 'HELENA'];
const BR_MIDDLE_M = ['HENRIQUE', 'EDUARDO', 'AUGUSTO', 'VINICIUS'];
const BR_LAST = ['SOUZA', 'LIMA', 'SILVA', 'SANTOS', 'OLIVEIRA', 'PEREIRA', 'COSTA', 'RODRIGUES', 'ALMEIDA', 'FERREIRA'];
const BR_STREETS = ['RUA DAS ACACIAS', 'AVENIDA PAULISTA', 'RUA AUGUSTA', 'RUA OSCAR FREIRE', 'ALAMEDA SANTOS', 'RUA DA CONSOLACAO'];

const EN_FIRST: ReadonlyArray<[string, 'F' | 'M']> = [
  ['EMILY', 'F'], ['SARAH', 'F'], ['JESSICA', 'F'], ['LAURA', 'F'], ['OLIVIA', 'F'],
  ['JOHN', 'M'], ['MICHAEL', 'M'], ['DAVID', 'M'], ['JAMES', 'M'], ['DANIEL', 'M'],
];
const EN_MIDDLE = ['ANNE', 'LEE', 'MARIE', 'RAY', 'JO', 'ALAN'];
const EN_LAST = ['SMITH', 'JOHNSON', 'WILLIAMS', 'BROWN', 'JONES', 'MILLER', 'DAVIS', 'WILSON', 'TAYLOR', 'CLARK'];
const EN_STREETS = ['MAIN ST', 'OAK AVE', 'MAPLE DR', 'CEDAR LN', 'PINE ST', 'ELM ST'];
const US_CITIES: ReadonlyArray<[string, string, string]> = [
  ['SPRINGFIELD', 'IL', '62701'], ['AUSTIN', 'TX', '73301'], ['PORTLAND', 'OR', '97201'], ['DENVER', 'CO', '80202'],
];


/**
 * Year the synthetic ten-year document was issued (add-id issueYear and OCR issueDate agree), counted from the year the
 * session began, so that its dates agree with its scores whatever year the emulator runs in: one to eight years before
 * (still valid), or eleven to eighteen for emu:decline, whose scores say `documentExpired` FAIL.
 */
export const issueYearFor = (s: Session): number =>
  new Date(s.createdAt).getUTCFullYear() - 1 - ((seedOf(s.interviewId, 7) >>> 15) % 8) - (s.directives.decline ? 10 : 0);

export function buildOcr(s: Session): Record<string, unknown> {
  if (!s.idValidated) return {};
  const kind = documentKind(s);
  const h = seedOf(s.interviewId);
  const h2 = seedOf(s.interviewId, 7);
  const bra = kind.country === 'BRA';
  const [first, gender] = pick(bra ? BR_FIRST : EN_FIRST, h);
  const middle = bra ? pick(gender === 'F' ? BR_MIDDLE_F : BR_MIDDLE_M, h >>> 4) : pick(EN_MIDDLE, h >>> 4);
  const last1 = pick(bra ? BR_LAST : EN_LAST, h >>> 8);
  const last2 = pick(bra ? BR_LAST : EN_LAST, (h >>> 12) + 1);
  const paternal = bra ? (last1 === last2 ? last1 : `${last1} ${last2}`) : last1;
  const fullName = `${first} ${middle} ${paternal}`;

  // UTC midnights: birth 1960-2003, issue as issueYearFor says, expiry the same day 10 years after it.
  const birthDate = Date.UTC(1960 + (h2 % 44), (h2 >>> 6) % 12, 1 + ((h2 >>> 10) % 28));
  const issueYear = issueYearFor(s);
  const issueMonth = (h2 >>> 18) % 12;
  const issueDay = 1 + ((h2 >>> 22) % 28);
  const issuedAtMs = Date.UTC(issueYear, issueMonth, issueDay);
  const expirationYear = issueYear + 10;
  const expireAtMs = Date.UTC(expirationYear, issueMonth, issueDay);

  const number = String(100000000 + (h % 900000000));
  let street: string;
  let city: string;
  let state: string;
  let postalCode: string;
  let address: string;
  if (bra) {
    street = `${pick(BR_STREETS, h2 >>> 3)} ${10 + (h % 1900)}`;
    city = 'SAO PAULO';
    state = 'SP';
    const cep = String(1000000 + (h2 % 8999999)).padStart(8, '0');
    postalCode = cep;
    address = `${street}\n${city} ${state} ${cep.slice(0, 5)}-${cep.slice(5)}`;
  } else {
    const [c, st, zip] = pick(US_CITIES, h2 >>> 3);
    street = `${10 + (h % 9000)} ${pick(EN_STREETS, h >>> 5)}`;
    city = c;
    state = st;
    postalCode = zip;
    address = `${street}\n${city}, ${state} ${zip}`;
  }

  const ocr: Record<string, unknown> = {
    name: {
      fullName,
      firstName: first,
      givenName: `${first} ${middle}`,
      middleName: middle,
      paternalLastName: paternal,
      machineReadableFullName: fullName,
    },
    address,
    addressFields: { street, colony: '', postalCode, city, state },
    checkedAddress: address.replace('\n', ', '),
    typeOfId: kind.typeOfId,
    documentFrontSubtype: kind.subtype,
    birthDate,
    gender,
    documentNumber: bra ? number : kind.oneSided ? `P${number.slice(0, 8)}` : `D${number.slice(0, 7)}`,
    issuedAt: String(issuedAtMs),
    expireAt: String(expireAtMs),
    issueDate: issueYear,
    expirationDate: expirationYear,
    issuingCountry: kind.country,
    nationality: kind.country,
    notExtracted: 0,
    ocrDataConfidence: {
      birthDateConfidence: 0.98,
      nameConfidence: 0.97,
      documentNumberConfidence: 0.95,
      genderConfidence: 0.99,
      addressConfidence: 0.93,
      issueDateConfidence: 0.96,
      expirationDateConfidence: 0.96,
    },
  };
  if (!kind.oneSided) ocr.documentBackSubtype = kind.subtype;
  if (bra) {
    ocr.personalNumber = String(10000000000 + (h2 % 89999999999)); // CPF-like, 11 digits
    ocr.issuingState = 'SP';
    ocr.birthPlace = 'SAO PAULO SP';
  } else if (kind.country === 'USA' && !kind.oneSided) {
    ocr.issuingState = state;
    ocr.classes = 'C';
  }
  if (s.directives.proofOfAddress) {
    // A proof of address (utility bill) at the ID's address, issued last month. The fields object appears under
    // both names the reference gives (Incode's TS typings: addressFieldsFromStatement; the integration guide:
    // addressFromStatementFields) until one is confirmed.
    const today = new Date();
    const issued = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth() - 1, 5));
    ocr.addressFromStatement = address;
    ocr.addressFieldsFromStatement = { ...(ocr.addressFields as object) };
    ocr.addressFromStatementFields = { ...(ocr.addressFields as object) };
    ocr.invalidAddressFromStatement = false;
    ocr.addressStatementEmissionDate = String(issued.getTime());
    ocr.documentType = 'UTILITY_BILL';
  }
  return ocr;
}
