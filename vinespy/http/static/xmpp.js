/*
 * vinespy's built-in web chat, the protocol half (app.js is the page): plain
 * JavaScript, no build step, no libraries; a classic script whose top-level
 * names app.js, loaded after it, uses.
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
