'use strict';
// Acknowledged requests the relay refuses are still acknowledged, with the error text.
// Usage: node refused-acks.js <relay url> <2|4>
//
// A seed-era client that asks for an acknowledgement waits on it: when the relay itself refuses or
// fails the request (unknown target, reserved name, an event too large, an event the relay does
// not have, arguments or an answer holding a binary placeholder look-alike, a target that does not
// answer in time or that disconnects first, too many requests in flight, a refused room, ...) it
// sends `SERVER_ERROR(message)` and then calls the acknowledgement with that same message
// (PROTOCOL.md, section 3). This script sends each kind of such request from a real client of the
// given version and checks both, with every wait bounded.
//
// It expects a relay set up as the Rust side of the test sets it up (tests/interop_limits.rs):
// `max_event_bytes` 65536, `max_pending_per_caller` 2, `max_rooms_per_client` 2, `reply_timeout`
// well under 5 s, and a server-provided service `jobs`.
//
// Prints `ok <check>` / `FAIL <check>: <why>`, then `all checks passed (<n>)` or
// `<n> check(s) failed`; exits 0 only when every check passed; gives up after 60 s.

const { versionArg, connect, connected, registered, emitWithAck, serverErrors } = require('./client-versions');
const { show, assert, waitFor, createReport } = require('./checks');

const url = process.argv[2];
const version = versionArg(process.argv[3], 'usage: node refused-acks.js <relay url> <2|4>');
if (!url) {
  console.error('usage: node refused-acks.js <relay url> <2|4>');
  process.exit(2);
}

const STEP_MS = 5000;
const MAX_EVENT_BYTES = 65536;
const report = createReport(60000);

const tag = `v${version}`;
const ids = {
  caller: `${tag}-caller`,
  target: `${tag}-target`,
  leaver: `${tag}-leaver`,
  hog: `${tag}-hog`,
};

function open(id) {
  const socket = report.closeAtEnd(connect(version, url, id));
  return { id, socket, errors: serverErrors(socket) };
}

/**
 * `from` emits `event(...args, ack)`; the acknowledgement must be called with one string that
 * says each of `needles`. The relay reports its own refusals with `SERVER_ERROR(text)` just before
 * the acknowledgement; the answers the seed gave by acknowledgement alone (an unknown client for
 * add-target, a stream or a topic subscription) may come without it (`reportedToo: false`).
 * Requests go one at a time, so every `SERVER_ERROR` of an earlier one has arrived before.
 */
async function refused(from, event, args, needles, reportedToo = true) {
  const before = from.errors.all.length;
  const answer = await emitWithAck(from.socket, event, args, STEP_MS);
  const reported = from.errors.all.slice(before);
  assert(answer.length === 1 && typeof answer[0] === 'string', `acknowledged with ${show(answer)}, not one error text`);
  const text = answer[0];
  for (const n of needles) assert(text.includes(n), `${show(text)} does not say ${show(n)}`);
  if (reportedToo) {
    assert(reported.length === 1 && reported[0] === text, `SERVER_ERROR ${show(reported)}, acknowledgement ${show(text)}`);
  } else {
    assert(reported.every((r) => r === text), `SERVER_ERROR ${show(reported)}, acknowledgement ${show(text)}`);
  }
  return show(text);
}

async function main() {
  const caller = open(ids.caller);
  const target = open(ids.target);
  const leaver = open(ids.leaver);
  const hog = open(ids.hog);
  const all = [caller, target, leaver, hog];
  const up = await report.check(`socket.io-client ${version}: four clients connect and register`, async () => {
    await Promise.all(all.map((c) => connected(c.socket, STEP_MS)));
    await Promise.all(all.map((c) => registered(c.socket, c.id, STEP_MS)));
  });
  if (!up) return;
  // The target answers `echo`, never answers `hang`, answers `fake-answer` with an object its
  // caller's library would read as a binary placeholder; the leaver disconnects on `leave`.
  target.socket.on('echo', (_from, value, ack) => ack(value));
  target.socket.on('hang', () => {});
  target.socket.on('fake-answer', (_from, ack) => ack(Buffer.from([1, 2]), { _placeholder: true, num: 3 }));
  leaver.socket.on('leave', () => leaver.socket.close());

  const ask = (to, event, ...args) => ({ targetClientId: to, event, args: [caller.id, ...args] });

  await report.check('control: an acknowledged request to the target is answered', async () => {
    const answer = await emitWithAck(caller.socket, 'P2P_EMIT_ACKNOWLEDGE', [ask(target.id, 'echo', 7)], STEP_MS);
    assert(answer.length === 1 && answer[0] === 7, `acknowledged with ${show(answer)}`);
  });

  const P2P = 'P2P_EMIT_ACKNOWLEDGE';
  // [check, event, arguments, what the text says, reported with SERVER_ERROR too]
  const cases = [
    ['P2P_EMIT_ACKNOWLEDGE to an unknown client', P2P, [ask('nobody', 'echo', 1)], ['nobody'], true],
    ['P2P_EMIT_ACKNOWLEDGE with a reserved event name', P2P, [ask(target.id, 'disconnect')], ['reserved', "'disconnect'"], true],
    [
      'P2P_EMIT_ACKNOWLEDGE with another client as sender',
      P2P,
      [{ targetClientId: target.id, event: 'echo', args: [target.id, 1] }],
      ['args[0]', caller.id],
      true,
    ],
    ['P2P_EMIT_ACKNOWLEDGE with a malformed payload', P2P, ['not an object'], ['bad request'], true],
    ['P2P_EMIT_ACKNOWLEDGE with an event name too long', P2P, [ask(target.id, 'e'.repeat(257))], ['longer than 256'], true],
    [
      'P2P_EMIT_ACKNOWLEDGE with too large an event',
      P2P,
      [ask(target.id, 'echo', 'x'.repeat(MAX_EVENT_BYTES + 1000))],
      [`more than the ${MAX_EVENT_BYTES} bytes`],
      true,
    ],
    ['P2P_EMIT_ACKNOWLEDGE to a target that never answers', P2P, [ask(target.id, 'hang')], ['timed out', target.id, "'hang'"], true],
    [
      'P2P_EMIT_ACKNOWLEDGE with a binary placeholder look-alike beside binary data',
      P2P,
      [ask(target.id, 'echo', Buffer.from([7]), { _placeholder: true, num: 5 })],
      ['bad request', "'_placeholder'"],
      true,
    ],
    [
      'P2P_EMIT_ACKNOWLEDGE with a binary placeholder look-alike alone',
      P2P,
      [ask(target.id, 'echo', { nested: [{ num: 0, _placeholder: true }] })],
      ['bad request', "'_placeholder'"],
      true,
    ],
    [
      'EMIT_ROOM with a binary placeholder look-alike',
      'EMIT_ROOM',
      ['r-none', 'chat', Buffer.from([7]), { _placeholder: true, num: 0 }],
      ['bad request', "'_placeholder'"],
      true,
    ],
    [
      'P2P_EMIT_ACKNOWLEDGE answered with a binary placeholder look-alike',
      P2P,
      [ask(target.id, 'fake-answer')],
      ['bad answer', `'${target.id}'`, "'fake-answer'", "'_placeholder'"],
      true,
    ],
    ['an event the relay does not have', 'NO_SUCH_EVENT', [1], ['bad request', "unknown event 'NO_SUCH_EVENT'"], true],
    ['an event of the extensions from a seed client', 'P2P_BATCH', [], ["unknown event 'P2P_BATCH'", 'p2pExt=1'], true],
    ['MULTI_API_ADD_TARGET to an unknown client', 'MULTI_API_ADD_TARGET', ['nobody'], ['nobody', 'not registered'], false],
    [
      'MULTI_API_CREATE_STREAM to an unknown client',
      'MULTI_API_CREATE_STREAM',
      [{ sourceStreamId: 's1', targetStreamId: 's2', targetClientId: 'nobody' }],
      ['nobody', 'not registered'],
      false,
    ],
    ['JOIN_ROOM of a room the relay keeps', 'JOIN_ROOM', ['__p2p_ext__'], ['reserved', '__p2p_ext__'], true],
    ['JOIN_ROOM of a room name too long', 'JOIN_ROOM', ['r'.repeat(257)], ['longer than 256'], true],
    ['LEAVE_ROOM of a room the relay keeps', 'LEAVE_ROOM', ['__p2p_seed__'], ['reserved', '__p2p_seed__'], true],
    [
      'JOIN_ROOM CLIENT_SUBSCRIBE_TOPIC of an unknown client into its own topic room',
      'JOIN_ROOM',
      ['CLIENT_SUBSCRIBE_TOPIC', 'nobody', `service:${ids.caller}:topic:news`],
      ['nobody'],
      false,
    ],
    [
      'SUBSCRIBE_TOPIC of a server service with an empty topic',
      P2P,
      [ask('jobs', 'SUBSCRIBE_TOPIC', caller.id, '')],
      ['topicName can not be empty'],
      false,
    ],
    [
      'SUBSCRIBE_TOPIC of a server service for another client',
      P2P,
      [ask('jobs', 'SUBSCRIBE_TOPIC', target.id, 'news')],
      [caller.id],
      false,
    ],
  ];
  for (const [name, event, args, needles, reportedToo] of cases) {
    await report.check(name, () => refused(caller, event, args, needles, reportedToo));
  }

  await report.check('the target was told why its answer was not relayed, and is still connected', async () => {
    const text = await target.errors.next(STEP_MS, 'the refusal of its answer');
    assert(text.includes("'_placeholder'") && text.includes("'fake-answer'"), `SERVER_ERROR ${show(text)}`);
    assert(target.errors.all.length === 1, `SERVER_ERROR at the target: ${show(target.errors.all)}`);
    assert(target.socket.connected, 'the target was disconnected');
    return show(text);
  });

  await report.check('JOIN_ROOM beyond the rooms one client may be in', async () => {
    for (const room of ['r1', 'r2']) {
      const answer = await emitWithAck(caller.socket, 'JOIN_ROOM', [room], STEP_MS);
      assert(answer.every((x) => x === undefined || x === null), `JOIN_ROOM ${room} answered ${show(answer)}`);
    }
    return refused(caller, 'JOIN_ROOM', ['r3'], ['2 rooms', "'r3'"]);
  });

  // The target's disconnect ends the wait at once (the reply timeout would say "timed out").
  await report.check('P2P_EMIT_ACKNOWLEDGE to a target that disconnects while the request waits', async () => {
    const gone = waitFor('the leaver to disconnect', (done) => leaver.socket.once('disconnect', done), STEP_MS);
    const notice = waitFor(
      'MULTI_API_TARGET_DISCONNECT of the leaver at the caller',
      (done) => caller.socket.on('MULTI_API_TARGET_DISCONNECT', (id) => id === leaver.id && done()),
      STEP_MS,
    );
    const text = await refused(caller, P2P, [ask(leaver.id, 'leave')], [`client '${leaver.id}' disconnected`]);
    await gone;
    await notice;
    return text;
  });

  await report.check('requests in flight per caller: the third is refused, the two waiting time out', async () => {
    const hogAsk = () => ({ targetClientId: target.id, event: 'hang', args: [hog.id] });
    const waiting = [1, 2].map(() => emitWithAck(hog.socket, 'P2P_EMIT_ACKNOWLEDGE', [hogAsk()], STEP_MS));
    const busy = await refused(hog, 'P2P_EMIT_ACKNOWLEDGE', [hogAsk()], ['busy', '2 answers']);
    const addTarget = await emitWithAck(hog.socket, 'MULTI_API_ADD_TARGET', [target.id], STEP_MS);
    assert(typeof addTarget[0] === 'string' && addTarget[0].includes('busy'), `MULTI_API_ADD_TARGET: ${show(addTarget)}`);
    const timedOut = await Promise.all(waiting);
    for (const answer of timedOut) {
      assert(answer.length === 1 && String(answer[0]).includes('timed out'), `a waiting request got ${show(answer)}`);
    }
    return busy;
  });

  await report.check('the caller is still connected and its requests are still answered', async () => {
    assert(caller.socket.connected, 'the caller was disconnected');
    const answer = await emitWithAck(caller.socket, 'P2P_EMIT_ACKNOWLEDGE', [ask(target.id, 'echo', 'end')], STEP_MS);
    assert(answer.length === 1 && answer[0] === 'end', `acknowledged with ${show(answer)}`);
  });
}

main().then(
  () => report.finish(),
  (e) => report.finish(e),
);
