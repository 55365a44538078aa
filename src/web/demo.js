// Sandbox demo: broker token -> Incode Web SDK camera flow -> broker result. Plain browser JS, no build step.
/* global document, window, location, fetch, setTimeout, URLSearchParams */
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  // Seconds the SDK's camera waits for auto-detection before offering manual capture (SDK default: 40).
  const manualAfterMs = Math.max(1, Number(params.get('manualAfter')) || 15) * 1000;
  const FINAL = ['ready', 'failed', 'unprocessable', 'erased'];
  // A finished session left to a reviewer: its verdict is another status change, shown if it comes this soon.
  const VERDICT_WAIT_MS = 30000;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  let session = null;

  function setPhase(phase) {
    // Tests and curious developers can follow the flow on <body data-phase>.
    document.body.dataset.phase = phase;
    for (const li of document.querySelectorAll('#steps li')) {
      const order = ['front', 'back', 'process-id', 'selfie', 'finish', 'result', 'done'];
      const i = order.indexOf(li.dataset.step);
      const p = order.indexOf(phase);
      li.className = i < p ? 'done' : i === p ? 'active' : '';
    }
  }

  function showError(text) {
    const el = $('error');
    el.textContent = text;
    el.hidden = false;
  }

  function message(text, kind) {
    const p = document.createElement('p');
    p.className = kind || 'info';
    p.textContent = text;
    $('messages').append(p);
  }

  async function api(method, url, body, token) {
    const headers = { accept: 'application/json' };
    if (body) headers['content-type'] = 'application/json';
    if (token) headers['x-incode-hardware-id'] = token;
    const res = await fetch(url, { method, headers, body: body ? JSON.stringify(body) : undefined });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) {
      const err = new Error(`${method} ${url}: HTTP ${res.status} ${data.code || ''} ${data.message || ''}`.trim());
      throw Object.assign(err, { status: res.status, retryAfterS: Number(res.headers.get('retry-after')) || 0 });
    }
    return data;
  }

  /**
   * A read of a finished onboarding's state, tried again through what passes (the network, 429, 502-504) until
   * `deadline`: one busy moment must not throw away an onboarding the person has finished.
   */
  async function read(url, deadline) {
    for (;;) {
      try {
        return await api('GET', url, null, session.token);
      } catch (e) {
        // fetch's own failure (no answer) has no status.
        const passing = e.status === undefined || e.status === 429 || (e.status >= 502 && e.status <= 504);
        const wait = Math.min(Math.max(1000, (e.retryAfterS || 0) * 1000), 10000);
        if (!passing || Date.now() + wait >= deadline) throw e;
        $('decision').textContent = `Waiting for the service (${e.status ? `HTTP ${e.status}` : 'no answer'}); trying again…`;
        await sleep(wait);
      }
    }
  }

  function truncated(s) {
    return s.length > 24 ? `${s.slice(0, 12)}…${s.slice(-6)} (${s.length} chars)` : s;
  }

  // The capture checks live on the server (src/incode/capture-checks.ts); the page only shows their verdict.
  async function explainRejection(kind, response) {
    try {
      const verdict = await api('POST', '/demo/capture-check', { kind, response: slim(response) }, session.token);
      if (!verdict.ok) message(`${kind === 'selfie' ? 'Selfie' : 'ID'} rejected: ${verdict.message}`, 'rejected');
    } catch (e) {
      message(`Capture rejected (${e.message})`, 'rejected');
    }
  }

  // Drops images and anything large: the checks need only the flags and scores.
  function slim(r) {
    const out = {};
    if (!r || typeof r !== 'object') return out;
    for (const [k, v] of Object.entries(r)) {
      if (v === null || typeof v === 'boolean' || typeof v === 'number' || (typeof v === 'string' && v.length < 200)) out[k] = v;
    }
    return out;
  }

  function onLog(kind) {
    return (entry) => {
      if (!entry || !entry.payload) return;
      const { type, payload } = entry;
      if (type === 'manualCaptureOn' || type === 'timeout') message('Auto-capture unavailable: use the capture button.', 'info');
      // ID: attemptFailed. Selfie: the SDK names the failed check. When Incode refused the upload itself (an error
      // envelope, e.g. a selfie error code), the SDK logs it without Incode's answer (InternalServerError from its camera,
      // attemptFailed with no response from its file input): asking the checks about nothing would read as "too dark".
      const refused = type === 'InternalServerError' || (type === 'attemptFailed' && !(payload.response && typeof payload.response === 'object'));
      if (refused) message(`${kind === 'selfie' ? 'Selfie' : 'ID'} refused by Incode: take it again.`, 'rejected');
      else if (['attemptFailed', 'spoofAttempt', 'lensesDetected', 'badBrightness', 'badMask'].includes(type)) explainRejection(kind, payload.response || {});
    };
  }

  function camera(incode, type) {
    const el = $('camera');
    el.replaceChildren();
    return new Promise((resolve, reject) => {
      incode.renderCamera(type, el, {
        token: session,
        timeout: manualAfterMs,
        numberOfTries: 3,
        showTutorial: false,
        onLog: onLog(type === 'selfie' ? 'selfie' : 'id'),
        onSuccess: resolve,
        onError: (e) => reject(new Error(`${type} capture failed: ${(e && (e.type || e.message)) || 'unknown error'}`)),
      });
    });
  }

  async function waitForResult() {
    const deadline = Date.now() + 180000;
    let verdictBy = null;
    while (Date.now() < deadline) {
      const st = await read('/session/status', deadline);
      const awaitsVerdict = st.resultsStatus === 'ready' && st.decision === 'review' && st.onboardingStatus === 'ONBOARDING_FINISHED';
      $('decision').textContent = awaitsVerdict ? 'REVIEW: waiting for a reviewer…' : `${st.onboardingStatus}, results ${st.resultsStatus}…`;
      if (awaitsVerdict) verdictBy ??= Date.now() + VERDICT_WAIT_MS;
      if (FINAL.includes(st.resultsStatus) && (!awaitsVerdict || Date.now() >= verdictBy)) return st;
      await sleep(1000);
    }
    throw new Error('No result after 3 minutes');
  }

  function rows(tbody, entries) {
    tbody.replaceChildren();
    for (const [k, v] of entries) {
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      const td = document.createElement('td');
      th.textContent = k;
      td.textContent = v == null || v === '' ? '—' : v;
      tr.append(th, td);
      tbody.append(tr);
    }
  }

  const leaf = (l) => (l ? `${l.status ?? '?'}${l.value ? ` (${l.value})` : ''}` : null);

  async function showResult() {
    setPhase('result');
    $('result').hidden = false;
    const st = await waitForResult();
    const r = await read('/demo/results', Date.now() + 60000);
    const d = $('decision');
    d.textContent = r.decision ? r.decision.toUpperCase() : `none (${st.resultsStatus})`;
    d.className = `decision-${r.decision || 'none'}`;
    $('reason').textContent = r.scores?.reason || '';
    rows($('scores'), [
      ['Overall', leaf(r.scores?.overall)],
      ['ID validation', leaf(r.scores?.idValidation)],
      ['Liveness', leaf(r.scores?.liveness)],
      ['Face recognition', leaf(r.scores?.faceRecognition)],
      ['Onboarding status', r.onboardingStatus],
    ]);
    rows($('ocr'), [
      ['Name', r.ocr?.fullName],
      ['Address', r.ocr?.address],
      ['Type of ID', r.ocr?.typeOfId],
    ]);
    setPhase('done');
  }

  async function run(scenario) {
    $('error').hidden = true;
    $('messages').replaceChildren();
    $('result').hidden = true;
    // A fresh customer id per run keeps the per-customer rate limit out of the way; the directive picks the outcome.
    const externalCustomerId = `demo-${Math.random().toString(36).slice(2, 10)}${scenario ? ` ${scenario}` : ''}`;
    session = await api('POST', '/session', { externalCustomerId });
    $('session-json').textContent = JSON.stringify({ ...session, token: truncated(session.token), resumeToken: truncated(session.resumeToken) }, null, 2);
    $('api-url').textContent = session.apiUrl;
    $('session-box').hidden = false;
    $('flow').hidden = false;

    // From here on: exactly what a production frontend does with the token and apiUrl.
    const incode = window.OnBoarding.create({ apiURL: session.apiUrl });

    setPhase('front');
    const front = await camera(incode, 'front');
    message('ID front accepted.', 'ok');
    if (!front.skipBackIdCapture) {
      setPhase('back');
      await camera(incode, 'back');
      message('ID back accepted.', 'ok');
    }
    setPhase('process-id');
    // ID processing runs asynchronously at Incode; starting it now overlaps it with the selfie.
    await incode.processId({ token: session.token });
    setPhase('selfie');
    const face = await camera(incode, 'selfie');
    message(`Selfie accepted; face match ${face.faceMatch ? 'OK' : 'failed'}.`, face.faceMatch ? 'ok' : 'rejected');
    $('camera').replaceChildren();
    // Marks the onboarding finished (Incode's finish-status): a flow whose last step does not complete the session
    // on its own never reaches ONBOARDING_FINISHED without it, and its results never come.
    setPhase('finish');
    await incode.getFinishStatus(null, { token: session.token });
    message('Onboarding marked finished.', 'ok');
    await showResult();
  }

  $('start-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const button = $('start-button');
    button.disabled = true;
    run($('scenario').value)
      .catch((e) => {
        setPhase('error');
        showError(e.message || String(e));
      })
      .finally(() => {
        button.disabled = false;
      });
  });
  $('restart-button').addEventListener('click', () => location.reload());

  // ?scenario= picks a listed scenario, or any combination of the emulator's test values (listed as such).
  const preset = params.get('scenario');
  if (preset !== null && preset !== '' && ![...$('scenario').options].some((o) => o.value === preset)) $('scenario').add(new window.Option(`Test values: ${preset}`, preset));
  if (preset !== null) $('scenario').value = preset;
  if (!window.OnBoarding) showError('The Web SDK did not load: run `node scripts/fetch-web-sdk.js` on the server.');
  setPhase('idle');
})();
