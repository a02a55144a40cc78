'use strict';
// Random events from real socket.io-client clients at a live relay.
// Usage: node wire-fuzz.js <relay url> <2|4> [seed] [events]
//
// Three clients of the given version (one announcing the relay's extensions) send `events`
// (default 3000) random events between them: names the relay handles (P2P_*, MULTI_API_*,
// JOIN_ROOM and its SERVICE_*/CLIENT_* forms, ...), names Socket.IO reserves (sent as raw packets,
// below the library's own refusal), random names; arguments that are nearly right for the name or
// just random: JSON nested deep, objects that look like binary placeholders or serialized
// Buffers, binary data, too few or too many arguments, strings up to past the relay's 1 MiB event
// limit; some with an acknowledgement. They name each other and a fourth client, the listener,
// which only receives, and answer what they are asked with random values too. The same seed sends
// the same events.
//
// Placeholder look-alikes (`{_placeholder: true, num}`) go out beside binary data or alone, in
// events and in answers: Socket.IO's parsers read such an object as a reference to an attachment,
// and a receiver whose packet has no such attachment fails (socket.io-client 4 disconnects with
// "parse error", 2.x throws "illegal attachments" out of its packet handler). The relay refuses
// every event and answer holding one, so no receiver may ever fail on one.
//
// Checks that what the relay sends stays readable for the receiving library: no client (the
// listener above all) is ever dropped with a "parse error" or for another reason the relay did
// not give, and every one that the relay itself disconnected was told why first. At the end every
// fuzzing client still gets an answer from the relay and the listener still gets a message.
// Whether the relay itself survived unharmed is for the caller to check (tests/interop_limits.rs
// runs it as a separate process and looks at it afterwards).
//
// FUZZ_TRACE=1 waits for the relay after every event and prints the event after which a client
// was dropped (and the last packets the listener received), to pin a failure down.
//
// Prints a summary line and `ok <check>` / `FAIL <check>: <why>`, then `all checks passed (<n>)` or
// `<n> check(s) failed`; exits 0 only when every check passed; gives up after 150 s.

const { PROTOCOL_EVENTS, versionArg, connect, connected, registered, onIncoming, sendPacket, emitWithAck } =
  require('./client-versions');
const { show, assert, waitFor, delay, createReport } = require('./checks');

const USAGE = 'usage: node wire-fuzz.js <relay url> <2|4> [seed] [events]';
const url = process.argv[2];
const version = versionArg(process.argv[3], USAGE);
const seed = process.argv[4] ? Number(process.argv[4]) >>> 0 : (Date.now() ^ (process.pid << 8)) >>> 0;
const total = process.argv[5] ? Number(process.argv[5]) : 3000;
if (!url || !Number.isInteger(total) || total < 1) {
  console.error(USAGE);
  process.exit(2);
}

const STEP_MS = 10000;
const TRACE = process.env.FUZZ_TRACE === '1';
const MAX_EVENT_BYTES = 1 << 20;
const report = createReport(150000);

// ---- randomness (mulberry32: small, and one seed repeats a run) ----

let state = seed;
function next() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const below = (n) => Math.floor(next() * n);
const chance = (oneIn) => below(oneIn) === 0;
const pick = (list) => list[below(list.length)];

const tag = `v${version}`;
const fuzzIds = [0, 1, 2].map((i) => `${tag}-fuzz-${i}`);
const listenerId = `${tag}-listener`;

const ACTIONS = [
  'SERVICE_CREATE_TOPIC',
  'SERVICE_DESTROY_TOPIC',
  'CLIENT_SUBSCRIBE_TOPIC',
  'CLIENT_UNSUBSCRIBE_TOPIC',
  'SUBSCRIBE_TOPIC',
  'UNSUBSCRIBE_TOPIC',
];
const SOCKET_IO = [
  'connect',
  'connect_error',
  'connect_timeout',
  'connecting',
  'disconnect',
  'disconnecting',
  'error',
  'newListener',
  'removeListener',
  'reconnect',
  'reconnect_attempt',
  'reconnecting',
  'ping',
  'pong',
  'open',
  'close',
  'message',
];
const OTHER = ['PEER_STREAM_DESTROYED', 'P2P_EMIT_STREAM-from-stream-1', 'chat', 'DEFAULT_TOPIC_EVENT', '__proto__', 'constructor'];
const DELIVERIES = ['P2P_EMIT', 'P2P_EMIT', 'P2P_EMIT_ACKNOWLEDGE', 'P2P_BATCH', 'EMIT_ROOM'];
const CLIENTS = [...fuzzIds, listenerId, `${listenerId}-server-side`, 'nobody', ''];

function randomString(max) {
  const n = below(max + 1);
  const kind = below(4);
  if (kind === 0) return 'x'.repeat(n);
  let s = '';
  for (let i = 0; i < Math.min(n, 64); i++) {
    const r = below(10);
    if (r === 0) s += String.fromCharCode(below(32));
    else if (r === 1) s += String.fromCodePoint(0x80 + below(0x2ff80));
    else if (r === 2) s += pick(['"', '\\', '/', '\u2028', '\ud800', '\ufeff', '%', '?', '&']);
    else s += String.fromCharCode(97 + below(26));
  }
  return kind === 1 ? s : s + 'y'.repeat(Math.max(0, n - s.length));
}

function randomName() {
  switch (below(8)) {
    case 0:
    case 1:
      return pick(PROTOCOL_EVENTS);
    case 2:
      return pick(SOCKET_IO);
    case 3:
      return pick(ACTIONS);
    case 4:
      return pick(OTHER);
    case 5:
      return pick([...PROTOCOL_EVENTS, ...SOCKET_IO, ...ACTIONS]) + pick(['', '_', ' ', '-x', String(below(1000))]);
    case 6:
      return chance(8) ? 'e'.repeat(250 + below(20)) : randomString(24);
    default:
      return pick(['MULTI_API_', 'P2P_', 'SERVICE_', 'reconnect', '__p2p_']) + randomString(8);
  }
}

/**
 * The name an event packet goes out with: without the characters JSON escapes (quote, backslash,
 * control characters, lone surrogates). socketioxide 0.18 reads a packet's event name as
 * unescaped text and closes the connection, without a word, when the name has an escape in it;
 * the relay never sees such a packet. Names inside payloads (a P2P_EMIT's event, ...) keep them.
 */
function packetName(name) {
  return name.replace(/["\\\u0000-\u001f]|[\ud800-\udfff]/g, (c, i, all) => {
    const code = c.charCodeAt(0);
    if (code >= 0xd800 && code <= 0xdbff && /[\udc00-\udfff]/.test(all[i + 1] || '')) return c;
    if (code >= 0xdc00 && code <= 0xdfff && /[\ud800-\udbff]/.test(all[i - 1] || '')) return c;
    return '_';
  });
}

/** A random JSON value (or binary) nested at most `depth` deep. */
function randomValue(depth) {
  const leaf = depth <= 0 || chance(3);
  if (leaf) {
    switch (below(12)) {
      case 0:
        return null;
      case 1:
        return chance(2);
      case 2:
        return below(2000) - 1000;
      case 3:
        return pick([0, -0, 1e308, -1e308, 2 ** 53 + 1, 0.5, -1, 4294967296]);
      case 4:
        return pick(CLIENTS);
      case 5:
        return randomName();
      case 6:
        return Buffer.from(Array.from({ length: below(64) }, () => below(256)));
      default:
        return randomString(40);
    }
  }
  switch (below(6)) {
    case 0:
      return { _placeholder: true, num: pick([0, 1, 5, -1, 'x', null]) };
    case 1:
      return { type: 'Buffer', data: Array.from({ length: below(8) }, () => pick([0, 255, 256, -1, 'a', 1.5])) };
    case 2:
    case 3: {
      const o = {};
      for (let i = below(5); i > 0; i--) o[pick(['targetClientId', 'event', 'args', 'ok', 'err', 'code', 'window', 'route', randomString(6)])] = randomValue(depth - 1);
      return o;
    }
    default:
      return Array.from({ length: below(5) }, () => randomValue(depth - 1));
  }
}

function randomArgs() {
  return Array.from({ length: below(6) }, () => randomValue(1 + below(6)));
}

/** A string that puts the event near or past the relay's event size limit. */
function hugeString() {
  return 'h'.repeat(pick([64 << 10, MAX_EVENT_BYTES - 200, MAX_EVENT_BYTES + 200]));
}

/** Arguments nearly right for `name`, often broken somewhere. */
function argsFor(name, self) {
  const target = () => (chance(6) ? randomValue(1) : chance(3) ? pick(CLIENTS) : pick([...fuzzIds, listenerId]));
  const msg = () => ({
    targetClientId: target(),
    event: chance(5) ? randomValue(1) : chance(2) ? randomName() : `ev-${randomString(12)}`,
    args: chance(6) ? randomValue(2) : [chance(4) ? pick(CLIENTS) : self, ...randomArgs()],
  });
  const room = () =>
    chance(4) ? randomValue(1) : chance(2) ? 'hall' : pick([`service:${pick(CLIENTS)}:topic:t`, '__p2p_ext__', randomString(20)]);
  switch (name) {
    case 'P2P_EMIT':
    case 'P2P_EMIT_ACKNOWLEDGE':
      return chance(5) ? randomArgs() : [msg(), ...(chance(5) ? randomArgs() : [])];
    case 'P2P_BATCH':
      return Array.from({ length: below(6) }, () => (chance(4) ? randomValue(2) : msg()));
    case 'JOIN_ROOM':
    case 'LEAVE_ROOM':
      return chance(2) ? [room()] : [pick(ACTIONS), pick(CLIENTS), room(), ...randomArgs()].slice(0, 1 + below(4));
    case 'EMIT_ROOM':
      return chance(3)
        ? [room(), randomName(), ...randomArgs()].slice(0, below(5))
        : [room(), chance(2) ? randomName() : `ev-${randomString(12)}`, ...randomArgs()];
    case 'MULTI_API_CREATE_STREAM':
      return [{
        sourceStreamId: randomString(8),
        targetStreamId: randomString(8),
        targetClientId: target(),
        window: pick([1, 0, -1, 65536, 2 ** 31, 'x', undefined]),
        channel: randomValue(1),
      }];
    case 'P2P_REQ':
      return [pick([0, 1, -1, 2 ** 53, 'x', null]), pick([...PROTOCOL_EVENTS, randomName()]), ...randomArgs()];
    case 'P2P_RES':
      return [below(5), pick([{ ok: randomArgs() }, { err: randomString(10), code: 'REMOTE' }, randomValue(2)])];
    case 'P2P_FRAME':
      return [Buffer.from(Array.from({ length: below(40) }, () => below(256))), ...(chance(3) ? randomArgs() : [])];
    default:
      return randomArgs();
  }
}

// ---- the clients ----

const counts = { sent: 0, acked: 0, errors: 0, huge: 0, reconnects: 0, relayed: 0, answered: 0 };
const problems = [];

/** A client that keeps how it left each connection: reasons, and what the relay said before. */
function fuzzer(id, ext) {
  const f = { id, ext, socket: null, gone: [] };
  f.open = () => {
    const socket = report.closeAtEnd(connect(version, url, id, { ext }));
    f.socket = socket;
    f.lastError = null;
    socket.on('SERVER_ERROR', (m) => {
      counts.errors += 1;
      f.lastError = m;
    });
    socket.on('disconnect', (reason) => {
      if (socket !== f.socket || f.closing) return;
      f.gone.push(reason);
      if (reason === 'io server disconnect' && typeof f.lastError === 'string' && f.lastError.includes('disconnected')) return;
      problems.push(`${id} dropped (${reason}) after ${show(f.lastError)}`);
    });
    // socket.io-client 2 reports a packet it cannot decode as an `error` event (a relayed
    // `error` is refused by the relay, so this one is the library's own).
    socket.on('error', (e) => problems.push(`${id}: error event ${show(e && e.message ? e.message : e)}`));
    // Relayed requests are answered with random values, binary ones included.
    onIncoming(socket, version, (_name, _args, answer) => {
      counts.relayed += 1;
      if (answer) {
        counts.answered += 1;
        answer(...randomArgs());
      }
    });
    return connected(socket, STEP_MS);
  };
  /** A new connection in place of one that is gone (its own close is not counted as a drop). */
  f.reopen = () => {
    f.closing = true;
    f.socket.close();
    f.closing = false;
    return f.open();
  };
  return f;
}

async function main() {
  console.log(`seed ${seed}, ${total} events, socket.io-client ${version}`);
  const fuzzers = fuzzIds.map((id, i) => fuzzer(id, i === 2));
  const listener = { id: listenerId, socket: report.closeAtEnd(connect(version, url, listenerId)), gone: [], received: 0 };
  listener.socket.on('disconnect', (reason) => listener.gone.push(reason));
  listener.socket.on('error', (e) => problems.push(`listener: error event ${show(e && e.message ? e.message : e)}`));
  onIncoming(listener.socket, version, () => (listener.received += 1));
  listener.raw = [];
  if (TRACE) {
    listener.socket.io.engine.on('data', (d) => {
      listener.raw.push(typeof d === 'string' ? d : `<binary ${d.length || d.byteLength} bytes: ${Buffer.from(d).toString('hex').slice(0, 80)}>`);
      if (listener.raw.length > 4) listener.raw.shift();
    });
  }

  const up = await report.check('the clients connect and register', async () => {
    await Promise.all(fuzzers.map((f) => f.open()));
    await connected(listener.socket, STEP_MS);
    for (const c of [...fuzzers, listener]) await registered(c.socket, c.id, STEP_MS);
    // Room emits to `hall` reach all of them.
    for (const c of [...fuzzers, listener]) await emitWithAck(c.socket, 'JOIN_ROOM', ['hall'], STEP_MS);
  });
  if (!up) return;

  for (let i = 0; i < total; i++) {
    const f = pick(fuzzers);
    if (!f.socket.connected) {
      counts.reconnects += 1;
      await f.reopen().catch((e) => problems.push(`${f.id} could not reconnect: ${e.message}`));
      if (!f.socket.connected) continue;
    }
    // A third are deliveries to the other clients, nearly right; the rest anything at all.
    const name = packetName(chance(3) ? pick(DELIVERIES) : randomName());
    const args = chance(3) ? randomArgs() : argsFor(name, f.id);
    if (chance(60)) {
      args.push(hugeString());
      counts.huge += 1;
    }
    const ack = chance(4) ? () => (counts.acked += 1) : undefined;
    sendPacket(f.socket, version, name, args, ack);
    counts.sent += 1;
    if (TRACE) {
      const before = f.gone.length;
      await emitWithAck(f.socket, 'LIST_CLIENTS', [], 2000).catch(() => {});
      if (f.gone.length > before || !f.socket.connected) console.log(`TRACE ${f.id} dropped after ${show([name, ...args]).slice(0, 2000)}`);
      if (listener.gone.length > 0 && !listener.reported) {
        listener.reported = true;
        console.log(`TRACE listener dropped (${listener.gone}) after ${show([name, ...args]).slice(0, 2000)}; last raw: ${listener.raw.map((r) => show(r).slice(0, 1500)).join(' | ')}`);
      }
    }
    // Now and then wait for the relay to catch up, so that what is sent is read, not queued here.
    if (i % 100 === 99) {
      await emitWithAck(f.socket, 'LIST_CLIENTS', [], STEP_MS).catch(() => {});
    } else if (i % 10 === 9) {
      await delay(0);
    }
  }
  console.log(
    `sent ${counts.sent} events (${counts.huge} near or past the size limit), ${counts.acked} acknowledged, ` +
      `${counts.errors} SERVER_ERROR; the fuzzing clients received ${counts.relayed} events ` +
      `(${counts.answered} answered), the listener ${listener.received}; ${counts.reconnects} reconnects`,
  );

  await report.check('every fuzzing client still gets answers from the relay', async () => {
    for (const f of fuzzers) {
      if (!f.socket.connected) await f.reopen();
      await registered(f.socket, f.id, STEP_MS);
    }
    const gone = fuzzers.filter((f) => f.gone.length > 0).map((f) => `${f.id}: ${show(f.gone)}`);
    return gone.length === 0 ? 'none was disconnected' : `disconnected with a reason: ${gone.join(', ')}`;
  });

  await report.check('no client was dropped without a reason from the relay', async () => {
    assert(problems.length === 0, problems.join('; '));
  });

  await report.check('the listener stayed connected and still gets a message', async () => {
    assert(listener.gone.length === 0 && listener.socket.connected, `disconnected: ${show(listener.gone)}`);
    const got = waitFor('the last message at the listener', (done) => listener.socket.once('fuzz-done', (...a) => done(a)), STEP_MS);
    fuzzers[0].socket.emit('P2P_EMIT', { targetClientId: listenerId, event: 'fuzz-done', args: [fuzzers[0].id, 'end'] });
    const args = await got;
    assert(args[0] === fuzzers[0].id && args[1] === 'end', `got ${show(args)}`);
    return `${listener.received} events received`;
  });
}

main().then(
  () => report.finish(),
  (e) => report.finish(e),
);
