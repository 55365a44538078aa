// The summary the CLI and the demo show: Incode's string/number leaves, name fallbacks, one-line address.
import { summarizeOcr, summarizeScores } from '../../src/results/summary';

describe('results summary', () => {
  it('reads the overall leaf of each score block, values as strings', () => {
    const s = summarizeScores({ overall: { value: '92.1', status: 'OK' }, liveness: { overall: { value: 95, status: 'OK' } }, reasonMsg: 'All good' });
    expect(s).toEqual({
      overall: { value: '92.1', status: 'OK' },
      idValidation: null,
      liveness: { value: '95', status: 'OK' },
      faceRecognition: null,
      reason: 'All good',
    });
    expect(summarizeScores(null).overall).toBeNull();
    // Incode's "" (a blank status, an empty reason) is nothing read, not a value to show.
    expect(summarizeScores({ overall: { value: '0.0', status: '' }, reasonMsg: '' })).toMatchObject({ overall: { value: '0.0', status: null }, reason: null });
    expect(summarizeOcr({ typeOfId: ' ' }).typeOfId).toBeNull();
    // Numbers (Incode sends some values so) are still read.
    expect(summarizeScores({ overall: { value: 0, status: 1 }, reasonMsg: 7 })).toMatchObject({ overall: { value: '0', status: '1' }, reason: '7' });
  });

  it('falls back to first and last name, and puts a multi-line address on one line', () => {
    expect(summarizeOcr({ name: { fullName: 'ANA MARIA LOPEZ' }, address: 'CALLE 1\n  CIUDAD', typeOfId: 'Passport' })).toEqual({
      fullName: 'ANA MARIA LOPEZ',
      address: 'CALLE 1, CIUDAD',
      typeOfId: 'Passport',
    });
    expect(summarizeOcr({ name: { firstName: 'ANA', paternalLastName: 'LOPEZ' } })).toEqual({ fullName: 'ANA LOPEZ', address: null, typeOfId: null });
    expect(summarizeOcr(undefined)).toEqual({ fullName: null, address: null, typeOfId: null });
    // Blank lines, CRLF and indentation vanish; a long run of whitespace (Incode's text, read by a linear split) too.
    expect(summarizeOcr({ address: '\r\n CALLE 1 \r\n\n   \nCIUDAD\n' }).address).toBe('CALLE 1, CIUDAD');
    expect(summarizeOcr({ address: `A${' '.repeat(100_000)}\nB` }).address).toBe('A, B');
  });

  it('builds a name from every part when fullName is missing or empty, and an address from addressFields', () => {
    const mx = { name: { fullName: '', firstName: 'JUAN', givenName: 'JUAN CARLOS', paternalLastName: 'PEREZ', maternalLastName: 'LOPEZ' } };
    expect(summarizeOcr(mx).fullName).toBe('JUAN CARLOS PEREZ LOPEZ');
    expect(summarizeOcr({ name: { firstName: 'JUAN', middleName: 'CARLOS', paternalLastName: 'PEREZ' } }).fullName).toBe('JUAN CARLOS PEREZ');
    // givenName already holds the middle name: not repeated.
    expect(summarizeOcr({ name: { givenName: 'JUAN CARLOS', firstName: 'JUAN', middleName: 'CARLOS', paternalLastName: 'PEREZ' } }).fullName).toBe('JUAN CARLOS PEREZ');
    // The BRA sample of the shared doc: no address line, parsed fields only.
    const bra = { addressFields: { street: 'RUA DAS ACACIAS 120', postalCode: '01310000', city: 'SAO PAULO', state: 'SP' } };
    expect(summarizeOcr(bra).address).toBe('RUA DAS ACACIAS 120, SAO PAULO, SP, 01310000');
    expect(summarizeOcr({ address: '', checkedAddress: 'AV 1, CDMX' }).address).toBe('AV 1, CDMX');
  });

  it('leaves a score block without an overall verdict out, instead of showing it as unknown', () => {
    const s = summarizeScores({ liveness: { livenessScore: { value: '98.1', status: 'OK' } }, faceRecognition: { existingUser: false } });
    expect(s.liveness).toBeNull();
    expect(s.faceRecognition).toBeNull();
  });
});
