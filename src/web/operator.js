// Operator page: lists GET /sessions and shows GET /sessions/:id, with the service key held in this page's memory only.
/* global document, window, location, history, fetch, AbortSignal */
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);
  // In memory, never in Web Storage: Chromium writes a tab's sessionStorage to the profile on disk (to restore the tab
  // after a restart), and a restored tab would reload every session's personal data with it. A reload asks again.
  let serviceKey = '';
  let cursor = null;
  // Bumped when the key is forgotten or replaced: an answer to a request sent before is dropped, never shown.
  let generation = 0;
  const stale = () => Object.assign(new Error('stale'), { stale: true });
  // Bumped by each detail asked for: only the latest one's answer is shown, whatever order answers come in.
  let detailAsked = 0;
  const CALL_TIMEOUT_MS = 15000;

  function status(text, kind) {
    $('status').textContent = text;
    $('status').className = `status ${kind || ''}`;
  }

  async function call(url) {
    const key = serviceKey;
    if (!key) throw Object.assign(new Error('unauthorized: enter a service key'), { unauthorized: true });
    const sent = generation;
    // A service that never answers must not leave the page waiting without a word.
    const res = await fetch(url, { headers: { authorization: `Bearer ${key}`, accept: 'application/json' }, signal: AbortSignal.timeout(CALL_TIMEOUT_MS) }).catch((e) => {
      if (sent !== generation) throw stale();
      throw e.name === 'TimeoutError' ? new Error(`no answer within ${CALL_TIMEOUT_MS / 1000} s`) : e;
    });
    if (sent !== generation) throw stale();
    if (res.status === 401) throw Object.assign(new Error('unauthorized: the service key was refused'), { unauthorized: true });
    let data = {};
    try {
      data = await res.json();
    } catch (e) {
      if (sent !== generation) throw stale();
      // The timeout covers the body too: an answer that stalls is no answer, not an empty session.
      if (e.name === 'TimeoutError' || e.name === 'AbortError') throw new Error(`no answer within ${CALL_TIMEOUT_MS / 1000} s`);
      if (res.ok) throw new Error(`HTTP ${res.status}: the answer could not be read`);
    }
    if (sent !== generation) throw stale();
    if (!res.ok) throw new Error(`HTTP ${res.status} ${data.message || ''}`.trim());
    return data;
  }

  /** A failed call: a refused key is dropped with all it showed; an answer for a forgotten key says nothing. */
  function failed(e) {
    if (e.stale) return;
    if (e.unauthorized) clearView();
    status(e.message, e.unauthorized ? 'unauthorized' : 'error');
  }

  function age(iso) {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.round(s / 60)} min`;
    if (s < 86400) return `${Math.round(s / 3600)} h`;
    return `${Math.round(s / 86400)} d`;
  }

  function cell(text, cls) {
    const td = document.createElement('td');
    td.textContent = text == null ? '—' : text;
    if (cls) td.className = cls;
    return td;
  }

  function row(s) {
    const tr = document.createElement('tr');
    tr.dataset.interviewId = s.interviewId;
    const idCell = document.createElement('td');
    const a = document.createElement('a');
    // The link shows the results in this page (an API link would need the Authorization header the browser cannot add).
    a.href = `#${encodeURIComponent(s.interviewId)}`;
    a.textContent = s.interviewId;
    a.className = 'mono';
    idCell.append(a);
    tr.append(idCell, cell(s.onboardingStatus), cell(s.resultsStatus), cell(s.decision, `decision-${s.decision || 'none'}`), cell(age(s.createdAt)), cell(new Date(s.updatedAt).toLocaleString()));
    return tr;
  }

  async function load(more) {
    status('Loading sessions…', '');
    try {
      const url = `/sessions?limit=50${more && cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const page = await call(url);
      if (!more) $('sessions').replaceChildren();
      for (const s of page.items) $('sessions').append(row(s));
      cursor = page.nextCursor;
      $('more').hidden = !cursor;
      status(`${$('sessions').children.length} session(s)`, 'ok');
      return true;
    } catch (e) {
      failed(e);
      return false;
    }
  }

  async function showDetail() {
    let id = '';
    try {
      id = decodeURIComponent(location.hash.slice(1));
    } catch {
      // A hand-edited hash that is not valid percent-encoding names no session.
    }
    // What another address showed goes at once: it must never stand under this one's, nor stay after its load fails.
    const asked = ++detailAsked;
    hideDetail();
    if (!id) {
      if (serviceKey) status(`${$('sessions').children.length} session(s)`, 'ok');
      return;
    }
    // As the results API takes them: anything else is no session, and `.` or `..` would make the fetch below another
    // path (the list, or `/`, which would then get the service key).
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
      status(`No such session: ${id.slice(0, 80)}`, 'error');
      return;
    }
    status(`Loading ${id}…`, '');
    try {
      const s = await call(`/sessions/${encodeURIComponent(id)}`);
      if (asked !== detailAsked) return;
      status(`${$('sessions').children.length} session(s) listed; showing ${id}`, 'ok');
      $('detail-title').textContent = `${s.interviewId}: ${s.decision || 'no decision'} (${s.resultsStatus})`;
      $('detail-json').textContent = JSON.stringify(s, null, 2);
      $('detail').hidden = false;
    } catch (e) {
      if (asked === detailAsked) failed(e);
    }
  }

  function hideDetail() {
    $('detail').hidden = true;
    $('detail-title').textContent = '';
    $('detail-json').textContent = '';
  }

  $('key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    // What the previous key showed goes first: a new key that fails for another reason than a refusal (a 5xx, the
    // network) must not leave it on screen, nor page on with its cursor.
    clearView(true);
    serviceKey = $('key').value.trim();
    $('key').value = '';
    load(false).then((ok) => ok && showDetail());
  });
  // Forgetting the key also clears what it showed: the next person at a shared screen finds no session's personal
  // data in the page, its DOM or its address.
  function clearView(keepKey) {
    generation++;
    if (!keepKey) serviceKey = '';
    $('sessions').replaceChildren();
    detailAsked++;
    hideDetail();
    cursor = null;
    $('more').hidden = true;
  }
  function forget() {
    clearView();
    history.replaceState(null, '', location.pathname);
  }
  $('forget').addEventListener('click', () => {
    forget();
    status('Key forgotten.', '');
  });
  $('more').addEventListener('click', () => load(true));
  window.addEventListener('hashchange', showDetail);

  status('unauthorized: enter a service key', 'unauthorized');
})();
