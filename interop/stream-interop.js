'use strict';
// JavaScript half of the Rust <-> JavaScript stream interop test (seed-era stop-and-wait streams).
// Usage: node stream-interop.js http://127.0.0.1:9517 [--json-chunks]
//
// By default JS sends its chunks as Buffers, as the seed did; with --json-chunks as JSON arrays
// of numbers (which the seed's receivers also accept).
//
// Expects a Rust client `rust-peer` to be connected already and accepting streams. The exchange,
// in order (SIZE bytes each way; pattern(seed) is defined below and shared with the Rust test):
//  1. JS opens a stream to rust-peer, writes pattern(1) and ends; rust-peer checks it, answers
//     with pattern(2) on the same stream and ends; JS checks that.
//  2. JS accepts streams and prints LISTENING. rust-peer opens a stream, writes pattern(3) and
//     ends; JS checks it and answers with pattern(4), then ends.
//  3. rust-peer opens a second stream and writes without end; JS destroys it after the first
//     chunk (rust-peer's writes must fail).
//  4. JS opens a stream to rust-peer and writes without end; rust-peer drops its end after some
//     bytes; JS's stream must fail with an error naming rust-peer.
//  5. No stream of JS's is left with socket listeners.
//
// Prints `ok <step>` per step and `DONE` at the end (exit 0); `FAIL <step>: <why>` and exit 1 on
// the first failure; gives up after 60 s.

const { createSeedClient } = require('./seed-client');

const url = process.argv[2];
const jsonChunks = process.argv.includes('--json-chunks');
if (!url) {
  console.error('usage: node stream-interop.js <relay url> [--json-chunks]');
  process.exit(2);
}

const OWN_ID = 'js-peer';
const RUST_ID = 'rust-peer';
const SIZE = 1 << 20;
const CHUNK = 16 * 1024;
const OVERALL_TIMEOUT_MS = 60000;

let step = 'connect';
let lateChunkMayFail = false;
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

function ok(what) {
  if (!finished) console.log(`ok ${what}`);
}

setTimeout(() => fail(`timed out after ${OVERALL_TIMEOUT_MS / 1000} s`), OVERALL_TIMEOUT_MS);

/** Byte `i` of the test pattern `seed`; every byte value occurs, 0x1E included. */
function patternByte(seed, i) {
  return (i * 131 + seed * 17 + (i >> 11)) & 0xff;
}

function pattern(seed, size) {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i += 1) b[i] = patternByte(seed, i);
  return b;
}

/** Writes `data` in CHUNK-sized writes, respecting backpressure, then ends the stream. */
async function writeAll(duplex, data) {
  for (let off = 0; off < data.length; off += CHUNK) {
    if (!duplex.write(data.subarray(off, off + CHUNK))) {
      await new Promise((resolve, reject) => {
        const onDrain = () => {
          duplex.off('error', onError);
          resolve();
        };
        const onError = (e) => {
          duplex.off('drain', onDrain);
          reject(e);
        };
        duplex.once('drain', onDrain);
        duplex.once('error', onError);
      });
    }
  }
  await new Promise((resolve, reject) => {
    duplex.end(resolve);
    duplex.once('error', reject);
  });
}

/** Reads the stream to its end. */
function readAll(duplex) {
  return new Promise((resolve, reject) => {
    const parts = [];
    duplex.on('data', (c) => parts.push(c));
    duplex.once('end', () => resolve(Buffer.concat(parts)));
    duplex.once('error', reject);
  });
}

function checkBytes(what, got, seed) {
  if (got.length !== SIZE) throw new Error(`${what}: ${got.length} bytes instead of ${SIZE}`);
  for (let i = 0; i < got.length; i += 1) {
    if (got[i] !== patternByte(seed, i)) {
      throw new Error(`${what}: byte ${i} is ${got[i]}, expected ${patternByte(seed, i)}`);
    }
  }
}

/** Resolves with the error the stream fails with; rejects if it ends cleanly instead. */
function failure(duplex) {
  return new Promise((resolve, reject) => {
    duplex.once('error', resolve);
    duplex.once('end', () => reject(new Error('the stream ended instead of failing')));
    duplex.resume();
  });
}

function withTimeout(what, promise, ms = 15000) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms)),
  ]);
}

async function main() {
  me = createSeedClient(url, OWN_ID, { reconnection: false });
  me.streamChunksAsJson = jsonChunks;
  me.socket.on('SERVER_ERROR', (m) => {
    // A chunk already on its way when rust-peer dropped its end finds no stream there; Rust
    // answers it with an error, which the relay passes on as SERVER_ERROR.
    if (lateChunkMayFail && /^no stream '/.test(String(m))) return;
    fail(`SERVER_ERROR from the relay: ${JSON.stringify(m)}`);
  });
  me.socket.on('disconnect', (reason) => fail(`disconnected from the relay (${reason})`));
  await me.waitConnected();
  ok('connected');

  step = 'js opens a stream to rust';
  const s1 = await withTimeout(step, me.addP2pStream(RUST_ID));
  ok(step);
  step = 'js -> rust bytes and the answer on the same stream';
  const [, answer] = await withTimeout(step, Promise.all([writeAll(s1, pattern(1, SIZE)), readAll(s1)]));
  checkBytes('rust -> js on js\'s stream', answer, 2);
  ok(`${step}: ${SIZE} bytes sent, ${answer.length} bytes received and verified`);

  step = 'rust opens streams to js';
  const accepted = [];
  const waiters = [];
  me.onAddP2pStream((duplex, info) => {
    if (info.sourceClientId !== RUST_ID) {
      fail(`stream from unexpected client ${JSON.stringify(info.sourceClientId)}`);
      return;
    }
    const w = waiters.shift();
    if (w) w(duplex);
    else accepted.push(duplex);
  });
  const nextStream = () =>
    withTimeout('rust opens a stream', new Promise((resolve) => {
      const d = accepted.shift();
      if (d) resolve(d);
      else waiters.push(resolve);
    }));
  console.log('LISTENING');
  const s2 = await nextStream();
  ok(step);
  step = 'rust -> js bytes, then the answer on rust\'s stream';
  const got = await withTimeout(step, readAll(s2));
  checkBytes('rust -> js on rust\'s stream', got, 3);
  ok(`rust -> js on rust's stream: ${got.length} bytes verified`);
  await withTimeout(step, writeAll(s2, pattern(4, SIZE)));
  ok(`js -> rust on rust's stream: ${SIZE} bytes sent`);

  step = 'js destroys a stream rust writes to';
  const s3 = await nextStream();
  await withTimeout(step, new Promise((resolve) => s3.once('data', resolve)));
  s3.destroy();
  ok(step);

  step = 'rust drops a stream js writes to';
  lateChunkMayFail = true;
  const s4 = await withTimeout(step, me.addP2pStream(RUST_ID));
  const failed = failure(s4);
  const filler = Buffer.alloc(CHUNK, 0x1e);
  let writing = true;
  failed.finally(() => (writing = false)).catch(() => {});
  (async () => {
    while (writing && !s4.destroyed) {
      if (!s4.write(filler)) await new Promise((r) => s4.once('drain', r).once('close', r));
    }
  })();
  const err = await withTimeout(step, failed);
  if (!String(err.message).includes(`'${RUST_ID}'`)) throw new Error(`unexpected error: ${err.message}`);
  ok(`${step}: ${err.message}`);

  step = 'listeners are removed';
  await withTimeout(step, new Promise((resolve) => {
    const poll = () => (me.streamCount() === 0 ? resolve() : setTimeout(poll, 10));
    poll();
  }));
  ok(`${step}: ${me.streamCount()} streams left`);
  finish(0, 'DONE');
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
