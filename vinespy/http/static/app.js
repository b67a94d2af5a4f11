/*
 * vinespy's built-in web chat, the page half (xmpp.js, loaded first, speaks
 * XMPP): the roster with presence, subscription prompts, one-to-one chat with
 * per-contact history (memory only), connection state, reconnect with
 * backoff, logout. Plain JavaScript, no build step, no libraries.
 */
'use strict';

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
