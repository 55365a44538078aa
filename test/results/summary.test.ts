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
  });

  it('falls back to first and last name, and puts a multi-line address on one line', () => {
    expect(summarizeOcr({ name: { fullName: 'ANA MARIA LOPEZ' }, address: 'CALLE 1\n  CIUDAD', typeOfId: 'Passport' })).toEqual({
      fullName: 'ANA MARIA LOPEZ',
      address: 'CALLE 1, CIUDAD',
      typeOfId: 'Passport',
    });
    expect(summarizeOcr({ name: { firstName: 'ANA', paternalLastName: 'LOPEZ' } })).toEqual({ fullName: 'ANA LOPEZ', address: null, typeOfId: null });
    expect(summarizeOcr(undefined)).toEqual({ fullName: null, address: null, typeOfId: null });
  });
});
