'use strict';
// Reserved event names never reach JavaScript receivers.
// Usage: node reserved-names.js <relay url> <2|4>
//
// Socket.IO clients treat some event names specially. Relayed to a socket.io-client 4.x receiver,
// `disconnect`, `connect` and the other names its parser reserves make it drop the connection
// ("parse error"); a 2.x receiver runs its own `disconnect`, `connect`, `error`, `reconnect...`
// handlers with whatever arguments the sender chose. The relay refuses every reserved name
// (PROTOCOL.md, section 3) on each path that delivers a name a client chose; this script checks
// that with real clients of the given version on every such path a JavaScript client has:
//
//   P2P_EMIT, P2P_EMIT_ACKNOWLEDGE      from `v<N>-sender` to `v<N>-victim-a`
//   EMIT_ROOM                           from `v<N>-sender` to the room `v<N>-hall` (both victims)
//   a topic publication                 from the client service `v<N>-svc`, whose topic `news`
//                                       both victims are subscribed to (EMIT_ROOM to its room)
//   P2P_BATCH                           from `v<N>-batcher`, a client announcing the extensions
//
// Each refusal must reach its sender as an error naming the reserved name (and, for
// P2P_EMIT_ACKNOWLEDGE, as the acknowledgement too). Then an ordinary control message goes out on
// every path; once the victims have them all they must still be connected, have seen nothing but
// the control messages, and have had none of their handlers for reserved names called. Since the
// relay handles one client's events in order, a reserved event it had relayed would have arrived
// before the control message sent after it on the same path.
//
// The Rust side of the test adds its own paths: after this script prints `READY` it tries the
// reserved names through a server service's `emit_client`, the server's own `emit_to` and
// `request`, and a Rust client's `emit_to`, then sends the control messages `control-service`
// (from the service `jobs`), `control-server` (the server's `emit_to`) and `control-rust` (from
// the Rust client `rust-peer`) to both victims, which wait for those too.
//
// Prints `ok <check>` / `FAIL <check>: <why>`, then `all checks passed (<n>)` or
// `<n> check(s) failed`; exits 0 only when every check passed; gives up after 60 s.

const { PROTOCOL_EVENTS, versionArg, connect, connected, registered, onIncoming, emitWithAck, serverErrors } =
  require('./client-versions');
const { show, assert, withTimeout, createReport } = require('./checks');

const url = process.argv[2];
const version = versionArg(process.argv[3], 'usage: node reserved-names.js <relay url> <2|4>');
if (!url) {
  console.error('usage: node reserved-names.js <relay url> <2|4>');
  process.exit(2);
}

const STEP_MS = 5000;
const report = createReport(60000);

/** The names the relay refuses (PROTOCOL.md, section 3), `reconnect...` as a few examples. */
const RESERVED = [
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
  'reconnect_error',
  'reconnect_failed',
  'reconnecting',
  'open',
  'close',
  'message',
  ...PROTOCOL_EVENTS,
];

const tag = `v${version}`;
const ids = {
  victimA: `${tag}-victim-a`,
  victimB: `${tag}-victim-b`,
  sender: `${tag}-sender`,
  batcher: `${tag}-batcher`,
  svc: `${tag}-svc`,
};
const hall = `${tag}-hall`;
const topicRoom = `service:${ids.svc}:topic:news`;
const topicEvent = `${topicRoom}-DEFAULT_TOPIC_EVENT`;

/** The control messages each victim waits for, by event name. */
const CONTROLS = [
  'control-p2p',
  'control-room',
  topicEvent,
  'control-batch',
  'control-service',
  'control-server',
  'control-rust',
];

function open(id, options) {
  const socket = report.closeAtEnd(connect(version, url, id, options));
  return { id, socket, errors: serverErrors(socket) };
}

/**
 * A receiver that records everything: each event it receives, each call of a listener it has
 * for a reserved name, each disconnect.
 */
function victim(id) {
  const v = open(id);
  v.received = [];
  v.reservedCalls = [];
  v.disconnects = [];
  v.waiting = new Map();
  onIncoming(v.socket, version, (name, args) => {
    v.received.push(name);
    const w = v.waiting.get(name);
    if (w) {
      v.waiting.delete(name);
      w(args);
    }
  });
  /** Listens to every reserved name; called once connected, so that the connect is not counted. */
  v.watch = () => {
    for (const name of RESERVED) {
      v.socket.on(name, (...args) => v.reservedCalls.push([name, args.filter((x) => typeof x !== 'function')]));
    }
    v.socket.on('disconnect', (reason) => v.disconnects.push(reason));
  };
  v.socket.on('control-ask', (_from, ack) => {
    if (typeof ack === 'function') ack('answered');
  });
  /** Resolves with the arguments of the first `name` event from now on (or already received). */
  v.expect = (name) =>
    new Promise((resolve) => {
      if (v.received.includes(name)) resolve(null);
      else v.waiting.set(name, resolve);
    });
  return v;
}

function mentions(text, name) {
  return typeof text === 'string' && text.includes('reserved') && text.includes(`'${name}'`);
}

async function main() {
  const a = victim(ids.victimA);
  const b = victim(ids.victimB);
  const sender = open(ids.sender);
  const svc = open(ids.svc);
  const batcher = open(ids.batcher, { ext: true });
  const all = [a, b, sender, svc, batcher];

  const ready = await report.check(`socket.io-client ${version}: five clients connect and register`, async () => {
    await Promise.all(all.map((c) => connected(c.socket, STEP_MS)));
    await Promise.all(all.map((c) => registered(c.socket, c.id, STEP_MS)));
  });
  if (!ready) return;
  a.watch();
  b.watch();

  await report.check('the victims join the hall and subscribe to the topic news', async () => {
    for (const v of [a, b]) {
      const [err] = await emitWithAck(v.socket, 'JOIN_ROOM', [hall], STEP_MS);
      assert(err === undefined || err === null, `JOIN_ROOM answered ${show(err)}`);
    }
    svc.socket.emit('JOIN_ROOM', 'SERVICE_CREATE_TOPIC', topicRoom);
    for (const v of [a, b]) {
      const [err] = await emitWithAck(svc.socket, 'JOIN_ROOM', ['CLIENT_SUBSCRIBE_TOPIC', v.id, topicRoom], STEP_MS);
      assert(err === undefined || err === null, `CLIENT_SUBSCRIBE_TOPIC answered ${show(err)}`);
    }
  });
  // The Rust side tries its own paths from now on.
  console.log('READY');

  /** Sends `name` through one path with `send(name)`; the sender's next error must name it. */
  async function refusedOnEveryName(path, from, send) {
    const wrong = [];
    for (const name of RESERVED) {
      send(name);
      const text = await from.errors.next(STEP_MS, `${path} '${name}'`);
      if (!mentions(text, name)) wrong.push(`${name}: ${show(text)}`);
    }
    assert(wrong.length === 0, `errors not naming the reserved name: ${wrong.join('; ')}`);
    return `${RESERVED.length} names, each refused with an error to the sender`;
  }

  await report.check('P2P_EMIT', () =>
    refusedOnEveryName('P2P_EMIT', sender, (name) =>
      sender.socket.emit('P2P_EMIT', { targetClientId: a.id, event: name, args: [sender.id, 'x'] })));

  await report.check('P2P_EMIT_ACKNOWLEDGE', async () => {
    const wrong = [];
    for (const name of RESERVED) {
      const payload = { targetClientId: a.id, event: name, args: [sender.id, 'x'] };
      const [answer] = await emitWithAck(sender.socket, 'P2P_EMIT_ACKNOWLEDGE', [payload], STEP_MS);
      const text = await sender.errors.next(STEP_MS, `P2P_EMIT_ACKNOWLEDGE '${name}'`);
      if (!mentions(answer, name)) wrong.push(`${name}: acknowledged with ${show(answer)}`);
      if (text !== answer) wrong.push(`${name}: SERVER_ERROR ${show(text)} is not the acknowledgement`);
    }
    assert(wrong.length === 0, wrong.join('; '));
    return `${RESERVED.length} names, each acknowledged with the refusal and reported`;
  });

  await report.check('EMIT_ROOM to the hall', () =>
    refusedOnEveryName('EMIT_ROOM', sender, (name) => sender.socket.emit('EMIT_ROOM', hall, name, 'x')));

  await report.check('topic publication by the client service', () =>
    refusedOnEveryName('topic publication', svc, (name) => svc.socket.emit('EMIT_ROOM', topicRoom, name, 'x')));

  await report.check('P2P_BATCH from an extension client', async () => {
    const items = RESERVED.map((name) => ({ targetClientId: a.id, event: name, args: [batcher.id, 'x'] }));
    batcher.socket.emit('P2P_BATCH', ...items);
    const wrong = [];
    for (const name of RESERVED) {
      const text = await batcher.errors.next(STEP_MS, `P2P_BATCH item '${name}'`);
      if (!mentions(text, name)) wrong.push(`${name}: ${show(text)}`);
    }
    assert(wrong.length === 0, `errors not naming the reserved name, in order: ${wrong.join('; ')}`);
    return `${RESERVED.length} items, one refusal each`;
  });

  // Control messages on every path, after the refused ones.
  const arrived = [a, b].map((v) => Promise.all(CONTROLS.map((name) => v.expect(name))));
  sender.socket.emit('P2P_EMIT', { targetClientId: a.id, event: 'control-p2p', args: [sender.id, 'after'] });
  sender.socket.emit('P2P_EMIT', { targetClientId: b.id, event: 'control-p2p', args: [sender.id, 'after'] });
  sender.socket.emit('EMIT_ROOM', hall, 'control-room', 'after');
  svc.socket.emit('EMIT_ROOM', topicRoom, topicEvent, 'after');
  batcher.socket.emit(
    'P2P_BATCH',
    { targetClientId: a.id, event: 'control-batch', args: [batcher.id, 'after'] },
    { targetClientId: b.id, event: 'control-batch', args: [batcher.id, 'after'] },
  );

  await report.check('an acknowledged control request is answered by the victim', async () => {
    const payload = { targetClientId: a.id, event: 'control-ask', args: [sender.id] };
    const answer = await emitWithAck(sender.socket, 'P2P_EMIT_ACKNOWLEDGE', [payload], STEP_MS);
    assert(answer.length === 1 && answer[0] === 'answered', `acknowledged with ${show(answer)}`);
  });

  for (const v of [a, b]) {
    const i = v === a ? 0 : 1;
    await report.check(`${v.id} gets the control message of every path`, async () => {
      try {
        await withTimeout(arrived[i], 'the control messages', 15000);
      } catch (e) {
        const missing = CONTROLS.filter((n) => !v.received.includes(n));
        throw new Error(`${e.message}; missing ${show(missing)} (disconnects: ${show(v.disconnects)})`);
      }
    });
    await report.check(`${v.id} stayed connected and saw no reserved event`, async () => {
      assert(v.socket.connected, `not connected (disconnects: ${show(v.disconnects)})`);
      assert(v.disconnects.length === 0, `disconnected: ${show(v.disconnects)}`);
      assert(v.reservedCalls.length === 0, `listeners for reserved names ran: ${show(v.reservedCalls)}`);
      const allowed = new Set([...CONTROLS, 'control-ask']);
      const other = v.received.filter((n) => !allowed.has(n));
      assert(other.length === 0, `received ${show(other)}`);
      assert(v.errors.all.length === 0, `got SERVER_ERROR ${show(v.errors.all)}`);
      return `received ${v.received.length} events, all control messages`;
    });
  }
  await report.check('the senders got one error per refused event and no other', async () => {
    // An acknowledged request answered after everything a client sent before it was handled.
    for (const [c, want] of [[sender, 3 * RESERVED.length], [svc, RESERVED.length], [batcher, RESERVED.length]]) {
      const [list] = await emitWithAck(c.socket, 'LIST_CLIENTS', [], STEP_MS);
      assert(Array.isArray(list) && list.includes(a.id) && list.includes(b.id), `LIST_CLIENTS: ${show(list)}`);
      const extra = c.errors.all.slice(want);
      assert(c.errors.all.length === want, `${c.id} got ${c.errors.all.length} errors, expected ${want}: ${show(extra)}`);
    }
  });
}

main().then(
  () => report.finish(),
  (e) => report.finish(e),
);
