'use strict';
// The JavaScript side of the authentication test (tests/auth.rs): a seed-era client
// (socket.io-client 2, token in the query) and a current one (socket.io-client 4, token in the
// auth payload) against a relay that requires tokens.
// Usage: node auth-interop.js '<json>' where json is
//   {"url": "...", "tokens": {"<name>": "<jwt>", ...}}
// with the tokens the Rust test minted (see the names below).
// Prints `ok <check>` or `FAIL <check>: <why>` per check; exits 0 only if every check passed.

const ioV2 = require('socket.io-client');
const ioV4 = require('socket.io-client-v4');

const config = JSON.parse(process.argv[2] || '{}');
const { url, tokens } = config;
if (!url || !tokens) {
  console.error("usage: node auth-interop.js '{\"url\": ..., \"tokens\": {...}}'");
  process.exit(2);
}

const OVERALL_TIMEOUT_MS = 30000;
const STEP_TIMEOUT_MS = 4000;

let failures = 0;
const sockets = [];

const overall = setTimeout(() => {
  console.log(`FAIL overall: not finished within ${OVERALL_TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

async function check(name, fn) {
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (e) {
    failures += 1;
    console.log(`FAIL ${name}: ${e && e.message ? e.message : String(e)}`);
  }
}

function assert(cond, why) {
  if (!cond) throw new Error(why);
}

function withTimeout(promise, what, ms = STEP_TIMEOUT_MS) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The text of a connection error, whatever form the client gives it. */
function errorText(e) {
  if (e && typeof e.message === 'string') return e.message;
  return typeof e === 'string' ? e : JSON.stringify(e);
}

/**
 * A socket.io-client 2 socket, as the seed's clients open it: clientId and token in the query.
 * Resolves with {socket} once connected or {error, socket} on a connection error.
 */
function connectV2(clientId, token) {
  const query = { clientId };
  if (token !== undefined) query.token = token;
  const socket = ioV2(url, { transports: ['websocket'], forceNew: true, reconnection: false, query });
  sockets.push(socket);
  return outcome(socket, ['error', 'connect_error']);
}

/** A socket.io-client 4 socket: clientId in the query, the token in the auth payload. */
function connectV4(clientId, token) {
  const opts = { transports: ['websocket'], forceNew: true, reconnection: false, query: { clientId } };
  if (token !== undefined) opts.auth = { token };
  const socket = ioV4(url, opts);
  sockets.push(socket);
  return outcome(socket, ['connect_error']);
}

function outcome(socket, errorEvents) {
  return withTimeout(
    new Promise((resolve) => {
      socket.on('connect', () => resolve({ socket }));
      for (const ev of errorEvents) socket.on(ev, (e) => resolve({ socket, error: errorText(e) }));
    }),
    'connect or a connection error',
  );
}

/** Emits `event(...args, ack)` and resolves with the acknowledgement's arguments. */
function ask(socket, event, ...args) {
  return withTimeout(
    new Promise((resolve) => socket.emit(event, ...args, (...answer) => resolve(answer))),
    `the acknowledgement of ${event}`,
  );
}

async function expectRefused(connect, clientId, token, words) {
  const { error, socket } = await connect(clientId, token);
  assert(error !== undefined, `connected, expected a refusal starting with '${words}'`);
  assert(error.startsWith(words), `refused with '${error}', expected '${words}...'`);
  assert(!socket.connected, 'the refused socket counts as connected');
  return socket;
}

async function main() {
  // ---- socket.io-client 2: the token in the query ----
  await check('v2 with a valid token in the query connects under its id', async () => {
    const { socket, error } = await connectV2('js2', tokens.js2);
    assert(error === undefined, `refused: ${error}`);
    const [ids] = await ask(socket, 'LIST_CLIENTS');
    assert(ids.includes('js2'), `LIST_CLIENTS answered ${JSON.stringify(ids)}`);
  });
  await check('v2 without a token is refused: missing token, then disconnected', async () => {
    const socket = await expectRefused(connectV2, 'nobody2', undefined, 'missing token');
    // The relay ends the refused connection: the client's Engine.IO connection closes.
    await withTimeout(
      new Promise((resolve) => socket.io.on('close', () => resolve())),
      'the refused connection to close',
    );
  });
  await check('v2 with an expired token is refused: token expired', () =>
    expectRefused(connectV2, 'js2-late', tokens.expired, 'token expired'));
  await check('v2 with a wrongly signed token is refused: bad token signature', () =>
    expectRefused(connectV2, 'js2-forged', tokens.forged, 'bad token signature'));
  await check("v2 with another client's token is refused: token subject mismatch", () =>
    expectRefused(connectV2, 'js2-thief', tokens.js2, 'token subject mismatch'));

  // ---- socket.io-client 4: the token in the auth payload ----
  await check('v4 with a valid token in the auth payload connects under its id', async () => {
    const { socket, error } = await connectV4('js4', tokens.js4);
    assert(error === undefined, `refused: ${error}`);
    const [ids] = await ask(socket, 'LIST_CLIENTS');
    assert(ids.includes('js4') && ids.includes('js2'), `LIST_CLIENTS answered ${JSON.stringify(ids)}`);
  });
  await check('v4 without a token is refused: missing token', () =>
    expectRefused(connectV4, 'nobody4', undefined, 'missing token'));
  await check('v4 with an expired token is refused: token expired', () =>
    expectRefused(connectV4, 'js4-late', tokens.expired, 'token expired'));
  await check('v4 with a wrongly signed token is refused: bad token signature', () =>
    expectRefused(connectV4, 'js4-forged', tokens.forged, 'bad token signature'));
  await check("v4 with another client's token is refused: token subject mismatch", () =>
    expectRefused(connectV4, 'js4-thief', tokens.js2, 'token subject mismatch'));
  await check('v4 with a malformed token is refused: invalid token', () =>
    expectRefused(connectV4, 'js4-bad', 'x.y.z', 'invalid token'));

  if (tokens.limited) await permissions();
}

/** Collects the SERVER_ERROR texts a socket receives. */
function serverErrors(socket) {
  const seen = [];
  const waiters = [];
  socket.on('SERVER_ERROR', (text) => {
    seen.push(text);
    for (const w of waiters.splice(0)) w();
  });
  return {
    seen,
    /** Resolves once a SERVER_ERROR containing `words` has arrived. */
    waitFor(words) {
      return withTimeout(
        new Promise((resolve) => {
          const test = () => {
            if (seen.some((t) => t.includes(words))) resolve();
            else waiters.push(test);
          };
          test();
        }),
        `a SERVER_ERROR with '${words}'`,
      );
    },
  };
}

const DENIED = "Error: permission denied: client 'js-limited' may not";

function emitTo(socket, from, target, event, ...args) {
  return ask(socket, 'P2P_EMIT_ACKNOWLEDGE', { targetClientId: target, event, args: [from, ...args] });
}

/**
 * The permission kinds, each allowed and denied, for a seed-era client whose token allows:
 * send to rust-target, the room lobby, calling and subscribing to math, being itself a service.
 */
async function permissions() {
  const { socket, error } = await connectV2('js-limited', tokens.limited);
  if (error !== undefined) throw new Error(`js-limited refused: ${error}`);
  const errors = serverErrors(socket);
  const me = 'js-limited';

  await check('send: allowed to rust-target, which answers', async () => {
    const answer = await emitTo(socket, me, 'rust-target', 'echo');
    assert(answer[0] === 'echo', `answered ${JSON.stringify(answer)}`);
  });
  await check('send: denied to rust-secret, the acknowledgement says so', async () => {
    const [text] = await emitTo(socket, me, 'rust-secret', 'echo');
    assert(text === `${DENIED} send to client 'rust-secret'`, `acknowledged ${JSON.stringify(text)}`);
    await errors.waitFor(`${DENIED} send to client 'rust-secret'`);
  });
  await check('send: add-target to rust-secret is denied', async () => {
    const [text] = await ask(socket, 'MULTI_API_ADD_TARGET', 'rust-secret');
    assert(text === `${DENIED} send to client 'rust-secret'`, `acknowledged ${JSON.stringify(text)}`);
  });
  await check('send: a stream to rust-secret is denied', async () => {
    const [text] = await ask(socket, 'MULTI_API_CREATE_STREAM', {
      sourceStreamId: 's1',
      targetStreamId: 's2',
      targetClientId: 'rust-secret',
    });
    assert(text === `${DENIED} send to client 'rust-secret'`, `acknowledged ${JSON.stringify(text)}`);
  });
  await check('rooms: lobby may be joined, vip not', async () => {
    const joined = await ask(socket, 'JOIN_ROOM', 'lobby');
    assert(joined.length === 0 || joined[0] == null, `lobby acknowledged ${JSON.stringify(joined)}`);
    const [text] = await ask(socket, 'JOIN_ROOM', 'vip');
    assert(text === `${DENIED} join or emit to room 'vip'`, `vip acknowledged ${JSON.stringify(text)}`);
  });
  await check('rooms: an emit to vip is denied', async () => {
    socket.emit('EMIT_ROOM', 'vip', 'psst', 1);
    await errors.waitFor(`${DENIED} join or emit to room 'vip'`);
  });
  await check('call: math answers, vault is denied', async () => {
    const [sum] = await emitTo(socket, me, 'math', 'add', 2, 3);
    assert(sum === 5, `math answered ${JSON.stringify(sum)}`);
    const [text] = await emitTo(socket, me, 'vault', 'add', 2, 3);
    assert(text === `${DENIED} call service 'vault'`, `vault acknowledged ${JSON.stringify(text)}`);
  });
  await check("subscribe: math's topic may be followed, vault's not", async () => {
    const ok = await emitTo(socket, me, 'math', 'SUBSCRIBE_TOPIC', me, 'news');
    assert(ok.length === 0 || ok[0] == null, `math acknowledged ${JSON.stringify(ok)}`);
    const [text] = await emitTo(socket, me, 'vault', 'SUBSCRIBE_TOPIC', me, 'news');
    assert(
      text === `${DENIED} subscribe to the topics of service 'vault'`,
      `vault acknowledged ${JSON.stringify(text)}`,
    );
  });
  await check('serve: it may create its own topic, not publish to math\'s', async () => {
    const created = await ask(socket, 'JOIN_ROOM', 'SERVICE_CREATE_TOPIC', `service:${me}:topic:t`);
    assert(created.length === 0 || created[0] == null, `acknowledged ${JSON.stringify(created)}`);
    const room = 'service:math:topic:news';
    socket.emit('EMIT_ROOM', room, `${room}-DEFAULT_TOPIC_EVENT`, 666);
    await errors.waitFor(`${DENIED} act as service 'math'`);
  });

  // socket.io-client 4, the same rule for sending.
  const v4 = await connectV4('js4-limited', tokens.limited4);
  if (v4.error !== undefined) throw new Error(`js4-limited refused: ${v4.error}`);
  await check('v4 send: allowed to rust-target, denied to rust-secret', async () => {
    const answer = await emitTo(v4.socket, 'js4-limited', 'rust-target', 'echo');
    assert(answer[0] === 'echo', `answered ${JSON.stringify(answer)}`);
    const [text] = await emitTo(v4.socket, 'js4-limited', 'rust-secret', 'echo');
    assert(
      text === "Error: permission denied: client 'js4-limited' may not send to client 'rust-secret'",
      `acknowledged ${JSON.stringify(text)}`,
    );
  });
}

main()
  .catch((e) => {
    failures += 1;
    console.log(`FAIL main: ${e && e.stack ? e.stack : e}`);
  })
  .finally(() => {
    clearTimeout(overall);
    for (const s of sockets) s.close();
    if (failures === 0) console.log('all checks passed');
    process.exit(failures === 0 ? 0 : 1);
  });
