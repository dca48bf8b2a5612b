// The check-in terminal (DESIGN §8). A tablet logged in like a phone shows
// today's courses, checks participants in with a signature and sends each
// check-in as an attendances mutation over the live WebSocket. Check-ins
// made while the server is away wait in localStorage (they survive a
// reload) and are sent, with the same mutation ids, when it is back.
// Logging out deletes what the page kept at once, also while the server is
// away: the token alone stays, under "logout_pending", until the server
// is told.
'use strict';

const KEY = 'therasync.checkin.';
const store = {
  get(name, fallback) {
    try {
      const v = localStorage.getItem(KEY + name);
      return v === null ? fallback : JSON.parse(v);
    } catch {
      return fallback;
    }
  },
  set(name, value) { localStorage.setItem(KEY + name, JSON.stringify(value)); },
  drop(name) { localStorage.removeItem(KEY + name); },
  // names returns the names of everything the page keeps.
  names() {
    const out = [];
    for (let i = 0; i < localStorage.length; i++) {
      const k = localStorage.key(i);
      if (k.startsWith(KEY)) out.push(k.slice(KEY.length));
    }
    return out;
  },
};

// The entities whose changes alter what the page shows.
const SHOWN = new Set(['courses', 'course_members', 'attendances', 'profiles']);

const MESSAGES = {
  already_checked_in: 'ist für diesen Kurs heute bereits eingecheckt.',
  course_full: 'Der Kurs ist voll – für Springer ist kein Platz mehr frei.',
  no_units_left: 'hat keine Einheiten mehr übrig. Bitte an der Rezeption melden: Für weitere Check-ins ist eine neue Verordnung nötig.',
  forbidden: 'Dieses Konto darf hier nicht einchecken.',
  bad_request: 'Der Check-in wurde abgelehnt.',
};

const $ = (id) => document.getElementById(id);

const state = {
  auth: store.get('auth', null), // {token, device_id, account_id, role, tenant_id}
  view: store.get('view', null), // the last GET /v1/device/checkin answer; its seq and history are the live cursor
  queue: store.get('queue', []), // check-ins not yet acknowledged, oldest first
  refused: store.get('refused', []), // messages about refused check-ins, until dismissed
  revoked: store.get('revoked', false),
  ws: null,
  online: false,
  retry: 0,
  timer: null,
  refreshing: null,
  refreshAgain: false,
  finishing: null, // the running finishLogout
};

// ---- rendering ----------------------------------------------------------

function fullName(p) { return `${p.first_name || ''} ${p.last_name || ''}`.trim() || p.profile_id; }

function clock(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  if (isNaN(d)) return '';
  const opts = { hour: '2-digit', minute: '2-digit' };
  if (state.view && state.view.time_zone) opts.timeZone = state.view.time_zone;
  return d.toLocaleTimeString('de-DE', opts);
}

function endTime(c) {
  const [h, m] = c.start_time.split(':').map(Number);
  const end = h * 60 + m + (c.duration_min || 0);
  return `${String(Math.floor(end / 60) % 24).padStart(2, '0')}:${String(end % 60).padStart(2, '0')}`;
}

const STATE_LABEL = { running: 'Läuft', next: 'Als Nächstes', later: 'Später', over: 'Vorbei' };

function waitingFor(course, profile) {
  return state.queue.find((q) => q.fields.course_id === course && q.fields.profile_id === profile);
}

function render() {
  const loggedIn = !!state.auth;
  $('login').hidden = loggedIn;
  $('logout').hidden = !loggedIn;
  $('day').hidden = !loggedIn || !state.view;
  $('revoked').hidden = !loggedIn || !state.revoked;
  const status = $('status');
  status.className = 'status';
  if (!loggedIn) status.textContent = '';
  else if (state.revoked) { status.textContent = 'Zugang entzogen'; status.classList.add('revoked'); }
  else if (state.online) { status.textContent = 'Verbunden'; status.classList.add('online'); }
  else { status.textContent = 'Offline – Check-ins werden gespeichert'; status.classList.add('offline'); }
  document.body.dataset.state = !loggedIn ? 'login' : state.revoked ? 'revoked' : state.online ? 'online' : 'offline';

  const pending = $('pending');
  pending.hidden = !loggedIn || state.queue.length === 0;
  $('pending-count').textContent = state.queue.length === 1 ? '1 Check-in' : `${state.queue.length} Check-ins`;
  $('pending-list').replaceChildren(...state.queue.map((q) => {
    const li = document.createElement('li');
    li.textContent = `${q.name} – ${q.course}${q.fields.springer ? ' (Springer)' : ''}`;
    return li;
  }));

  $('refused').hidden = !loggedIn || state.refused.length === 0;
  $('refused-list').replaceChildren(...state.refused.map((text) => {
    const li = document.createElement('li');
    li.textContent = text;
    return li;
  }));

  const v = state.view;
  if (!v) return;
  $('date').textContent = new Date(v.date + 'T12:00:00Z').toLocaleDateString('de-DE', { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
  $('no-courses').hidden = v.courses.length > 0;
  // The list is built anew only when what it shows changed: a name being
  // tapped is not replaced under the finger by an identical one.
  const shown = JSON.stringify([v.date, v.courses, state.queue.map((q) => q.id), state.revoked]);
  if (shown !== lastShown) {
    lastShown = shown;
    $('courses').replaceChildren(...v.courses.map(renderCourse));
  }
}

let lastShown = '';

function renderCourse(c) {
  const el = document.createElement('article');
  el.className = `course ${c.state}`;
  el.dataset.course = c.id;
  const head = document.createElement('div');
  head.className = 'course-head';
  const h = document.createElement('h2');
  h.textContent = c.title || c.id;
  const time = document.createElement('span');
  time.textContent = `${c.start_time}–${endTime(c)} Uhr`;
  const badge = document.createElement('span');
  badge.className = `badge ${c.state}`;
  badge.textContent = STATE_LABEL[c.state] || c.state;
  const seats = document.createElement('span');
  seats.className = 'seats';
  seats.textContent = c.capacity == null ? `${c.seats} Teilnehmende` : `${c.seats}/${c.capacity} Plätze`;
  head.append(h, time, badge, seats);

  const list = document.createElement('ul');
  list.className = 'people';
  for (const p of c.regulars) list.append(personItem(c, p, false));
  for (const p of c.springer) list.append(personItem(c, p, true));
  for (const q of state.queue) {
    if (q.fields.course_id === c.id && q.fields.springer && !c.springer.some((p) => p.profile_id === q.fields.profile_id)) {
      list.append(personItem(c, { profile_id: q.fields.profile_id, first_name: q.name, last_name: '' }, true));
    }
  }
  const springer = document.createElement('button');
  springer.className = 'quiet springer-button';
  springer.textContent = 'Springer einchecken';
  springer.disabled = state.revoked;
  springer.addEventListener('click', () => openSpringer(c));
  el.append(head, list, springer);
  return el;
}

function personItem(c, p, springer) {
  const li = document.createElement('li');
  const b = document.createElement('button');
  b.className = 'person';
  b.dataset.profile = p.profile_id;
  if (springer) b.classList.add('springer');
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = fullName(p);
  const when = document.createElement('span');
  when.className = 'when';
  const waiting = waitingFor(c.id, p.profile_id);
  if (p.checked_in_at) {
    b.classList.add('done');
    when.textContent = `✓ eingecheckt ${clock(p.checked_in_at)}`;
  } else if (waiting) {
    b.classList.add('waiting');
    when.textContent = '⏳ wartet auf Verbindung';
  } else if (p.units_total != null) {
    when.textContent = `${p.units_used || 0} von ${p.units_total} Einheiten`;
  }
  b.append(name, when);
  b.disabled = state.revoked;
  b.addEventListener('click', () => {
    if (p.checked_in_at) return toast(`${fullName(p)} ${MESSAGES.already_checked_in}`, true);
    if (waiting) return toast(`Der Check-in von ${fullName(p)} wartet schon auf die Verbindung.`, true);
    if (!springer && p.units_total != null && (p.units_used || 0) >= p.units_total) return toast(`${fullName(p)} ${MESSAGES.no_units_left}`, true);
    openSignature(c, p, springer);
  });
  li.append(b);
  return li;
}

let toastTimer = null;
function toast(text, bad) {
  const t = $('toast');
  t.textContent = text;
  t.classList.toggle('bad', !!bad);
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 6000);
}

// ---- Springer search ----------------------------------------------------

let springerCourse = null;

function openSpringer(c) {
  springerCourse = c;
  $('springer-course').textContent = `${c.title} · ${c.start_time} Uhr`;
  $('springer-search').value = '';
  showResults();
  $('springer-dialog').showModal();
  $('springer-search').focus();
}

function showResults() {
  const c = springerCourse;
  const q = $('springer-search').value.trim().toLowerCase();
  const regulars = new Set(c.regulars.map((p) => p.profile_id));
  const found = q.length < 2 ? [] : state.view.participants.filter((p) =>
    !regulars.has(p.profile_id) && fullName(p).toLowerCase().includes(q)).slice(0, 30);
  const items = found.map((p) => {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.profile = p.profile_id;
    b.textContent = fullName(p);
    b.addEventListener('click', () => {
      $('springer-dialog').close();
      if (c.springer.some((s) => s.profile_id === p.profile_id)) return toast(`${fullName(p)} ${MESSAGES.already_checked_in}`, true);
      if (waitingFor(c.id, p.profile_id)) return toast(`Der Check-in von ${fullName(p)} wartet schon auf die Verbindung.`, true);
      openSignature(c, p, true);
    });
    li.append(b);
    return li;
  });
  if (q.length >= 2 && items.length === 0) {
    const li = document.createElement('li');
    li.textContent = 'Niemand gefunden.';
    items.push(li);
  }
  $('springer-results').replaceChildren(...items);
}

// ---- signature pad ------------------------------------------------------

const pad = { drawing: false, drawn: false, target: null };

function padContext() {
  const ctx = $('pad').getContext('2d');
  ctx.lineWidth = 4;
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  ctx.strokeStyle = '#111';
  return ctx;
}

function clearPad() {
  const canvas = $('pad');
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  pad.drawn = false;
  $('sign-ok').disabled = true;
}

function padPoint(e) {
  const canvas = $('pad');
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
}

function openSignature(c, p, springer) {
  if (state.revoked) return;
  pad.target = { course: c, person: p, springer };
  $('sign-name').textContent = fullName(p);
  $('sign-course').textContent = `${c.title} · ${c.start_time} Uhr${springer ? ' · Springer' : ''}`;
  $('sign-dialog').showModal();
  clearPad();
}

function setupPad() {
  const canvas = $('pad');
  canvas.addEventListener('pointerdown', (e) => {
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    pad.drawing = true;
    const ctx = padContext();
    const [x, y] = padPoint(e);
    ctx.beginPath();
    ctx.moveTo(x, y);
    ctx.lineTo(x + 0.1, y + 0.1);
    ctx.stroke();
  });
  canvas.addEventListener('pointermove', (e) => {
    if (!pad.drawing) return;
    const ctx = padContext();
    const [x, y] = padPoint(e);
    ctx.lineTo(x, y);
    ctx.stroke();
    pad.drawn = true;
    $('sign-ok').disabled = false;
  });
  const end = () => { pad.drawing = false; };
  canvas.addEventListener('pointerup', end);
  canvas.addEventListener('pointercancel', end);
  $('sign-clear').addEventListener('click', clearPad);
  $('sign-cancel').addEventListener('click', () => $('sign-dialog').close());
  $('sign-ok').addEventListener('click', () => {
    if (!pad.drawn || !pad.target) return;
    const png = $('pad').toDataURL('image/png').replace(/^data:image\/png;base64,/, '');
    const { course, person, springer } = pad.target;
    $('sign-dialog').close();
    checkIn(course, person, springer, png);
  });
}

// ---- check-ins ----------------------------------------------------------

function checkIn(c, p, springer, signature) {
  const m = {
    id: crypto.randomUUID(),
    entity: 'attendances',
    op: 'upsert',
    row_id: crypto.randomUUID(),
    fields: {
      course_id: c.id,
      profile_id: p.profile_id,
      date: state.view.date,
      checked_in_at: new Date().toISOString(),
      signature,
      springer,
    },
    name: fullName(p),
    course: c.title,
  };
  state.queue.push(m);
  store.set('queue', state.queue);
  render();
  if (!send([m])) toast(`${m.name}: gespeichert – wird gesendet, sobald die Verbindung steht.`);
}

// send pushes mutations over the live connection; false when it is down.
function send(ms) {
  if (!state.online || !state.ws || ms.length === 0) return false;
  for (let i = 0; i < ms.length; i += 100) {
    const mutations = ms.slice(i, i + 100).map(({ id, entity, op, row_id, fields }) => ({ id, entity, op, row_id, fields }));
    state.ws.send(JSON.stringify({ type: 'push', mutations }));
  }
  return true;
}

function settle(ids, rejected) {
  const done = state.queue.filter((q) => ids.includes(q.id));
  state.queue = state.queue.filter((q) => !ids.includes(q.id));
  store.set('queue', state.queue);
  if (rejected) {
    const q = done[0];
    const who = q ? q.name : 'Check-in';
    const text = rejected.error === 'already_checked_in' ? `${who} ${MESSAGES.already_checked_in}`
      : rejected.error === 'course_full' ? `${who}: ${MESSAGES.course_full}`
      : rejected.error === 'no_units_left' ? `${who} ${MESSAGES.no_units_left}`
      : `${who}: ${MESSAGES[rejected.error] || 'Der Check-in wurde abgelehnt.'} (${rejected.message})`;
    state.refused.push(text);
    store.set('refused', state.refused);
    toast(text, true);
  } else if (done.length === 1) {
    toast(`${done[0].name} ist eingecheckt.`);
  } else if (done.length > 1) {
    toast(`${done.length} Check-ins gesendet.`);
  }
  render();
  refresh();
}

// ---- server ---------------------------------------------------------------

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.auth) headers.Authorization = `Bearer ${state.auth.token}`;
  if (options.body) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, { ...options, headers, cache: 'no-store' });
  let body = null;
  try { body = await resp.json(); } catch { body = null; }
  return { status: resp.status, body };
}

// refresh reloads the day from the server; at most one request runs, and
// one more follows if asked meanwhile.
async function refresh() {
  if (!state.auth) return;
  if (state.refreshing) { state.refreshAgain = true; return state.refreshing; }
  state.refreshing = (async () => {
    do {
      state.refreshAgain = false;
      try {
        const { status, body } = await api('/v1/device/checkin');
        if (status === 200) {
          state.view = body;
          store.set('view', body);
          setRevoked(false);
        } else if (status === 403 && body && body.error === 'device_revoked') {
          setRevoked(true);
        } else if (status === 401) {
          forget('Die Anmeldung ist nicht mehr gültig. Bitte neu anmelden.');
        }
      } catch {
        // offline: keep showing the last day
      }
    } while (state.refreshAgain);
    state.refreshing = null;
    render();
  })();
  return state.refreshing;
}

function setRevoked(revoked) {
  if (state.revoked === revoked) return;
  state.revoked = revoked;
  store.set('revoked', revoked);
  if (revoked) {
    for (const d of ['sign-dialog', 'springer-dialog']) if ($(d).open) $(d).close();
  } else {
    connect();
  }
  render();
}

function connect() {
  clearTimeout(state.timer);
  if (!state.auth || !state.view || state.ws) return;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // The cursor and the history it belongs to (DESIGN §2), none when unknown.
  const q = new URLSearchParams({ cursor: String(state.view.seq) });
  if (state.view.history) q.set('history', state.view.history);
  const ws = new WebSocket(`${proto}//${location.host}/v1/device/sync?${q}`, ['therasync', `bearer.${state.auth.token}`]);
  state.ws = ws;
  ws.onopen = () => {
    state.online = true;
    state.retry = 0;
    render();
    send(state.queue);
    refresh();
  };
  ws.onmessage = (e) => {
    let f;
    try { f = JSON.parse(e.data); } catch { return; }
    switch (f.type) {
      case 'changes':
        if (f.changes.some((c) => SHOWN.has(c.entity))) refresh();
        break;
      case 'caught_up':
        // Kept with the day's seq when the day did not say; another history
        // than the day's means the day is of a past one: read it again.
        if (!f.history || !state.view) break;
        if (!state.view.history) {
          state.view.history = f.history;
          store.set('view', state.view);
        } else if (f.history !== state.view.history) {
          refresh();
        }
        break;
      case 'ack':
        settle(f.mutation_ids, null);
        break;
      case 'reject':
        settle([f.mutation_id], f);
        break;
      case 'resync':
        refresh(); // the day, with its seq and history; the server closes, the page reconnects from them
        break;
      case 'wipe':
        forget('Dieses Gerät wurde von der Praxis gesperrt; seine Daten wurden gelöscht.');
        break;
    }
  };
  ws.onclose = (e) => {
    if (state.ws === ws) state.ws = null;
    state.online = false;
    if (e.code === 4003) setRevoked(true);
    if (e.code === 4001) return forget('Die Anmeldung ist nicht mehr gültig. Bitte neu anmelden.');
    render();
    if (!state.auth) return;
    // A refused upgrade looks like any broken connection to a browser:
    // ask the API why (revoked, logged out) before trying again.
    refresh().then(() => schedule());
  };
}

// schedule reconnects with backoff and jitter; a revoked device asks
// rarely whether it was re-enabled.
function schedule() {
  clearTimeout(state.timer);
  if (!state.auth || state.ws) return;
  if (state.revoked) {
    state.timer = setTimeout(() => refresh().then(schedule), 60000);
    return;
  }
  const base = Math.min(5000, 500 * 2 ** state.retry);
  state.retry = Math.min(state.retry + 1, 4);
  state.timer = setTimeout(() => refresh().then(connect), base / 2 + Math.random() * base / 2);
}

// forget logs the tablet out locally and deletes everything it kept, in
// localStorage and the service worker's cache, but the tokens of logouts
// the server has yet to hear of.
function forget(message) {
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close();
  clearTimeout(state.timer);
  // The device id goes too: the server keeps a wiped or revoked id revoked
  // for good, so the next login is a new device.
  for (const k of store.names()) if (k !== 'logout_pending') store.drop(k);
  if (window.caches) {
    caches.keys().then((keys) => Promise.all(keys.filter((k) => k.startsWith('therasync-')).map((k) => caches.delete(k)))).catch(() => {});
  }
  Object.assign(state, { auth: null, view: null, queue: [], refused: [], revoked: false, online: false });
  render();
  if (message) $('login-error').textContent = message;
}

// finishLogout tells the server of the logouts it could not be told of,
// each with its old token; a token the server answered for (also 401: it
// had ended) is forgotten, one it cannot hear of yet (offline, 5xx) stays.
function finishLogout() {
  if (state.finishing) return state.finishing;
  const pending = store.get('logout_pending', []);
  if (pending.length === 0) return Promise.resolve();
  state.finishing = (async () => {
    const told = [];
    for (const token of pending) {
      try {
        const resp = await fetch('/v1/device/logout', { method: 'POST', headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
        if (resp.status < 500 && resp.status !== 429) told.push(token);
      } catch {
        // offline: told later
      }
    }
    // A logout made meanwhile may have added a token.
    const left = store.get('logout_pending', []).filter((t) => !told.includes(t));
    if (left.length > 0) store.set('logout_pending', left);
    else store.drop('logout_pending');
    state.finishing = null;
    if (left.some((t) => !pending.includes(t))) finishLogout();
  })();
  return state.finishing;
}

async function login(e) {
  e.preventDefault();
  const err = $('login-error');
  err.textContent = '';
  $('login-button').disabled = true;
  finishLogout(); // a past logout the server has yet to hear of
  const deviceId = store.get('device_id', null) || crypto.randomUUID();
  store.set('device_id', deviceId);
  try {
    const { status, body } = await api('/v1/device/login', {
      method: 'POST',
      body: JSON.stringify({ email: $('email').value.trim(), code: $('code').value.trim(), device_id: deviceId, device_name: 'Check-in-Terminal', platform: 'web' }),
    });
    if (status !== 200) {
      err.textContent = {
        invalid_code: 'E-Mail-Adresse oder Zugangscode stimmen nicht, oder der Code ist abgelaufen.',
        too_many_attempts: 'Zu viele falsche Versuche. Bitte später erneut versuchen.',
        shard_not_ready: 'Die Daten des Kontos werden noch vorbereitet. Bitte in einer Minute erneut versuchen – der Code bleibt gültig.',
        app_disabled: 'Für dieses Konto ist die App nicht freigeschaltet.',
        license_missing: 'Die Praxis hat keine Lizenz für die App.',
        device_revoked: 'Dieses Gerät ist gesperrt.',
      }[body && body.error] || `Anmeldung fehlgeschlagen (${(body && body.message) || status}).`;
      return;
    }
    await setPin($('pin').value);
    state.auth = { token: body.token, device_id: deviceId, account_id: body.account_id, role: body.role, tenant_id: body.tenant_id };
    store.set('auth', state.auth);
    $('code').value = '';
    $('pin').value = '';
    await refresh();
    connect();
  } catch {
    err.textContent = 'Der Server ist nicht erreichbar.';
  } finally {
    $('login-button').disabled = false;
    render();
  }
}

// ---- the PIN behind logout ----------------------------------------------
//
// A PIN chosen at login guards logout, so that a participant cannot log the
// tablet out. It never leaves the tablet: localStorage keeps only a
// PBKDF2-SHA-256 hash (random salt, PIN_ITERATIONS rounds). PIN_TRIES wrong
// PINs in a row lock the PIN for PIN_LOCK_MS.
const PIN_ITERATIONS = 200000;
const PIN_TRIES = 5;
const PIN_LOCK_MS = 15 * 60 * 1000;

function hex(buf) { return [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join(''); }

async function pinHash(pin, saltHex) {
  const salt = new Uint8Array(saltHex.match(/../g).map((h) => parseInt(h, 16)));
  const key = await crypto.subtle.importKey('raw', new TextEncoder().encode(pin), 'PBKDF2', false, ['deriveBits']);
  return hex(await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt, iterations: PIN_ITERATIONS }, key, 256));
}

async function setPin(pin) {
  const salt = hex(crypto.getRandomValues(new Uint8Array(16)));
  store.set('pin', { salt, iterations: PIN_ITERATIONS, hash: await pinHash(pin, salt) });
  store.drop('pin_fails');
}

// askLogout asks for the PIN and logs out when it is right. A tablet
// logged in before PINs existed has none: it asks as before.
function askLogout() {
  if (!store.get('pin', null)) return logout();
  $('pin-check').value = '';
  $('pin-error').textContent = '';
  $('pin-dialog').showModal();
  $('pin-check').focus();
}

async function checkPin(e) {
  e.preventDefault();
  const kept = store.get('pin', null);
  const fails = store.get('pin_fails', { n: 0, until: 0 });
  if (Date.now() < fails.until) {
    $('pin-error').textContent = 'Zu viele falsche PINs. Bitte später erneut versuchen.';
    return;
  }
  const given = $('pin-check').value;
  $('pin-check').value = '';
  if (!kept || await pinHash(given, kept.salt) !== kept.hash) {
    const n = fails.n + 1;
    store.set('pin_fails', n >= PIN_TRIES ? { n: 0, until: Date.now() + PIN_LOCK_MS } : { n, until: 0 });
    $('pin-error').textContent = n >= PIN_TRIES ? 'Zu viele falsche PINs. Bitte später erneut versuchen.' : 'Die PIN stimmt nicht.';
    return;
  }
  $('pin-dialog').close();
  logout();
}

// logout deletes what the page kept first, whether or not the server can
// be reached, and keeps the token only to tell the server (now, or when it
// is back).
function logout() {
  if (state.queue.length > 0 && !confirm(`${state.queue.length} Check-ins wurden noch nicht gesendet und gehen verloren. Trotzdem abmelden?`)) return;
  const token = state.auth && state.auth.token;
  forget('');
  if (token) store.set('logout_pending', [...store.get('logout_pending', []), token]);
  return finishLogout();
}

function start() {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', askLogout);
  $('pin-form').addEventListener('submit', checkPin);
  $('pin-cancel').addEventListener('click', () => $('pin-dialog').close());
  $('springer-search').addEventListener('input', showResults);
  $('refused-clear').addEventListener('click', () => {
    state.refused = [];
    store.drop('refused');
    render();
  });
  setupPad();
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('sw.js', { scope: './' }).catch(() => {});
  }
  window.addEventListener('online', () => {
    finishLogout();
    if (!state.ws) schedule();
  });
  // The day moves on: courses start and end, midnight brings a new day. A
  // pending logout is tried again as often.
  setInterval(() => {
    if (state.auth) refresh();
    finishLogout();
  }, 60000);
  render();
  finishLogout();
  if (state.auth) refresh().then(() => { if (state.revoked) schedule(); else connect(); });
}

start();
