'use strict';
// JavaScript half of the room and topic test across two relays of a cluster (tests/cluster.rs).
// Usage: node room-interop.js http://127.0.0.1:9517
//
// This seed-era client `js-member` (socket.io-client 2) joins room `hall` and subscribes to topic
// `news` of service `rust-svc` (a Rust service client on another relay), then prints READY. The
// Rust side then sends, in this order: `EMIT_ROOM("hall", "flash", "hello", 42)`, a publication
// `{"n": 1}` to `news`, and `EMIT_ROOM("hall", "last")`. When `last` arrives this script checks
// that `flash` and the publication each arrived exactly once, with their arguments, then emits
// `EMIT_ROOM("hall", "from-js", "hi rust", 7)` and prints `ok emitted`. The Rust side then
// destroys the topic; when the notice arrives this script prints DONE.
//
// Prints `ok <step>` per step and `DONE` at the end (exit 0); `FAIL <step>: <why>` and exit 1 on
// the first failure; gives up after 30 s.

const { createSeedClient } = require('./seed-client');

const url = process.argv[2];
if (!url) {
  console.error('usage: node room-interop.js <relay url>');
  process.exit(2);
}

const OVERALL_TIMEOUT_MS = 30000;

let step = 'connect';
let finished = false;
let me = null;

function finish(code, line) {
  if (finished) return;
  finished = true;
  console.log(line);
  if (me) me.close();
  setTimeout(() => process.exit(code), 50);
}

function fail(why) {
  finish(1, `FAIL ${step}: ${why}`);
}

function ok(name) {
  if (!finished) console.log(`ok ${name}`);
}

function show(v) {
  return JSON.stringify(v);
}

setTimeout(() => fail(`timed out after ${OVERALL_TIMEOUT_MS / 1000} s`), OVERALL_TIMEOUT_MS);

async function main() {
  me = createSeedClient(url, 'js-member', { reconnection: false });
  me.socket.on('SERVER_ERROR', (m) => fail(`SERVER_ERROR from the relay: ${show(m)}`));
  me.socket.on('disconnect', (reason) => fail(`disconnected from the relay (${reason})`));
  await me.waitConnected();
  ok('connect');

  const flashes = [];
  const publications = [];
  me.socket.on('flash', (...args) => flashes.push(args));
  me.socket.on('last', () => {
    step = 'last';
    if (flashes.length !== 1 || show(flashes[0]) !== show(['hello', 42])) {
      return fail(`flash should arrive once as ["hello",42], got ${show(flashes)}`);
    }
    if (publications.length !== 1 || show(publications[0]) !== show([{ n: 1 }])) {
      return fail(`the publication should arrive once as [{"n":1}], got ${show(publications)}`);
    }
    ok('room events and publication');
    step = 'emit';
    me.emitRoom('hall', 'from-js', 'hi rust', 7);
    ok('emitted');
  });

  step = 'join';
  await new Promise((resolve) => me.joinRoom('hall', resolve));
  ok('join');

  step = 'subscribe';
  let onDestroyed;
  const destroyed = new Promise((resolve) => (onDestroyed = resolve));
  // Resolves once the service answered: it has put this client in the topic's room.
  await me.subscribeTopic('rust-svc', 'news', (...args) => publications.push(args), onDestroyed);
  ok('subscribe');
  console.log('READY');

  await destroyed;
  step = 'destroyed';
  ok('destroyed');
  finish(0, 'DONE');
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
