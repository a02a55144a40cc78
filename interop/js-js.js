'use strict';
// End-to-end check of a running relay with seed-protocol JavaScript clients only.
// Usage: node js-js.js http://127.0.0.1:9517
// Prints `ok <check>` or `FAIL <check>: <why>` per check; exits 0 only if every check passed.

const { createSeedClient, connectRaw } = require('./seed-client');

const url = process.argv[2];
if (!url) {
  console.error('usage: node js-js.js <relay url>');
  process.exit(2);
}

const OVERALL_TIMEOUT_MS = 20000;
const STEP_TIMEOUT_MS = 3000;

// A suffix per run keeps a rerun against the same relay clear of ids a previous run left behind.
const run = Math.random().toString(36).slice(2, 8);
const ids = { a: `js-a-${run}`, b: `js-b-${run}`, c: `js-c-${run}` };

let failures = 0;
const openSockets = [];

const overall = setTimeout(() => {
  console.log(`FAIL overall: not finished within ${OVERALL_TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

function ok(name) {
  console.log(`ok ${name}`);
}

function fail(name, why) {
  failures += 1;
  console.log(`FAIL ${name}: ${why}`);
}

async function check(name, fn) {
  try {
    await fn();
    ok(name);
  } catch (e) {
    fail(name, e && e.message ? e.message : String(e));
  }
}

function assert(cond, why) {
  if (!cond) throw new Error(why);
}

function show(v) {
  return JSON.stringify(v);
}

function sameJson(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function withTimeout(promise, what, ms = STEP_TIMEOUT_MS) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** A promise for the next time `register(resolve)` calls back. */
function waitFor(what, register, ms = STEP_TIMEOUT_MS) {
  return withTimeout(new Promise((resolve) => register(resolve)), what, ms);
}

function delay(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

function client(id, options) {
  const c = createSeedClient(url, id, options);
  openSockets.push(c.socket);
  return c;
}

function raw(id, options) {
  const s = connectRaw(url, id, Object.assign({ reconnection: false }, options || {}));
  openSockets.push(s);
  return s;
}

function rawConnected(s) {
  if (s.connected) return Promise.resolve();
  return waitFor('raw socket to connect', (done) => s.once('connect', done));
}

/**
 * Waits until `sender` has sent an unacknowledged event to `target` and it has been relayed:
 * the relay handles one connection's events in order, so once a marker sent afterwards arrives,
 * anything sent before it has arrived too.
 */
async function barrier(sender, target) {
  const marker = `marker-${Math.random().toString(36).slice(2)}`;
  const got = waitFor(`barrier marker from ${sender.clientId}`, (done) =>
    target.from(sender.clientId).once(marker, done),
  );
  sender.emitTo(target.clientId, marker);
  await got;
}

async function main() {
  const a = client(ids.a, { reconnection: false });
  const b = client(ids.b, { reconnection: false });
  const c = client(ids.c, { reconnection: false });
  for (const x of [a, b, c]) x.onAddP2pTarget(() => {});

  await check('connect', async () => {
    await Promise.all([a, b, c].map((x) => x.waitConnected(STEP_TIMEOUT_MS)));
  });
  if (failures > 0) return;

  await check('LIST_CLIENTS lists the connected clients', async () => {
    const list = await withTimeout(a.getClientList(), 'LIST_CLIENTS ack');
    assert(Array.isArray(list), `ack is not an array: ${show(list)}`);
    for (const id of [ids.a, ids.b, ids.c]) assert(list.includes(id), `${id} missing from ${show(list)}`);
  });

  await check('addP2pTarget to a connected peer resolves and the target sees the source', async () => {
    const seen = waitFor('onAddP2pTarget on the target', (done) => b.onAddP2pTarget(done));
    await withTimeout(a.addP2pTarget(ids.b), 'addP2pTarget ack');
    const source = await seen;
    assert(source === ids.a, `target saw source ${show(source)}, expected ${show(ids.a)}`);
  });

  await check('addP2pTarget to an unknown client rejects with "not registered"', async () => {
    let err = null;
    try {
      await withTimeout(a.addP2pTarget('nobody-xyz'), 'addP2pTarget ack');
    } catch (e) {
      err = e;
    }
    assert(err, 'addP2pTarget(nobody-xyz) resolved');
    assert(/not registered/.test(err.message), `rejected with ${show(err.message)}`);
  });

  await check('emitTo delivers 100 messages in order with their arguments', async () => {
    const N = 100;
    const got = [];
    const all = waitFor('100 messages', (done) => {
      b.from(ids.a).on('seq', (i, label, obj) => {
        got.push([i, label, obj]);
        if (got.length === N) done();
      });
    });
    for (let i = 0; i < N; i++) a.emitTo(ids.b, 'seq', i, `m${i}`, { i, nested: [i, null, true] });
    await all;
    b.from(ids.a).off('seq');
    for (let i = 0; i < N; i++) {
      const want = [i, `m${i}`, { i, nested: [i, null, true] }];
      assert(sameJson(got[i], want), `message ${i} was ${show(got[i])}, expected ${show(want)}`);
    }
  });

  await check('emitTo with an ack gets the target\'s reply', async () => {
    b.from(ids.a).on('ask', (n, ack) => {
      if (typeof ack === 'function') ack(n + 1, 'second');
    });
    const reply = await waitFor('ack of ask', (done) => a.emitTo(ids.b, 'ask', 41, (...r) => done(r)));
    b.from(ids.a).off('ask');
    assert(sameJson(reply, [42, 'second']), `reply was ${show(reply)}, expected [42,"second"]`);
  });

  await check('from(a).on hears only a; onAny hears every sender', async () => {
    const fromA = [];
    const any = [];
    const onFrom = (tag) => fromA.push(tag);
    const onAny = (tag) => any.push(tag);
    b.from(ids.a).on('ping', onFrom);
    b.onAny('ping', onAny);
    a.emitTo(ids.b, 'ping', 'from-a');
    c.emitTo(ids.b, 'ping', 'from-c');
    await Promise.all([barrier(a, b), barrier(c, b)]);
    b.from(ids.a).off('ping', onFrom);
    b.offAny('ping', onAny);
    assert(sameJson(fromA, ['from-a']), `from(a) heard ${show(fromA)}`);
    assert(sameJson(any.slice().sort(), ['from-a', 'from-c']), `onAny heard ${show(any)}`);
  });

  await check('from().once and onceAny fire once', async () => {
    let fromCount = 0;
    let anyCount = 0;
    const before = b.fromListenerCount(ids.a);
    // A once-listener for a must not be used up by another sender's event.
    b.from(ids.a).once('one', () => (fromCount += 1));
    b.onceAny('one', () => (anyCount += 1));
    c.emitTo(ids.b, 'one');
    await barrier(c, b);
    assert(fromCount === 0, `from(a).once fired for c's event`);
    assert(anyCount === 1, `onceAny fired ${anyCount} times for c's event`);
    for (let i = 0; i < 3; i++) a.emitTo(ids.b, 'one');
    await barrier(a, b);
    assert(fromCount === 1, `from(a).once fired ${fromCount} times`);
    assert(anyCount === 1, `onceAny fired ${anyCount} times in all`);
    assert(b.fromListenerCount(ids.a) === before, 'the once-listener is still registered');
    assert(b.socket.listeners('one').length === 0, 'socket still has listeners for the event');
  });

  await check('from().off and offAny stop delivery', async () => {
    let fromCount = 0;
    let anyCount = 0;
    const onFrom = () => (fromCount += 1);
    const onAny = () => (anyCount += 1);
    b.from(ids.a).on('offev', onFrom);
    b.onAny('offev', onAny);
    a.emitTo(ids.b, 'offev');
    await barrier(a, b);
    b.from(ids.a).off('offev', onFrom);
    b.offAny('offev', onAny);
    a.emitTo(ids.b, 'offev');
    await barrier(a, b);
    assert(fromCount === 1 && anyCount === 1, `after off: from ${fromCount}, any ${anyCount} (want 1, 1)`);
  });

  await check('rooms: emitRoom reaches the other members only; leaveRoom stops delivery', async () => {
    const room = `room-${run}`;
    const got = { a: [], b: [], c: [] };
    a.socket.on('roomev', (...args) => got.a.push(args));
    b.socket.on('roomev', (...args) => got.b.push(args));
    c.socket.on('roomev', (...args) => got.c.push(args));
    const join = (x) => waitFor(`JOIN_ROOM ack for ${x.clientId}`, (done) => x.joinRoom(room, done));
    await Promise.all([join(a), join(b), join(c)]);

    const bFirst = waitFor('first room event at b', (done) => b.socket.once('roomev', done));
    const cFirst = waitFor('first room event at c', (done) => c.socket.once('roomev', done));
    a.emitRoom(room, 'roomev', 1, 'one');
    await Promise.all([bFirst, cFirst]);
    // The relay handles a's events in order, so anything it sent to a for EMIT_ROOM precedes this ack.
    await withTimeout(a.getClientList(), 'LIST_CLIENTS ack');
    assert(sameJson(got.b, [[1, 'one']]), `b got ${show(got.b)}`);
    assert(sameJson(got.c, [[1, 'one']]), `c got ${show(got.c)}`);
    assert(got.a.length === 0, `the sender got its own room event: ${show(got.a)}`);

    await waitFor('LEAVE_ROOM ack', (done) => b.leaveRoom(room, done));
    const cSecond = waitFor('second room event at c', (done) => c.socket.once('roomev', done));
    a.emitRoom(room, 'roomev', 2, 'two');
    await cSecond;
    // b's LIST_CLIENTS is handled after a's EMIT_ROOM was, so a stray event would come first.
    await withTimeout(b.getClientList(), 'LIST_CLIENTS ack');
    assert(sameJson(got.c, [[1, 'one'], [2, 'two']]), `c got ${show(got.c)}`);
    assert(got.b.length === 1, `b got room events after leaving: ${show(got.b)}`);
    assert(got.a.length === 0, `the sender got its own room event: ${show(got.a)}`);
    for (const x of [a, b, c]) x.socket.off('roomev');
  });

  await check('a peer disconnecting: the other gets MULTI_API_TARGET_DISCONNECT and its from() listeners go', async () => {
    const noop = () => {};
    b.from(ids.a).on('x1', noop);
    b.from(ids.a).on('x2', noop);
    b.from(ids.a).once('x3', noop);
    b.from(ids.c).on('x1', noop);
    assert(b.fromListenerCount(ids.a) === 3, `expected 3 listeners from a, have ${b.fromListenerCount(ids.a)}`);
    let countAtNotice = -1;
    const gone = waitFor('MULTI_API_TARGET_DISCONNECT at b', (done) =>
      b.onP2pTargetDisconnect((id) => {
        if (id === ids.a) {
          countAtNotice = b.fromListenerCount(ids.a);
          done(id);
        }
      }),
    );
    a.close();
    await gone;
    assert(countAtNotice === 0, `from(a) listeners left when notified: ${countAtNotice}`);
    assert(b.fromListenerCount(ids.a) === 0, `from(a) listeners left: ${b.fromListenerCount(ids.a)}`);
    assert(b.fromListenerCount(ids.c) === 1, `from(c) listeners were dropped too`);
    assert(b.socket.listeners('x2').length === 0 && b.socket.listeners('x3').length === 0,
      'socket still holds listeners registered through from(a)');
    assert(b.socket.listeners('x1').length === 1, 'the from(c) listener was removed from the socket');
    b.from(ids.c).off('x1', noop);
    const list = await withTimeout(b.getClientList(), 'LIST_CLIENTS ack');
    assert(!list.includes(ids.a), `LIST_CLIENTS still lists the disconnected client: ${show(list)}`);
  });

  await check('a duplicate clientId gets SERVER_ERROR and is disconnected; the original keeps working', async () => {
    const dup = client(ids.b, { reconnection: false });
    const disconnected = waitFor('the duplicate to be disconnected', (done) => dup.socket.once('disconnect', done));
    const message = await withTimeout(dup.nextServerError(STEP_TIMEOUT_MS), 'SERVER_ERROR at the duplicate');
    await disconnected;
    assert(typeof message === 'string' && message.length > 0, `SERVER_ERROR carried ${show(message)}`);
    assert(b.socket.connected, 'the original was disconnected');
    const got = waitFor('message to the original', (done) => b.from(ids.c).once('still-there', done));
    c.emitTo(ids.b, 'still-there', 'yes');
    const v = await got;
    assert(v === 'yes', `the original got ${show(v)}`);
    const list = await withTimeout(c.getClientList(), 'LIST_CLIENTS ack');
    assert(list.filter((x) => x === ids.b).length === 1, `LIST_CLIENTS: ${show(list)}`);
  });

  await check('a connection without clientId gets SERVER_ERROR and is disconnected', async () => {
    const anon = raw(null);
    const errored = waitFor('SERVER_ERROR at the anonymous connection', (done) => anon.once('SERVER_ERROR', done));
    const disconnected = waitFor('the anonymous connection to be disconnected', (done) => anon.once('disconnect', done));
    const message = await errored;
    await disconnected;
    assert(typeof message === 'string' && message.length > 0, `SERVER_ERROR carried ${show(message)}`);
  });

  await check('a forged sender id gets SERVER_ERROR and nothing reaches the target', async () => {
    const malloryId = `js-mallory-${run}`;
    const mallory = raw(malloryId);
    const errors = [];
    mallory.on('SERVER_ERROR', (m) => errors.push(m));
    await rawConnected(mallory);
    const forged = [];
    b.onAny('forged', (...args) => forged.push(args));
    b.from(ids.c).on('forged', (...args) => forged.push(args));
    const errored = waitFor('SERVER_ERROR at the forger', (done) => mallory.once('SERVER_ERROR', done));
    mallory.emit('P2P_EMIT', { targetClientId: ids.b, event: 'forged', args: [ids.c, 'claimed to be c'] });
    await errored;
    // A genuine message from the same connection, relayed in order after the forged one would be.
    const marker = waitFor('marker from the forger', (done) => b.from(malloryId).once('after-forged', done));
    mallory.emit('P2P_EMIT', { targetClientId: ids.b, event: 'after-forged', args: [malloryId] });
    await marker;
    b.offAny('forged');
    b.from(ids.c).off('forged');
    assert(forged.length === 0, `the target received the forged event: ${show(forged)}`);
    assert(errors.length === 1, `SERVER_ERRORs: ${show(errors)}`);
    mallory.close();
  });

  const junkId = `js-junk-${run}`;
  const junk = raw(junkId);
  const junkErrors = [];
  junk.on('SERVER_ERROR', (m) => junkErrors.push(m));
  await check('raw client connects', () => rawConnected(junk));

  /** Sends one malformed event and expects a SERVER_ERROR or an acknowledgement carrying an error. */
  async function malformed(name, send) {
    await check(`malformed input rejected: ${name}`, async () => {
      const before = junkErrors.length;
      const outcome = await waitFor('SERVER_ERROR or error ack', (done) => {
        junk.once('SERVER_ERROR', (m) => done({ error: m }));
        send((...ackArgs) => done({ ack: ackArgs }));
      });
      if (outcome.ack) {
        const e = outcome.ack[0];
        assert(typeof e === 'string' && e.length > 0, `acknowledged as success: ${show(outcome.ack)}`);
      } else {
        assert(junkErrors.length === before + 1, `SERVER_ERRORs: ${show(junkErrors.slice(before))}`);
      }
      assert(junk.connected, 'the raw client was disconnected');
    });
    junk.off('SERVER_ERROR');
    junk.on('SERVER_ERROR', (m) => junkErrors.push(m));
  }

  await malformed('P2P_EMIT with a number', () => junk.emit('P2P_EMIT', 42));
  await malformed('P2P_EMIT without an event', () =>
    junk.emit('P2P_EMIT', { targetClientId: ids.b, args: [junkId, 'x'] }));
  await malformed('P2P_EMIT_ACKNOWLEDGE with a string payload', (ack) =>
    junk.emit('P2P_EMIT_ACKNOWLEDGE', 'not an object', ack));
  await malformed('JOIN_ROOM with an empty string', (ack) => junk.emit('JOIN_ROOM', '', ack));
  await malformed('JOIN_ROOM with a number', (ack) => junk.emit('JOIN_ROOM', 7, ack));
  await malformed('EMIT_ROOM without an event', () => junk.emit('EMIT_ROOM', `room-${run}`));
  await malformed('MULTI_API_ADD_TARGET with an object', (ack) =>
    junk.emit('MULTI_API_ADD_TARGET', { targetClientId: ids.b }, ack));

  await check('after malformed input the relay still relays', async () => {
    const toC = waitFor('b -> c', (done) => c.from(ids.b).once('fine', (...args) => done(args)));
    const toB = waitFor('c -> b', (done) => b.from(ids.c).once('fine', (...args) => done(args)));
    b.emitTo(ids.c, 'fine', 'b says hi', 1);
    c.emitTo(ids.b, 'fine', 'c says hi', 2);
    const [atC, atB] = await Promise.all([toC, toB]);
    assert(sameJson(atC, ['b says hi', 1]), `c got ${show(atC)}`);
    assert(sameJson(atB, ['c says hi', 2]), `b got ${show(atB)}`);
    const reply = await waitFor('ack across b -> c', (done) => {
      c.from(ids.b).once('ask', (n, ack) => ack(n * 2));
      b.emitTo(ids.c, 'ask', 21, done);
    });
    assert(reply === 42, `reply was ${show(reply)}`);
    const list = await withTimeout(c.getClientList(), 'LIST_CLIENTS ack');
    assert(list.includes(ids.b) && list.includes(ids.c) && list.includes(junkId), `LIST_CLIENTS: ${show(list)}`);
  });
}

main()
  .catch((e) => fail('script', e && e.stack ? e.stack : String(e)))
  .finally(async () => {
    for (const s of openSockets) s.close();
    clearTimeout(overall);
    await delay(50);
    console.log(failures === 0 ? 'all checks passed' : `${failures} check(s) failed`);
    process.exit(failures === 0 ? 0 : 1);
  });
