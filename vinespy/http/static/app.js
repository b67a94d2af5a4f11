/*
 * vinespy's built-in web chat: plain JavaScript, no build step, no libraries.
 *
 * Layers, from the wire up:
 *   xml helpers    build stanzas as DOM elements (DOMParser / XMLSerializer)
 *   WsTransport    RFC 7395: subprotocol "xmpp", <open/>/<close/> framing,
 *                  one stanza per message, every stanza in jabber:client
 *   BoshTransport  XEP-0124 + XEP-0206: <body/> wrappers, incrementing rid,
 *                  up to requests-1 empty long-polls outstanding (one slot
 *                  stays free for sending), xmpp:restart, terminate
 *   discover()     XEP-0156 /.well-known/host-meta.json, with the server's
 *                  default paths as fallback
 *   scram()        SCRAM-SHA-256 / SCRAM-SHA-1 (RFC 5802) over WebCrypto;
 *                  PLAIN only when no SCRAM is offered
 *   Session        one login: negotiate (SASL, restart, bind), then IQs by
 *                  id, roster pushes, pings; stanzas up to the App
 *   App            the page: roster with presence, subscription prompts,
 *                  one-to-one chat with per-contact history (memory only),
 *                  connection state, reconnect with backoff, logout
 *
 * Both transports give the Session the same interface: start(domain),
 * send(element), restart(), close(), and callbacks onStanza(element) and
 * onClosed(reason). "?transport=bosh" (or "websocket") forces one; otherwise
 * WebSocket is tried first and BOSH when the WebSocket cannot be opened.
 */
'use strict';

const NS = {
  client: 'jabber:client',
  framing: 'urn:ietf:params:xml:ns:xmpp-framing',
  streams: 'http://etherx.jabber.org/streams',
  sasl: 'urn:ietf:params:xml:ns:xmpp-sasl',
  bind: 'urn:ietf:params:xml:ns:xmpp-bind',
  session: 'urn:ietf:params:xml:ns:xmpp-session',
  stanzas: 'urn:ietf:params:xml:ns:xmpp-stanzas',
  roster: 'jabber:iq:roster',
  ping: 'urn:xmpp:ping',
  httpbind: 'http://jabber.org/protocol/httpbind',
  xbosh: 'urn:xmpp:xbosh',
  xml: 'http://www.w3.org/XML/1998/namespace',
};

/* ---------------------------------------------------------------- xml */

const xmlDoc = document.implementation.createDocument(null, null, null);

/** An element in namespace ns; children are elements or strings. */
function el(ns, name, attrs = {}, children = []) {
  const e = xmlDoc.createElementNS(ns, name);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === 'xml:lang') e.setAttributeNS(NS.xml, k, v);
    else e.setAttribute(k, String(v));
  }
  for (const c of [].concat(children)) {
    if (c === undefined || c === null) continue;
    e.append(typeof c === 'string' ? xmlDoc.createTextNode(c) : c);
  }
  return e;
}

const serialize = (e) => new XMLSerializer().serializeToString(e);

/** The root element of one XML text, or null if it is not well-formed. */
function parseXml(text) {
  const doc = new DOMParser().parseFromString(text, 'text/xml');
  if (doc.getElementsByTagName('parsererror').length) return null;
  return doc.documentElement;
}

const child = (e, ns, name) => [...e.children].find(
  (c) => c.localName === name && (ns === null || c.namespaceURI === ns)) || null;

const childText = (e, ns, name) => {
  const c = child(e, ns, name);
  return c ? c.textContent : null;
};

let idCounter = 0;
const newId = () => `v${Date.now().toString(36)}${(idCounter++).toString(36)}`;

/* ---------------------------------------------------------------- jid */

function bareJid(jid) {
  const s = String(jid || '');
  const slash = s.indexOf('/');
  return (slash < 0 ? s : s.slice(0, slash)).toLowerCase();
}

function resourceOf(jid) {
  const slash = String(jid || '').indexOf('/');
  return slash < 0 ? '' : jid.slice(slash + 1);
}

function splitJid(jid) {
  const bare = bareJid(jid);
  const at = bare.indexOf('@');
  return at < 0 ? { local: '', domain: bare } : { local: bare.slice(0, at), domain: bare.slice(at + 1) };
}

/* ----------------------------------------------------------- base64 etc */

const utf8 = (s) => new TextEncoder().encode(s);
const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)));
const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const b64text = (s) => b64(utf8(s));
const textOfB64 = (s) => new TextDecoder().decode(unb64(s));

/* -------------------------------------------------------- transports */

class TransportError extends Error {}

/** RFC 7395: XMPP over WebSocket. */
class WsTransport {
  constructor(url) {
    this.url = url;
    this.name = 'websocket';
    this.ws = null;
    this.onStanza = () => {};
    this.onClosed = () => {};
    this.closed = false;
  }

  /** Resolves once the server's <open/> arrives; rejects if the socket fails first. */
  start(domain) {
    this.domain = domain;
    return new Promise((resolve, reject) => {
      let opened = false;
      const ws = new WebSocket(this.url, 'xmpp');
      this.ws = ws;
      ws.onopen = () => {
        if (ws.protocol !== 'xmpp') {
          reject(new TransportError('the server did not accept the "xmpp" subprotocol'));
          ws.close();
          return;
        }
        this.sendOpen();
      };
      ws.onmessage = (ev) => {
        const e = parseXml(ev.data);
        if (!e) return this.fail('the server sent a frame that is not well-formed XML');
        if (e.namespaceURI === NS.framing && e.localName === 'open') {
          if (!opened) { opened = true; resolve(); }
          return;
        }
        if (e.namespaceURI === NS.framing && e.localName === 'close') {
          const other = e.getAttribute('see-other-uri');
          return this.finish(other ? { seeOther: other } : { reason: 'the server closed the stream' });
        }
        this.onStanza(e);
      };
      ws.onerror = () => {};
      ws.onclose = (ev) => {
        if (!opened) reject(new TransportError(`WebSocket could not be opened (${ev.code})`));
        this.finish({ reason: `connection lost (${ev.code})` });
      };
    });
  }

  sendOpen() {
    this.ws.send(serialize(el(NS.framing, 'open', { to: this.domain, version: '1.0' })));
  }

  send(stanza) {
    if (!this.closed && this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(serialize(stanza));
  }

  restart() { this.sendOpen(); }

  fail(reason) {
    if (this.ws) this.ws.close();
    this.finish({ reason });
  }

  finish(info) {
    if (this.closed) return;
    this.closed = true;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.close(1000);
    }
    this.onClosed(info);
  }

  /** RFC 7395 §3.6: <close/>, then the server closes the socket. */
  close() {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const prev = this.onClosed;
      this.onClosed = (info) => { prev(info); resolve(); };
      try {
        this.ws.send(serialize(el(NS.framing, 'close')));
      } catch (err) { /* already gone */ }
      setTimeout(() => this.finish({ reason: 'logged out' }), 2000);
    });
  }
}

/** XEP-0124 (BOSH) carrying XEP-0206 (XMPP over BOSH). */
class BoshTransport {
  constructor(url) {
    this.url = url;
    this.name = 'bosh';
    this.onStanza = () => {};
    this.onClosed = () => {};
    this.closed = false;
    this.sid = null;
    // a random start leaves room for 2^53 - 2^32 requests (XEP-0124 §7)
    this.rid = Math.floor(Math.random() * 2 ** 32) + 1;
    this.queue = [];
    this.inflight = 0;
    this.requests = 2;
    this.wait = 60;
    this.polling = 0;
    this.restartPending = false;
    this.terminatePending = null;
    this.scheduled = false;
    this.lastEmpty = 0;
  }

  body(attrs, children = []) {
    return el(NS.httpbind, 'body', { rid: this.rid++, sid: this.sid, ...attrs }, children);
  }

  async start(domain) {
    this.domain = domain;
    const b = this.body({
      to: domain, 'xml:lang': 'en', wait: this.wait, hold: 1, ver: '1.6',
      content: 'text/xml; charset=utf-8',
    });
    b.setAttributeNS(NS.xbosh, 'xmpp:version', '1.0');
    let resp;
    try {
      resp = await this.post(b, 15);
    } catch (err) {
      throw new TransportError(`BOSH session could not be created: ${err.message}`);
    }
    if (!resp || resp.getAttribute('type') === 'terminate' || !resp.getAttribute('sid')) {
      throw new TransportError(`BOSH session refused (${resp && resp.getAttribute('condition')})`);
    }
    this.sid = resp.getAttribute('sid');
    this.requests = Math.max(1, Number(resp.getAttribute('requests')) || 2);
    this.wait = Number(resp.getAttribute('wait')) || this.wait;
    this.polling = Number(resp.getAttribute('polling')) || 0;
    this.deliver(resp);
    this.pump();
  }

  /** One HTTP request; resends the same rid after a network error (XEP-0124 §14.3). */
  async post(body, timeoutS) {
    const text = serialize(body);
    for (let attempt = 0; ; attempt++) {
      const ctl = new AbortController();
      const timer = setTimeout(() => ctl.abort(), timeoutS * 1000);
      let r;
      try {
        r = await fetch(this.url, {
          method: 'POST', body: text, signal: ctl.signal, cache: 'no-store',
          headers: { 'Content-Type': 'text/xml; charset=utf-8' },
        });
      } catch (err) {
        if (this.closed || attempt >= 2) throw err;
        continue;
      } finally {
        clearTimeout(timer);
      }
      if (!r.ok) throw new TransportError(`HTTP ${r.status}`);
      const e = parseXml(await r.text());
      if (!e || e.localName !== 'body') throw new TransportError('the response is not a BOSH <body/>');
      return e;
    }
  }

  deliver(resp) {
    for (const c of [...resp.children]) this.onStanza(c);
    if (resp.getAttribute('type') === 'terminate') {
      this.finish({ reason: `the server ended the session (${resp.getAttribute('condition') || 'terminate'})`,
                    condition: resp.getAttribute('condition') });
    }
  }

  send(stanza) {
    if (this.closed) return;
    this.queue.push(stanza);
    this.schedule();
  }

  restart() {
    this.restartPending = true;
    this.schedule();
  }

  /** Stanzas sent in one turn of the event loop travel in one request. */
  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => { this.scheduled = false; this.pump(); });
  }

  hasData() {
    return this.queue.length > 0 || this.restartPending || this.terminatePending !== null;
  }

  pump() {
    if (this.closed || !this.sid) return;
    const idle = Math.max(1, this.requests - 1);
    while (this.inflight < this.requests) {
      if (!this.hasData() && this.inflight >= idle) return;
      if (!this.hasData() && this.requests === 1 && this.polling) {
        // polling session (XEP-0124 §12): empty requests no closer than `polling` s
        const due = this.lastEmpty + this.polling * 1000 - Date.now();
        if (due > 0) { setTimeout(() => this.pump(), due); return; }
      }
      this.request();
    }
  }

  request() {
    let b;
    if (this.terminatePending !== null) {
      b = this.body({ type: 'terminate' }, this.terminatePending);
      this.terminatePending = null;
      this.queue = [];
    } else if (this.restartPending && this.queue.length === 0) {
      b = this.body({ to: this.domain, 'xml:lang': 'en' });
      b.setAttributeNS(NS.xbosh, 'xmpp:restart', 'true');
      this.restartPending = false;
    } else {
      b = this.body({}, this.queue.splice(0));
      if (!b.children.length) this.lastEmpty = Date.now();
    }
    const terminating = b.getAttribute('type') === 'terminate';
    this.inflight++;
    this.post(b, this.wait + 15).then((resp) => {
      this.inflight--;
      if (terminating) return this.finish({ reason: 'logged out' });
      this.deliver(resp);
      this.pump();
    }, (err) => {
      this.inflight--;
      this.finish({ reason: `BOSH request failed: ${err.message}` });
    });
  }

  finish(info) {
    if (this.closed) return;
    this.closed = true;
    this.onClosed(info);
  }

  close(final = []) {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const prev = this.onClosed;
      this.onClosed = (info) => { prev(info); resolve(); };
      this.terminatePending = final;
      this.schedule();
      setTimeout(() => this.finish({ reason: 'logged out' }), 5000);
    });
  }

  /** Best effort when the page goes away: the session would otherwise wait for `inactivity`. */
  beacon() {
    if (this.closed || !this.sid) return;
    navigator.sendBeacon(this.url, serialize(this.body({ type: 'terminate' })));
  }
}

/* --------------------------------------------------------- discovery */

/** XEP-0156: the endpoints from host-meta.json, or the server's defaults. */
async function discover() {
  const wsScheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const found = {
    websocket: `${wsScheme}//${location.host}/xmpp-websocket`,
    bosh: `${location.origin}/http-bind`,
  };
  try {
    const r = await fetch('/.well-known/host-meta.json', { cache: 'no-store' });
    if (r.ok) {
      for (const link of (await r.json()).links || []) {
        if (link.rel === 'urn:xmpp:alt-connections:websocket' && link.href) found.websocket = link.href;
        if (link.rel === 'urn:xmpp:alt-connections:xbosh' && link.href) found.bosh = link.href;
      }
    }
  } catch (err) { /* the defaults stand */ }
  return found;
}

/* -------------------------------------------------------------- SASL */

class AuthError extends Error {
  constructor(condition, text) {
    super(text || condition);
    this.condition = condition;
  }
}

const SCRAM = { 'SCRAM-SHA-256': ['SHA-256', 256], 'SCRAM-SHA-1': ['SHA-1', 160] };

/** RFC 5802 client in three steps: first message, final message, server signature check. */
async function scram(mechanism, username, password, nonce) {
  const [hash, bits] = SCRAM[mechanism];
  const subtle = crypto.subtle;
  const saslname = username.replace(/=/g, '=3D').replace(/,/g, '=2C');
  const first = `n=${saslname},r=${nonce}`;
  const hmac = async (keyBytes, msg) => {
    const key = await subtle.importKey('raw', keyBytes, { name: 'HMAC', hash }, false, ['sign']);
    return new Uint8Array(await subtle.sign('HMAC', key, utf8(msg)));
  };
  return {
    first: `n,,${first}`,
    async final(serverFirst) {
      const attrs = Object.fromEntries(serverFirst.split(',').map((kv) => [kv[0], kv.slice(2)]));
      if (!attrs.r || !attrs.r.startsWith(nonce) || !attrs.s || !(Number(attrs.i) > 0)) {
        throw new AuthError('malformed-request', 'the server\'s SCRAM challenge is malformed');
      }
      const pw = await subtle.importKey('raw', utf8(password.normalize('NFC')), 'PBKDF2', false,
                                        ['deriveBits']);
      const salted = new Uint8Array(await subtle.deriveBits(
        { name: 'PBKDF2', salt: unb64(attrs.s), iterations: Number(attrs.i), hash }, pw, bits));
      const clientKey = await hmac(salted, 'Client Key');
      const storedKey = new Uint8Array(await subtle.digest(hash, clientKey));
      const withoutProof = `c=${b64text('n,,')},r=${attrs.r}`;
      const authMessage = `${first},${serverFirst},${withoutProof}`;
      const signature = await hmac(storedKey, authMessage);
      const proof = clientKey.map((b, i) => b ^ signature[i]);
      this.expected = b64(await hmac(await hmac(salted, 'Server Key'), authMessage));
      return `${withoutProof},p=${b64(proof)}`;
    },
    verify(serverFinal) {
      if (serverFinal !== `v=${this.expected}`) {
        throw new AuthError('server-not-verified', 'the server could not prove it knows the password');
      }
    },
  };
}

/* ----------------------------------------------------------- session */

const STEP_TIMEOUT = 20000;

/** One XMPP session over one transport: negotiation, IQ tracking, dispatch. */
class Session {
  constructor(transport, jid, password, handlers) {
    this.t = transport;
    this.jid = jid;
    this.password = password;
    this.h = handlers;
    this.waiters = [];
    this.iqs = new Map();
    this.closed = false;
    transport.onStanza = (e) => this.receive(e);
    transport.onClosed = (info) => this.closedBy(info);
  }

  async login() {
    const { local, domain } = splitJid(this.jid);
    // BOSH may carry the features in the session creation response itself,
    // so the waiter is in place before the transport starts
    const first = this.waitFor((e) => e.localName === 'features');
    first.catch(() => {});
    await this.t.start(domain);
    await this.authenticate(await first, local);
    const second = this.waitFor((e) => e.localName === 'features');
    this.t.restart();
    const features2 = await second;
    if (!child(features2, NS.bind, 'bind')) throw new TransportError('the server offers no resource binding');
    const bind = el(NS.bind, 'bind', {}, el(NS.bind, 'resource', {}, `web-${newId()}`));
    const result = await this.iq('set', null, bind);
    this.fullJid = childText(child(result, NS.bind, 'bind'), NS.bind, 'jid');
    const sess = child(features2, NS.session, 'session');
    if (sess && !child(sess, NS.session, 'optional')) {
      await this.iq('set', null, el(NS.session, 'session'));   // RFC 3921 servers
    }
    return this.fullJid;
  }

  async authenticate(features, local) {
    const offered = [...features.getElementsByTagNameNS(NS.sasl, 'mechanism')]
      .map((m) => m.textContent.trim());
    const mech = ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN'].find((m) => offered.includes(m));
    if (!mech) throw new AuthError('invalid-mechanism', `no mechanism this page knows (${offered.join(', ')})`);
    if (mech !== 'PLAIN' && !(window.crypto && crypto.subtle)) {
      throw new AuthError('invalid-mechanism', 'SCRAM needs WebCrypto, which this page only gets over HTTPS');
    }
    const sasl = (name, text) => el(NS.sasl, name, name === 'auth' ? { mechanism: mech } : {}, text);
    const nextSasl = () => this.waitFor((e) => e.namespaceURI === NS.sasl);
    if (mech === 'PLAIN') {
      this.t.send(sasl('auth', b64text(`\0${local}\0${this.password}`)));
      return this.saslOutcome(await nextSasl());
    }
    const nonce = b64(crypto.getRandomValues(new Uint8Array(18)));
    const client = await scram(mech, local, this.password, nonce);
    this.t.send(sasl('auth', b64text(client.first)));
    const challenge = await nextSasl();
    if (challenge.localName !== 'challenge') return this.saslOutcome(challenge);
    this.t.send(sasl('response', b64text(await client.final(textOfB64(challenge.textContent)))));
    let outcome = await nextSasl();
    if (outcome.localName === 'challenge') {          // the server-final as a challenge
      client.verify(textOfB64(outcome.textContent));
      this.t.send(sasl('response'));
      outcome = await nextSasl();
    } else if (outcome.localName === 'success') {
      client.verify(textOfB64(outcome.textContent.trim()));
    }
    return this.saslOutcome(outcome);
  }

  saslOutcome(e) {
    if (e.localName === 'success') return;
    const cond = [...e.children].find((c) => c.localName !== 'text');
    throw new AuthError(cond ? cond.localName : 'not-authorized', childText(e, NS.sasl, 'text'));
  }

  /** The next stanza that `match` accepts, consumed before the handlers see it. */
  waitFor(match, timeout = STEP_TIMEOUT) {
    return new Promise((resolve, reject) => {
      const w = { match, resolve, reject };
      w.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new TransportError('the server did not answer in time'));
      }, timeout);
      this.waiters.push(w);
    });
  }

  /** Sends an IQ; resolves with the result, rejects with the error condition. */
  iq(type, to, payload, timeout = STEP_TIMEOUT) {
    const id = newId();
    const stanza = el(NS.client, 'iq', { type, to, id }, payload ? [payload] : []);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.iqs.delete(id);
        reject(new Error('no answer to the request'));
      }, timeout);
      this.iqs.set(id, { resolve, reject, timer });
      this.t.send(stanza);
    });
  }

  send(stanza) { this.t.send(stanza); }

  receive(e) {
    const w = this.waiters.find((x) => x.match(e));
    if (w) {
      this.waiters = this.waiters.filter((x) => x !== w);
      clearTimeout(w.timer);
      return w.resolve(e);
    }
    if (e.localName === 'error' && e.namespaceURI === NS.streams) {
      const cond = [...e.children].find((c) => c.localName !== 'text');
      this.streamError = cond ? cond.localName : 'undefined-condition';
      return;
    }
    if (e.localName === 'iq') return this.receiveIq(e);
    if (e.localName === 'presence') return this.h.presence(e);
    if (e.localName === 'message') return this.h.message(e);
  }

  receiveIq(e) {
    const type = e.getAttribute('type');
    const id = e.getAttribute('id');
    if (type === 'result' || type === 'error') {
      const pending = this.iqs.get(id);
      if (!pending) return;
      this.iqs.delete(id);
      clearTimeout(pending.timer);
      if (type === 'result') return pending.resolve(e);
      const err = child(e, NS.client, 'error') || child(e, null, 'error');
      const cond = err && [...err.children].find((c) => c.namespaceURI === NS.stanzas);
      return pending.reject(new Error(cond ? cond.localName : 'error'));
    }
    const from = e.getAttribute('from');
    const reply = (payload, errorCondition) => {
      const r = el(NS.client, 'iq', { type: errorCondition ? 'error' : 'result', to: from, id },
                   payload ? [payload] : []);
      if (errorCondition) {
        r.append(el(NS.client, 'error', { type: 'cancel' }, el(NS.stanzas, errorCondition)));
      }
      this.send(r);
    };
    const payload = e.firstElementChild;
    // RFC 6121 §2.1.6: a roster push comes from the account itself or from no one
    if (type === 'set' && payload && payload.namespaceURI === NS.roster &&
        (!from || bareJid(from) === bareJid(this.fullJid))) {
      for (const item of payload.children) this.h.rosterItem(item);
      return reply();
    }
    if (type === 'get' && payload && payload.namespaceURI === NS.ping) return reply();
    return reply(null, 'service-unavailable');
  }

  closedBy(info) {
    if (this.closed) return;
    this.closed = true;
    const err = new TransportError(info.reason || 'disconnected');
    for (const w of this.waiters) { clearTimeout(w.timer); w.reject(err); }
    this.waiters = [];
    for (const p of this.iqs.values()) { clearTimeout(p.timer); p.reject(err); }
    this.iqs.clear();
    this.h.closed({ ...info, streamError: this.streamError });
  }

  async logout() {
    const gone = el(NS.client, 'presence', { type: 'unavailable' });
    if (this.t.name === 'bosh') return this.t.close([gone]);
    this.t.send(gone);
    return this.t.close();
  }
}

/* --------------------------------------------------------------- UI */

const $ = (id) => document.getElementById(id);

/** A DOM element with properties/attributes and children. */
function h(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'text') e.textContent = v;
    else if (k === 'className') e.className = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

const BACKOFF = [1, 2, 4, 8, 16, 30];        // s between reconnect attempts
const STOP_ON = new Set(['conflict', 'not-authorized', 'policy-violation', 'host-unknown']);
const PRESENCE_LABEL = { online: 'online', away: 'away', offline: 'offline' };

class App {
  constructor() {
    this.session = null;
    this.roster = new Map();          // bare JID -> {jid, name, subscription, ask}
    this.presence = new Map();        // bare JID -> Map(resource -> show)
    this.history = new Map();         // bare JID -> [{dir, body, time, error}]
    this.unread = new Map();          // bare JID -> count
    this.requests = new Set();        // bare JIDs asking to subscribe to us
    this.current = null;              // bare JID of the open conversation
    this.attempt = 0;
    this.reconnectTimer = null;
    this.wanted = false;              // the user wants to be online
    this.params = new URLSearchParams(location.search);
    this.bind();
  }

  bind() {
    $('login-form').addEventListener('submit', (ev) => { ev.preventDefault(); this.login(); });
    $('logout').addEventListener('click', () => this.logout());
    $('add-contact').addEventListener('submit', (ev) => { ev.preventDefault(); this.addContact(); });
    $('composer').addEventListener('submit', (ev) => { ev.preventDefault(); this.sendMessage(); });
    $('chat-input').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.sendMessage();
      }
    });
    $('my-show').addEventListener('change', () => this.sendPresence());
    window.addEventListener('pagehide', () => {
      if (this.session && this.session.t.beacon) this.session.t.beacon();
    });
    const last = localStorage.getItem('vinespy.jid');
    if (last) { $('login-jid').value = last; $('login-password').focus(); } else $('login-jid').focus();
  }

  /* ---- connection */

  setState(state, text) {
    const s = $('connection-state');
    s.dataset.state = state;
    s.dataset.transport = this.session ? this.session.t.name : '';
    s.textContent = text;
    $('chat-send').disabled = state !== 'online' || !this.current;
  }

  async login() {
    const jid = $('login-jid').value.trim();
    const password = $('login-password').value;
    const { local, domain } = splitJid(jid);
    if (!local || !domain || resourceOf(jid)) {
      $('login-error').textContent = 'Enter a Jabber ID like alice@example.org.';
      return;
    }
    if (!password) { $('login-error').textContent = 'Enter your password.'; return; }
    $('login-error').textContent = '';
    $('login-submit').disabled = true;
    this.credentials = { jid: bareJid(jid), password };
    this.wanted = true;
    this.attempt = 0;
    await this.connect();
    $('login-submit').disabled = false;
  }

  /** One login attempt: WebSocket, then BOSH if the WebSocket cannot be opened. */
  async connect() {
    this.setState('connecting', 'Connecting…');
    const urls = await discover();
    const forced = this.params.get('transport');
    const order = forced === 'bosh' ? ['bosh'] : forced === 'websocket' ? ['websocket']
      : ['websocket', 'bosh'];
    let lastError = null;
    for (const kind of order) {
      const t = kind === 'bosh' ? new BoshTransport(urls.bosh) : new WsTransport(urls.websocket);
      const session = new Session(t, this.credentials.jid, this.credentials.password, {
        presence: (e) => this.onPresence(e),
        message: (e) => this.onMessage(e),
        rosterItem: (item) => this.onRosterItem(item),
        closed: (info) => this.onClosed(session, info),
      });
      this.session = session;
      this.setState('connecting', `Connecting (${t.name === 'bosh' ? 'BOSH' : 'WebSocket'})…`);
      try {
        await session.login();
        return this.online(session);
      } catch (err) {
        lastError = err;
        if (!t.closed) t.finish({ reason: 'login failed' });
        if (!(err instanceof TransportError) || t.sid || t.ws?.protocol) break;
      }
    }
    this.session = null;
    if (lastError instanceof AuthError) {
      this.wanted = false;
      this.showLogin(lastError.condition === 'not-authorized'
        ? 'Wrong Jabber ID or password.' : `Login failed: ${lastError.message}`);
      return;
    }
    this.scheduleReconnect(lastError ? lastError.message : 'could not connect');
  }

  async online(session) {
    session.online = true;
    this.attempt = 0;
    this.presence.clear();
    localStorage.setItem('vinespy.jid', this.credentials.jid);
    $('own-jid').textContent = session.fullJid;
    this.showChat();
    this.setState('online', `Online (${session.t.name === 'bosh' ? 'BOSH' : 'WebSocket'})`);
    try {
      const result = await session.iq('get', null, el(NS.roster, 'query'));
      const query = child(result, NS.roster, 'query');
      this.roster.clear();
      for (const item of query ? query.children : []) this.onRosterItem(item, false);
    } catch (err) {
      this.announce(`Could not load contacts: ${err.message}`);
    }
    this.renderRoster();
    this.sendPresence();
  }

  onClosed(session, info) {
    // a login that fails is handled by connect(), not as a disconnect
    if (session !== this.session || !session.online) return;
    this.session = null;
    this.presence.clear();
    this.renderRoster();
    if (!this.wanted) return;
    if (STOP_ON.has(info.streamError)) {
      this.wanted = false;
      this.showLogin(`Disconnected by the server (${info.streamError}).`);
      this.setState('disconnected', 'Disconnected');
      return;
    }
    this.scheduleReconnect(info.reason);
  }

  scheduleReconnect(reason) {
    const base = BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)];
    const delay = base * (0.75 + Math.random() / 2);
    this.attempt++;
    this.setState('disconnected', `Disconnected (${reason}); reconnecting in ${Math.round(delay)} s`);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => { if (this.wanted) this.connect(); }, delay * 1000);
  }

  async logout() {
    this.wanted = false;
    clearTimeout(this.reconnectTimer);
    const session = this.session;
    this.session = null;
    if (session) await session.logout();
    this.roster.clear();
    this.presence.clear();
    this.history.clear();
    this.unread.clear();
    this.requests.clear();
    this.current = null;
    $('login-password').value = '';
    this.setState('disconnected', 'Logged out');
    this.showLogin('');
  }

  showLogin(error) {
    $('login-view').hidden = false;
    $('chat-view').hidden = true;
    $('me').hidden = true;
    $('login-error').textContent = error;
    if (!this.session) this.setState('disconnected', error ? 'Disconnected' : 'Not connected');
    $('login-password').focus();
  }

  showChat() {
    $('login-view').hidden = true;
    $('chat-view').hidden = false;
    $('me').hidden = false;
    this.renderConversation();
  }

  sendPresence() {
    if (!this.session) return;
    const show = $('my-show').value;
    this.session.send(el(NS.client, 'presence', {}, show ? [el(NS.client, 'show', {}, show)] : []));
  }

  announce(text) { $('announcer').textContent = text; }

  /* ---- roster and presence */

  onRosterItem(item, render = true) {
    const jid = bareJid(item.getAttribute('jid'));
    if (!jid) return;
    if (item.getAttribute('subscription') === 'remove') {
      this.roster.delete(jid);
      this.presence.delete(jid);
    } else {
      this.roster.set(jid, {
        jid,
        name: item.getAttribute('name') || '',
        subscription: item.getAttribute('subscription') || 'none',
        ask: item.getAttribute('ask') === 'subscribe',
      });
      // without a subscription to them (none/from) what we knew of their presence is stale
      if (!['to', 'both'].includes(this.roster.get(jid).subscription)) this.presence.delete(jid);
    }
    if (render) this.renderRoster();
  }

  onPresence(e) {
    const from = e.getAttribute('from') || '';
    const jid = bareJid(from);
    const type = e.getAttribute('type') || 'available';
    if (type === 'subscribe') {
      this.requests.add(jid);
      this.announce(`${jid} wants to add you as a contact`);
      return this.renderRequests();
    }
    if (type === 'available' || type === 'unavailable' || type === 'error') {
      const resources = this.presence.get(jid) || new Map();
      if (type === 'available') resources.set(resourceOf(from), childText(e, NS.client, 'show') || '');
      else if (type === 'error') resources.clear();
      else resources.delete(resourceOf(from));
      this.presence.set(jid, resources);
      this.renderRoster();
    }
  }

  presenceOf(jid) {
    const shows = [...(this.presence.get(jid) || new Map()).values()];
    if (!shows.length) return 'offline';
    return shows.some((s) => s === '' || s === 'chat') ? 'online' : 'away';
  }

  async addContact() {
    const input = $('add-contact-jid');
    const jid = bareJid(input.value.trim());
    if (!this.session || !jid) return;
    try {
      await this.session.iq('set', null, el(NS.roster, 'query', {}, el(NS.roster, 'item', { jid })));
      this.session.send(el(NS.client, 'presence', { to: jid, type: 'subscribe' }));
      input.value = '';
      this.open(jid);
    } catch (err) {
      this.announce(`Could not add ${jid}: ${err.message}`);
    }
  }

  async removeContact(jid) {
    if (!this.session) return;
    try {
      await this.session.iq('set', null,
        el(NS.roster, 'query', {}, el(NS.roster, 'item', { jid, subscription: 'remove' })));
      this.announce(`${jid} removed`);
    } catch (err) {
      this.announce(`Could not remove ${jid}: ${err.message}`);
    }
  }

  answerRequest(jid, accept) {
    if (!this.session) return;
    this.requests.delete(jid);
    this.session.send(el(NS.client, 'presence', { to: jid, type: accept ? 'subscribed' : 'unsubscribed' }));
    const item = this.roster.get(jid);
    if (accept && !(item && (item.subscription === 'to' || item.subscription === 'both' || item.ask))) {
      this.session.send(el(NS.client, 'presence', { to: jid, type: 'subscribe' }));
    }
    this.renderRequests();
  }

  /* ---- messages */

  onMessage(e) {
    const type = e.getAttribute('type') || 'normal';
    const body = childText(e, NS.client, 'body');
    const jid = bareJid(e.getAttribute('from'));
    if (type === 'error') {
      const err = child(e, NS.client, 'error');
      const cond = err && [...err.children].find((c) => c.namespaceURI === NS.stanzas);
      return this.record(jid, { dir: 'error', body: `Not delivered (${cond ? cond.localName : 'error'})` });
    }
    if (body === null || type === 'groupchat' || type === 'headline') return;
    this.record(jid, { dir: 'in', body });
    if (jid !== this.current) {
      this.unread.set(jid, (this.unread.get(jid) || 0) + 1);
      this.announce(`New message from ${this.nameOf(jid)}`);
      this.renderRoster();
    }
  }

  sendMessage() {
    const input = $('chat-input');
    const body = input.value;
    if (!this.current || !body.trim()) return;
    if (!this.session || !this.session.online) {
      this.announce('Not connected: the message was not sent.');
      return;
    }
    this.session.send(el(NS.client, 'message', { to: this.current, type: 'chat', id: newId() },
                         el(NS.client, 'body', {}, body)));
    this.record(this.current, { dir: 'out', body });
    input.value = '';
    input.focus();
  }

  record(jid, msg) {
    const list = this.history.get(jid) || [];
    msg.time = new Date();
    list.push(msg);
    this.history.set(jid, list);
    if (jid === this.current) $('message-list').append(this.messageItem(msg));
    if (jid === this.current) this.scrollDown();
    if (!this.roster.has(jid)) this.renderRoster();
  }

  open(jid) {
    this.current = jid;
    this.unread.delete(jid);
    this.renderRoster();
    this.renderConversation();
    $('chat-input').focus();
  }

  nameOf(jid) {
    const item = this.roster.get(jid);
    return (item && item.name) || jid;
  }

  /* ---- rendering */

  renderRoster() {
    const list = $('roster');
    const jids = new Set([...this.roster.keys(), ...this.history.keys()]);
    const sorted = [...jids].sort((a, b) => this.nameOf(a).localeCompare(this.nameOf(b)));
    list.replaceChildren(...sorted.map((jid) => this.rosterItem(jid)));
    $('roster-empty').hidden = sorted.length > 0;
  }

  rosterItem(jid) {
    const item = this.roster.get(jid);
    const presence = this.presenceOf(jid);
    const unread = this.unread.get(jid) || 0;
    let note = '';
    if (!item) note = 'not in your contacts';
    else if (item.ask) note = 'waiting for approval';
    else if (item.subscription === 'none' || item.subscription === 'from') note = 'presence not shared';
    const open = h('button', {
      type: 'button', className: 'contact', 'aria-current': jid === this.current ? 'true' : null,
      'data-testid': 'roster-open', onclick: () => this.open(jid),
    },
    h('span', { className: `dot ${presence}`, 'aria-hidden': 'true' }),
    h('span', { className: 'who' },
      h('span', { className: 'name', text: this.nameOf(jid) }),
      h('span', { className: 'sub', text: `${PRESENCE_LABEL[presence]}${note ? ` · ${note}` : ''}` })),
    unread ? h('span', { className: 'badge', text: String(unread), 'aria-label': `${unread} unread` }) : null);
    const remove = item ? h('button', {
      type: 'button', className: 'remove', 'data-testid': 'roster-remove',
      'aria-label': `Remove ${jid}`, title: `Remove ${jid}`, text: '×',
      onclick: () => this.removeContact(jid),
    }) : null;
    return h('li', {
      'data-testid': 'roster-item', 'data-jid': jid, 'data-presence': presence,
      'data-subscription': item ? item.subscription : 'none',
      'data-in-roster': item ? 'true' : 'false',
    }, open, remove);
  }

  renderRequests() {
    const items = [...this.requests].map((jid) => h('li', {
      'data-testid': 'subscription-request', 'data-jid': jid, className: 'card request',
    },
    h('p', { text: `${jid} wants to add you as a contact.` }),
    h('div', { className: 'row' },
      h('button', { type: 'button', 'data-testid': 'subscription-accept', text: 'Accept',
                    'aria-label': `Accept ${jid}`, onclick: () => this.answerRequest(jid, true) }),
      h('button', { type: 'button', className: 'secondary', 'data-testid': 'subscription-deny',
                    text: 'Deny', 'aria-label': `Deny ${jid}`,
                    onclick: () => this.answerRequest(jid, false) }))));
    $('request-list').replaceChildren(...items);
    $('requests').hidden = items.length === 0;
  }

  renderConversation() {
    const jid = this.current;
    $('chat-title').textContent = jid ? `Chat with ${this.nameOf(jid)}` : 'Pick a contact to chat';
    $('message-list').replaceChildren(...(this.history.get(jid) || []).map((m) => this.messageItem(m)));
    $('chat-input').disabled = !jid;
    $('chat-send').disabled = !jid || !this.session || !this.session.online;
    this.scrollDown();
  }

  messageItem(m) {
    const who = m.dir === 'out' ? 'You' : m.dir === 'in' ? this.nameOf(this.current) : 'Error';
    const time = m.time.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return h('li', { className: `message ${m.dir}`, 'data-testid': 'message', 'data-direction': m.dir },
      h('span', { className: 'meta' }, h('span', { className: 'visually-hidden', text: `${who}, ` }),
        h('time', { datetime: m.time.toISOString(), text: time })),
      h('p', { className: 'body', text: m.body }));
  }

  scrollDown() {
    const list = $('message-list');
    list.scrollTop = list.scrollHeight;
  }
}

window.vinespyChat = new App();
