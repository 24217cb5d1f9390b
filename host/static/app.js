// Switchboard console: connect with a token, chat through the `demo-chat` plugin, see who is
// online (`presence-announcer`), the loaded plugins and every frame, receiving over WebSocket
// (`/ws`) or server-sent events (`/sse`, sending through `POST /api/v1/dispatch`).
(() => {
  'use strict';

  /** Text `ping` every this often keeps a WebSocket inside the host's idle timeout. */
  const HEARTBEAT_MS = 25_000;
  /** Frames kept in the log, and chat entries kept on screen. */
  const MAX_FRAMES = 500;
  const MAX_MESSAGES = 300;
  /** Reconnect backoff bounds. */
  const RETRY_FIRST_MS = 1_000;
  const RETRY_MAX_MS = 30_000;
  /** Toasts disappear after this long. */
  const TOAST_MS = 6_000;

  /** WebSocket close codes: what they mean and whether to reconnect. */
  const CLOSE_CODES = {
    1000: ['closed normally', false],
    1001: ['host shutting down', true],
    1006: ['connection lost', true],
    1007: ['text frame not UTF-8', false],
    1008: ['message rate exceeded', true],
    1009: ['frame too large', false],
    1011: ['internal error', true],
    4000: ['idle timeout', true],
    4001: ['too slow to keep up; messages were dropped', true],
    4002: ['replaced by a newer session', false],
  };

  const TRANSPORT_LABEL = { ws: 'WebSocket', sse: 'SSE' };
  const STORE_KEY = 'switchboard.console';

  // ---------------------------------------------------------------- DOM helpers

  const $ = (id) => document.getElementById(id);

  /** Creates an element: `props` are assigned (with `dataset` merged), children appended. */
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    const { dataset, ...rest } = props;
    Object.assign(node, rest);
    if (dataset) Object.assign(node.dataset, dataset);
    for (const child of children.flat()) {
      if (child == null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clock(date = new Date()) {
    return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  }

  function timeEl() {
    const now = new Date();
    return el('time', { dateTime: now.toISOString(), textContent: clock(now) });
  }

  /** Appends to a scrolling list, keeping the view pinned to the bottom if it was there. */
  function appendScrolled(list, node, max) {
    const pinned = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(node);
    while (list.childElementCount > max) list.firstElementChild.remove();
    if (pinned) list.scrollTop = list.scrollHeight;
  }

  /** A stable colour per user id, for avatars. */
  const AVATAR_COLOURS = ['#4f46e5', '#0e9f6e', '#e0590b', '#0891b2', '#c026d3', '#d97706', '#2563eb', '#dc2626'];
  function userColour(id) {
    let h = 2166136261;
    for (const c of String(id)) h = Math.imul(h ^ c.codePointAt(0), 16777619);
    return AVATAR_COLOURS[(h >>> 0) % AVATAR_COLOURS.length];
  }

  // ---------------------------------------------------------------- state

  const app = {
    /** Token of the current (or last) connection. */
    token: '',
    /** `ws` or `sse`. */
    transport: 'ws',
    /** The open transport: `{ kind, send(envelope), close() }`, or null. */
    conn: null,
    /** Content of the `session` greeting of the current connection. */
    session: null,
    /** Whether the user wants to be connected (drives reconnects). */
    wanted: false,
    retries: 0,
    retryTimer: 0,
    /** Online user ids of the session's user type. */
    online: new Set(),
    /** Outgoing group messages waiting for their own echo: `{ text, node }`. */
    pendingGroup: [],
    /** False once the host said no plugin claims `presence-list`. */
    presence: true,
  };

  // ---------------------------------------------------------------- status and toasts

  function setStatus(state, text) {
    $('status').dataset.state = state;
    $('status-text').textContent = text;
  }

  function toast(kind, title, detail) {
    const node = el('div', { className: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' },
      el('div', {}, el('b', { textContent: title }), detail ? el('p', { textContent: detail }) : null),
      el('button', { type: 'button', ariaLabel: 'Dismiss', textContent: '×', onclick: () => node.remove() }));
    $('toasts').append(node);
    while ($('toasts').childElementCount > 4) $('toasts').firstElementChild.remove();
    setTimeout(() => node.remove(), TOAST_MS);
  }

  // ---------------------------------------------------------------- frame log

  /**
   * Adds a line to the frame log. `dir` is `in`, `out` or `sys`; `via` names the path when it
   * is not the socket itself (e.g. the dispatch endpoint).
   */
  function logFrame(dir, text, { heartbeat = false, error = false, via = '' } = {}) {
    const arrow = { in: '↓', out: '↑', sys: '•' }[dir];
    const classes = ['frame', dir, heartbeat && 'hb', error && 'err'].filter(Boolean).join(' ');
    appendScrolled($('log'), el('li', { className: classes },
      el('span', { className: 'dir', textContent: arrow }),
      timeEl(),
      el('span', { className: 'body' }, via ? el('span', { className: 'via', textContent: `${via} ` }) : null, text)),
    MAX_FRAMES);
  }

  // ---------------------------------------------------------------- chat view

  function addChat(node) {
    appendScrolled($('messages'), node, MAX_MESSAGES);
  }

  function chatMessage({ out, who, badge, text, state }) {
    return el('li', { className: `msg ${out ? 'out' : 'in'}`, dataset: { kind: badge } },
      el('div', { className: 'meta' },
        el('span', { className: 'who', textContent: who }),
        el('span', { className: `pill ${badge === 'group' ? 'muted' : ''}`, textContent: badge }),
        timeEl()),
      el('div', { className: 'bubble', textContent: text }),
      state ? el('span', { className: 'state', textContent: state }) : null);
  }

  function setMessageState(node, text, kind) {
    const state = node.querySelector('.state');
    if (!state) return;
    state.textContent = text;
    state.className = `state ${kind || ''}`;
    if (kind === 'err') node.classList.add('failed');
  }

  function addEvent(text, online) {
    addChat(el('li', { className: 'event' },
      online === undefined ? null : el('span', { className: `pdot ${online ? 'on' : ''}` }),
      el('span', { textContent: text }), timeEl()));
  }

  /** A message of a type the page has no special view for (e.g. an HTTP push). */
  function addNotice(type, content, isError = false) {
    let body;
    if (content && typeof content === 'object' && typeof content.text === 'string') {
      body = el('div', { className: 'notice-body', textContent: content.text });
    } else if (typeof content === 'string') {
      body = el('div', { className: 'notice-body', textContent: content });
    } else {
      body = el('div', { className: 'notice-body json', textContent: JSON.stringify(content) });
    }
    addChat(el('li', { className: `notice ${isError ? 'error' : ''}`, dataset: { type } },
      el('div', { className: 'notice-head' }, el('span', { className: 'type', textContent: type }), timeEl()),
      body));
  }

  /** Shows an error envelope's content (or an HTTP error body) in the chat and as a toast. */
  function showError(err) {
    const code = err.code || 'error';
    let message = err.message || '';
    if (code === 'unknown_type' && err.type === 'demo-message-send') {
      message += ' Is the demo-chat plugin loaded?';
    }
    addNotice(err.type ? `${code} · ${err.type}` : code, message, true);
    toast('error', code, message);
  }

  // ---------------------------------------------------------------- session and presence view

  function showSession(s) {
    $('s-session').textContent = s.session_id;
    $('s-user').textContent = s.user_id;
    $('s-type').textContent = s.user_type;
    $('s-tenant').textContent = s.tenant_id ?? '—';
    $('s-node').textContent = s.node_id;
    $('s-transport').replaceChildren(el('span', { className: 'pill ok', textContent: TRANSPORT_LABEL[app.transport] }));
    $('s-expiry').textContent = tokenExpiry(app.token);
    $('session').hidden = false;
    $('session-empty').hidden = true;
    const who = $('whoami');
    who.replaceChildren('User ', el('b', { textContent: s.user_id }), ` · type ${s.user_type}`,
      s.tenant_id != null ? ` · tenant ${s.tenant_id}` : '');
    who.hidden = false;
  }

  function clearSession() {
    app.session = null;
    $('session').hidden = true;
    $('session-empty').hidden = false;
    $('session-empty').textContent = 'Not connected.';
    $('whoami').hidden = true;
    app.online.clear();
    renderOnline();
    for (const p of app.pendingGroup) setMessageState(p.node, 'not confirmed', 'err');
    app.pendingGroup = [];
    updateControls();
  }

  function renderOnline() {
    const list = $('online-users');
    const me = app.session?.user_id;
    const ids = [...app.online].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    list.dataset.empty = !app.session ? 'Connect to see who is online.'
      : app.presence ? 'Nobody online.' : 'The presence-announcer plugin is not loaded.';
    list.replaceChildren(...ids.map((id) => {
      const pick = () => { $('to-user').value = id; $('text').focus(); };
      return el('li', {
        className: 'user', tabIndex: 0, title: `Send to user ${id}`, dataset: { userId: id }, onclick: pick,
        onkeydown: (e) => { if (e.key === 'Enter') pick(); },
      },
      el('span', { className: 'avatar', textContent: id.slice(0, 2).toUpperCase(), style: `background:${userColour(id)}` }),
      el('span', { className: 'name' }, `User ${id}`, id === me ? el('span', { className: 'pill muted', textContent: 'you', style: 'margin-left:6px' }) : null),
      el('span', { className: 'action', textContent: 'message →' }));
    }));
    $('online-count').textContent = String(ids.length);
    $('online-datalist').replaceChildren(...ids.filter((id) => id !== me).map((id) => el('option', { value: id })));
  }

  function renderPlugins(plugins, note) {
    const list = $('plugins');
    const types = [];
    list.replaceChildren(...plugins.map((p) => {
      types.push(...(p.message_types || []));
      return el('li', { className: 'plugin', dataset: { name: p.name } },
        el('div', { className: 'plugin-head' },
          el('span', { className: 'plugin-name', textContent: p.name }),
          el('span', { className: 'plugin-version', textContent: `v${p.version}` })),
        el('div', { className: 'types' }, (p.message_types || []).map((t) => el('button', {
          type: 'button', className: 'type-chip', textContent: t, title: 'Send a raw message of this type',
          onclick: () => { $('raw-type').value = t; $('raw-content').focus(); },
        }))));
    }));
    if (note) list.append(el('li', { className: 'note', textContent: note }));
    list.dataset.empty = 'No plugins are loaded.';
    $('types-datalist').replaceChildren(...types.map((t) => el('option', { value: t })));
  }

  async function loadPlugins() {
    try {
      const res = await fetch('/api/v1/plugins', { headers: { Authorization: `Bearer ${app.token}` } });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) {
        renderPlugins([], res.status === 401
          ? 'This host lists plugins to API-key holders only.'
          : `Could not list plugins: ${body.message || res.status}`);
        return;
      }
      renderPlugins(body.plugins || []);
    } catch (e) {
      renderPlugins([], `Could not list plugins: ${e.message}`);
    }
  }

  function tokenExpiry(token) {
    try {
      const payload = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
      if (typeof payload.exp !== 'number') return 'no expiry';
      const exp = new Date(payload.exp * 1000);
      const mins = Math.round((exp - Date.now()) / 60_000);
      if (mins < 0) return `expired at ${clock(exp)}`;
      return `expires ${clock(exp)} (in ${mins < 60 ? `${mins} min` : `${Math.round(mins / 60)} h`})`;
    } catch {
      return 'not a readable JWT';
    }
  }

  // ---------------------------------------------------------------- inbound frames

  function handleFrame(text) {
    if (text === 'pong') {
      logFrame('in', 'pong', { heartbeat: true });
      return;
    }
    let env;
    try {
      env = JSON.parse(text);
    } catch {
      logFrame('in', text);
      return;
    }
    logFrame('in', text, { error: env?.type === 'error' });
    if (!env || typeof env !== 'object') return;
    const { type, content } = env;
    switch (type) {
      case 'session': onSession(content); break;
      case 'demo-message-receive': onDemoMessage(content); break;
      case 'presence-list':
        app.online = new Set((content?.users || []).map(String));
        renderOnline();
        break;
      case 'presence-changed': onPresenceChanged(content); break;
      case 'room-joined': addRoomLine(`joined ${content?.room}`); break;
      case 'room-left': addRoomLine(`left ${content?.room}`); break;
      case 'room-message':
        addRoomLine(`[${content?.room}] ${content?.from?.user_id ?? '?'}: ${content?.text ?? ''}`);
        break;
      case 'error':
        if (content?.code === 'unknown_type' && content?.type === 'presence-list') {
          app.presence = false;
          renderOnline();
          return;
        }
        showError(content || {});
        break;
      default: addNotice(String(type), content);
    }
  }

  function addRoomLine(text) {
    appendScrolled($('room-messages'), el('li', {}, timeEl(), ' ', text), 200);
  }

  function onSession(s) {
    app.session = s;
    app.retries = 0;
    if (app.conn) app.conn.sessionId = s.session_id;
    setStatus('open', `Connected · ${TRANSPORT_LABEL[app.transport]}`);
    addEvent(`Connected over ${TRANSPORT_LABEL[app.transport]} as user ${s.user_id}`, true);
    showSession(s);
    updateControls();
    requestPresence();
    loadPlugins();
  }

  function onDemoMessage(m) {
    const from = String(m?.fromUserId ?? '?');
    const text = String(m?.text ?? '');
    const mine = app.session && from === app.session.user_id;
    if (mine && !m.single) {
      // Our own group message coming back: confirms delivery.
      const i = app.pendingGroup.findIndex((p) => p.text === text);
      if (i >= 0) {
        setMessageState(app.pendingGroup[i].node, 'delivered to the group', 'ok');
        app.pendingGroup.splice(i, 1);
        return;
      }
      addChat(chatMessage({ out: true, who: 'You (another session)', badge: 'group', text }));
      return;
    }
    addChat(chatMessage({ out: false, who: `User ${from}`, badge: m.single ? 'direct' : 'group', text }));
  }

  function onPresenceChanged(c) {
    if (!c || c.userId == null) return;
    const id = String(c.userId);
    const was = app.online.has(id);
    if (c.online) app.online.add(id); else app.online.delete(id);
    renderOnline();
    if (app.session && id === app.session.user_id) return;
    if (was !== Boolean(c.online)) addEvent(`User ${id} ${c.online ? 'came online' : 'went offline'}`, c.online);
  }

  function requestPresence() {
    if (app.presence) send('presence-list', null, { quiet: true });
  }

  // ---------------------------------------------------------------- transports

  /**
   * Opens `/ws`. Browsers cannot set headers on a WebSocket, so a JWT travels as the
   * subprotocol (kept out of URLs and access logs); anything else goes in the query.
   */
  function openWebSocket(token, on) {
    const url = new URL('/ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const jwt = /^[\w-]+\.[\w-]+\.[\w-]*$/.test(token);
    if (!jwt) url.searchParams.set('token', token);
    const ws = jwt ? new WebSocket(url, [token]) : new WebSocket(url);
    let opened = false;
    let heartbeat = 0;
    ws.onopen = () => {
      opened = true;
      heartbeat = setInterval(() => {
        if (ws.readyState !== WebSocket.OPEN) return;
        ws.send('ping');
        logFrame('out', 'ping', { heartbeat: true });
      }, HEARTBEAT_MS);
    };
    ws.onmessage = (e) => on.frame(typeof e.data === 'string' ? e.data : '[binary frame]');
    ws.onclose = (e) => {
      clearInterval(heartbeat);
      on.close({ code: e.code, reason: e.reason, opened });
    };
    return {
      kind: 'ws',
      sessionId: null,
      async send(envelope) {
        if (ws.readyState !== WebSocket.OPEN) throw new Error('the WebSocket is not open');
        const text = JSON.stringify(envelope);
        ws.send(text);
        logFrame('out', text);
      },
      close() {
        clearInterval(heartbeat);
        ws.onclose = null;
        ws.onmessage = null;
        ws.close(1000);
      },
    };
  }

  /**
   * Opens `/sse?token=` (`EventSource` cannot send headers); sends go to
   * `POST /api/v1/dispatch?session_id=` with the token as a bearer header.
   */
  function openSse(token, on) {
    const url = new URL('/sse', location.href);
    url.searchParams.set('token', token);
    const es = new EventSource(url);
    let opened = false;
    es.onopen = () => { opened = true; };
    es.onmessage = (e) => on.frame(e.data);
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        on.close({ code: null, reason: opened ? 'the event stream was closed' : 'the host refused the event stream', opened });
      } else {
        // The browser reconnects by itself; the new stream starts with a new session.
        on.reconnecting();
      }
    };
    const conn = {
      kind: 'sse',
      sessionId: null,
      async send(envelope) {
        if (!conn.sessionId) throw new Error('no session yet');
        const path = `/api/v1/dispatch?session_id=${encodeURIComponent(conn.sessionId)}`;
        const text = JSON.stringify(envelope);
        logFrame('out', text, { via: 'POST dispatch' });
        const res = await fetch(path, {
          method: 'POST',
          headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
          body: text,
        });
        const body = await res.text();
        if (!res.ok) {
          logFrame('in', `${res.status} ${body}`, { error: true, via: 'dispatch' });
          let detail;
          try { detail = JSON.parse(body); } catch { detail = { code: `http_${res.status}`, message: body }; }
          const err = new Error(detail.message || `HTTP ${res.status}`);
          err.detail = { ...detail, type: envelope.type };
          throw err;
        }
        if (res.status !== 202 && body) logFrame('in', body, { via: 'dispatch' });
      },
      close() {
        es.onerror = null;
        es.onmessage = null;
        es.close();
      },
    };
    return conn;
  }

  // ---------------------------------------------------------------- connection lifecycle

  function connect() {
    clearTimeout(app.retryTimer);
    app.retryTimer = 0;
    dropConnection();
    app.wanted = true;
    app.presence = true;
    const label = TRANSPORT_LABEL[app.transport];
    setStatus('connecting', app.retries ? `Reconnecting over ${label}…` : `Connecting over ${label}…`);
    logFrame('sys', `connecting over ${label}`);
    const open = app.transport === 'sse' ? openSse : openWebSocket;
    const conn = open(app.token, {
      frame: (text) => { if (app.conn === conn) handleFrame(text); },
      close: (info) => {
        if (app.conn !== conn) return;
        app.conn = null;
        onClosed(info);
      },
      reconnecting: () => {
        if (app.conn !== conn) return;
        clearSession();
        setStatus('connecting', `Reconnecting over ${label}…`);
        logFrame('sys', 'event stream interrupted; reconnecting');
      },
    });
    app.conn = conn;
    updateControls();
  }

  /** Closes the current transport without triggering reconnects. */
  function dropConnection() {
    const conn = app.conn;
    app.conn = null;
    if (conn) conn.close();
    if (app.session) clearSession();
  }

  function disconnect() {
    app.wanted = false;
    clearTimeout(app.retryTimer);
    app.retryTimer = 0;
    const had = app.conn;
    dropConnection();
    if (had) logFrame('sys', 'disconnected');
    setStatus('idle', 'Not connected');
    updateControls();
  }

  function onClosed({ code, reason, opened }) {
    clearSession();
    const [meaning, retry] = CLOSE_CODES[code] || [reason || 'closed', true];
    const what = code ? `${meaning} (${code})` : meaning;
    if (opened) {
      logFrame('sys', `closed: ${what}${reason && reason !== meaning ? ` — ${reason}` : ''}`, { error: code !== 1000 });
    }
    // A first attempt that fails is a refusal; while reconnecting it is the host still being
    // away, unless the token itself has become unusable.
    const refused = !opened && (app.retries === 0 || tokenProblem(app.token));
    if (!app.wanted) {
      setStatus('idle', 'Not connected');
    } else if (refused) {
      app.wanted = false;
      setStatus('error', 'Connection refused');
      explainRefusal(app.token);
    } else if (opened && !retry) {
      app.wanted = false;
      setStatus('error', `Closed: ${what}`);
      addEvent(`Connection closed: ${what}`);
    } else {
      const base = code === 1008 ? 10 * RETRY_FIRST_MS : RETRY_FIRST_MS;
      const delay = Math.min(RETRY_MAX_MS, base * 2 ** app.retries) * (0.75 + Math.random() * 0.5);
      app.retries += 1;
      const seconds = Math.ceil(delay / 1000);
      if (opened) {
        addEvent(`Connection closed: ${what}; reconnecting`);
        setStatus('connecting', `${what} · retrying in ${seconds} s`);
      } else {
        logFrame('sys', `host unreachable; retrying in ${seconds} s`);
        setStatus('connecting', `Host unreachable · retrying in ${seconds} s`);
      }
      app.retryTimer = setTimeout(connect, delay);
    }
    updateControls();
  }

  /** Why the token cannot work, as far as the page can tell without the host, or null. */
  function tokenProblem(token) {
    const expiry = tokenExpiry(token);
    return expiry.startsWith('expired') || expiry.startsWith('not a') ? `The token is ${expiry}.` : null;
  }

  /**
   * Browsers hide why a WebSocket or EventSource handshake failed, so ask an API route that
   * checks the same token: its 401 body names the problem (e.g. an expired token).
   */
  async function explainRefusal(token) {
    let detail = tokenProblem(token);
    if (detail) {
      logFrame('sys', `refused: ${detail}`, { error: true });
      toast('error', 'The host refused the connection', detail);
      return;
    }
    detail = 'The token may be invalid or expired, or a connection limit was reached.';
    try {
      const res = await fetch('/api/v1/plugins', { headers: { Authorization: `Bearer ${token}` } });
      if (res.status === 401) {
        const body = await res.json().catch(() => ({}));
        if (body.code && !String(body.code).includes('api_key')) detail = `${body.code}: ${body.message}`;
      } else if (res.ok) {
        detail = 'The token is valid: the host may be at a connection limit or shutting down.';
      }
    } catch { /* keep the generic explanation */ }
    logFrame('sys', `refused: ${detail}`, { error: true });
    toast('error', 'The host refused the connection', detail);
  }

  /** Sends an envelope on the current transport; errors are shown, never thrown. */
  async function send(type, content, { quiet = false } = {}) {
    if (!app.conn || !app.session) {
      if (!quiet) toast('error', 'Not connected', 'Connect first.');
      return false;
    }
    try {
      await app.conn.send({ type, content });
      return true;
    } catch (e) {
      if (e.detail) {
        if (e.detail.code === 'unknown_type' && type === 'presence-list') {
          app.presence = false;
          renderOnline();
        } else {
          showError(e.detail);
        }
      } else {
        showError({ code: 'send_failed', message: e.message, type });
      }
      return false;
    }
  }

  // ---------------------------------------------------------------- getting a token

  async function devToken() {
    const userId = $('user-id').value.trim();
    const userType = Number($('user-type').value);
    const tenant = $('tenant-id').value.trim();
    if (!userId || !Number.isInteger(userType) || userType < 0) {
      toast('error', 'Check the form', 'A user id and a whole-number user type are needed.');
      return null;
    }
    const body = { user_id: userId, user_type: userType };
    if (tenant) body.tenant_id = tenant;
    let res;
    try {
      res = await fetch('/api/v1/dev/token', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
    } catch (e) {
      toast('error', 'Host unreachable', e.message);
      return null;
    }
    if (res.status === 404) {
      devTokensOff();
      return null;
    }
    const json = await res.json().catch(() => ({}));
    if (!res.ok || !json.token) {
      toast('error', json.code || `HTTP ${res.status}`, json.message || 'Could not get a dev token.');
      return null;
    }
    $('token').value = json.token;
    return json.token;
  }

  function devTokensOff() {
    $('tab-dev').disabled = true;
    $('tab-dev').title = 'Dev tokens are off on this host';
    selectTab('token');
    toast('error', 'Dev tokens are off', 'This host does not sign tokens. Paste one signed with its key.');
  }

  // ---------------------------------------------------------------- controls

  function selectTab(which) {
    const dev = which === 'dev';
    $('tab-dev').setAttribute('aria-selected', String(dev));
    $('tab-token').setAttribute('aria-selected', String(!dev));
    $('dev-fields').hidden = !dev;
    $('token-fields').hidden = dev;
    save();
  }

  function updateControls() {
    const live = Boolean(app.conn) || Boolean(app.retryTimer && app.wanted);
    const ready = Boolean(app.conn && app.session);
    $('connect').textContent = live ? 'Reconnect' : 'Connect';
    $('disconnect').disabled = !live && !app.wanted;
    $('send').disabled = !ready;
    $('raw-send').disabled = !ready;
    for (const id of ['room-join', 'room-leave', 'room-say']) $(id).disabled = !ready;
    $('refresh-online').disabled = !ready || !app.presence;
  }

  function save() {
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify({
        userId: $('user-id').value,
        userType: $('user-type').value,
        tenant: $('tenant-id').value,
        transport: app.transport,
        tab: $('tab-dev').getAttribute('aria-selected') === 'true' ? 'dev' : 'token',
      }));
    } catch { /* storage may be unavailable */ }
  }

  function restore() {
    let saved;
    try { saved = JSON.parse(localStorage.getItem(STORE_KEY) || 'null'); } catch { saved = null; }
    if (!saved) return;
    if (saved.userId) $('user-id').value = saved.userId;
    if (saved.userType) $('user-type').value = saved.userType;
    if (saved.tenant) $('tenant-id').value = saved.tenant;
    if (saved.transport === 'sse' || saved.transport === 'ws') {
      app.transport = saved.transport;
      $(`transport-${saved.transport}`).checked = true;
    }
    if (saved.tab === 'token') selectTab('token');
  }

  $('tab-dev').addEventListener('click', () => selectTab('dev'));
  $('tab-token').addEventListener('click', () => selectTab('token'));
  for (const id of ['user-id', 'user-type', 'tenant-id']) $(id).addEventListener('change', save);

  $('connect-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('connect').disabled = true;
    try {
      let token;
      if ($('tab-dev').getAttribute('aria-selected') === 'true') {
        token = await devToken();
      } else {
        token = $('token').value.trim();
        if (!token) toast('error', 'No token', 'Paste a token first.');
      }
      if (!token) return;
      app.token = token;
      app.retries = 0;
      connect();
    } finally {
      $('connect').disabled = false;
    }
  });

  $('disconnect').addEventListener('click', disconnect);

  for (const radio of document.querySelectorAll('input[name="transport"]')) {
    radio.addEventListener('change', () => {
      app.transport = radio.value;
      save();
      // Switching while connected moves the same token to the other transport.
      if (app.wanted && app.token) {
        app.retries = 0;
        connect();
      }
    });
  }

  $('send-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = $('text').value;
    if (!text.trim()) return;
    const to = $('to-user').value.trim();
    const node = chatMessage({
      out: true, who: to ? `To user ${to}` : 'To everyone', badge: to ? 'direct' : 'group', text, state: 'sending…',
    });
    addChat(node);
    $('text').value = '';
    const pending = { text, node };
    if (!to) app.pendingGroup.push(pending);
    const ok = await send('demo-message-send', { text, toUserId: to });
    if (!ok) {
      setMessageState(node, 'not sent', 'err');
      app.pendingGroup = app.pendingGroup.filter((p) => p !== pending);
    } else if (to) {
      setMessageState(node, 'sent');
    } else if (app.pendingGroup.includes(pending)) {
      setMessageState(node, 'sent');
    }
    $('text').focus();
  });

  const roomName = () => $('room-name').value.trim();
  $('room-join').addEventListener('click', () => { if (roomName()) send('room-join', { room: roomName() }); });
  $('room-leave').addEventListener('click', () => { if (roomName()) send('room-leave', { room: roomName() }); });
  $('room-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = $('room-text').value;
    if (!roomName() || !text.trim()) return;
    if (await send('room-say', { room: roomName(), text })) $('room-text').value = '';
  });

  $('raw-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const type = $('raw-type').value.trim();
    const raw = $('raw-content').value.trim();
    if (!type) {
      toast('error', 'No type', 'Give the message a type.');
      return;
    }
    let content = null;
    if (raw) {
      try {
        content = JSON.parse(raw);
      } catch {
        toast('error', 'Content is not JSON', 'Quote plain text, e.g. "hello".');
        return;
      }
    }
    await send(type, content);
  });
  $('raw-content').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) $('raw-form').requestSubmit();
  });

  $('refresh-online').addEventListener('click', requestPresence);
  $('clear-chat').addEventListener('click', () => $('messages').replaceChildren());
  $('clear-log').addEventListener('click', () => $('log').replaceChildren());
  $('show-heartbeats').addEventListener('change', (e) => $('log').classList.toggle('hide-heartbeats', !e.target.checked));

  window.addEventListener('pagehide', () => { app.wanted = false; dropConnection(); });

  restore();
  renderOnline();
  updateControls();
})();
