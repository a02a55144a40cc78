'use strict';
// Plain sockets of socket.io-client 2.x or 4.x, picked by a version argument ("2" | "4"), and the
// few things the checks need that the two versions spell differently: seeing every event a
// socket receives, and sending an event packet whatever its name (a name the library would refuse
// or keep to itself, such as `disconnect`, included).
//
// socket.io-client 2.x speaks Engine.IO 3 / Socket.IO protocol 4; 4.x speaks Engine.IO 4 /
// Socket.IO protocol 5. The relay accepts both on the same URL.

const LIBRARIES = Object.freeze({ 2: 'socket.io-client', 4: 'socket.io-client-v4' });

/** The event names of the relay's protocol, the seed's and its extensions' (PROTOCOL.md). */
const PROTOCOL_EVENTS = Object.freeze([
  'JOIN_ROOM',
  'LEAVE_ROOM',
  'EMIT_ROOM',
  'LIST_CLIENTS',
  'P2P_EMIT',
  'P2P_EMIT_ACKNOWLEDGE',
  'MULTI_API_ADD_TARGET',
  'MULTI_API_TARGET_DISCONNECT',
  'MULTI_API_CREATE_STREAM',
  'SERVER_ERROR',
  'P2P_REQ',
  'P2P_RES',
  'P2P_WELCOME',
  'P2P_BATCH',
  'P2P_FRAME',
  'P2P_ROOM',
]);

/** The version argument of a script, checked; exits with a usage message otherwise. */
function versionArg(value, usage) {
  if (value !== '2' && value !== '4') {
    console.error(usage);
    process.exit(2);
  }
  return value;
}

/** The `io` function of socket.io-client `version`. */
function ioOf(version) {
  const name = LIBRARIES[version];
  if (!name) throw new Error(`unknown socket.io-client version ${JSON.stringify(version)}`);
  return require(name);
}

/**
 * Opens a socket to `url` announcing `clientId` (and the relay's extensions with `ext: true`).
 * A new Manager per socket (`forceNew`), since both versions would otherwise share one
 * connection, and so one client id, between the sockets of a host. No reconnection unless asked:
 * a check must see a disconnect, not have it papered over.
 */
function connect(version, url, clientId, options = {}) {
  const { ext = false, reconnection = false } = options;
  const query = { clientId };
  if (ext) query.p2pExt = '1';
  return ioOf(version)(url, { query, transports: ['websocket'], forceNew: true, reconnection });
}

/**
 * Resolves once `socket` is connected; rejects on a connection error, a disconnect, or after
 * `timeoutMs`.
 */
function connected(socket, timeoutMs) {
  if (socket.connected) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = (err) => {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('connect_error', onError);
      socket.off('disconnect', onDisconnect);
      if (err) reject(err);
      else resolve();
    };
    const onConnect = () => done();
    const onError = (e) => done(new Error(`connection error: ${e && e.message ? e.message : e}`));
    const onDisconnect = (reason) => done(new Error(`disconnected before connecting: ${reason}`));
    const timer = setTimeout(() => done(new Error(`not connected after ${timeoutMs} ms`)), timeoutMs);
    socket.on('connect', onConnect);
    socket.on('connect_error', onError);
    socket.on('disconnect', onDisconnect);
  });
}

/**
 * Calls `cb(name, args, answer)` for every event `socket` receives, before its listeners run;
 * `answer` is the acknowledgement function when the sender asked for one (not in `args`). Version
 * 4 has `onAny`; version 2 has no such hook, so its packet handler is wrapped.
 */
function onIncoming(socket, version, cb) {
  if (version === '4') {
    socket.onAny((name, ...args) => {
      const answer = typeof args[args.length - 1] === 'function' ? args.pop() : undefined;
      cb(name, args, answer);
    });
    return;
  }
  const onevent = socket.onevent;
  socket.onevent = function onEventRecorded(packet) {
    const data = Array.isArray(packet.data) ? packet.data : [];
    const answer = packet.id !== undefined && packet.id !== null ? this.ack(packet.id) : undefined;
    cb(data[0], data.slice(1), answer);
    return onevent.call(this, packet);
  };
}

/** Whether `v` holds binary data (a Buffer, an ArrayBuffer or a view) anywhere. */
function hasBinary(v, depth = 0) {
  if (depth > 64 || v === null || typeof v !== 'object') return false;
  if (Buffer.isBuffer(v) || v instanceof ArrayBuffer || ArrayBuffer.isView(v)) return true;
  if (Array.isArray(v)) return v.some((x) => hasBinary(x, depth + 1));
  return Object.keys(v).some((k) => hasBinary(v[k], depth + 1));
}

/**
 * Sends the event packet `[name, ...args]` as it is, below the library's `emit` (which refuses or
 * keeps to itself a few names); with `ack`, asks for an acknowledgement. A packet with binary data
 * goes as a binary event: version 4's encoder decides that itself from an EVENT packet, version
 * 2's must be told.
 */
function sendPacket(socket, version, name, args, ack) {
  const data = [name, ...args];
  const packet = { type: version === '2' && hasBinary(data) ? 5 : 2, data };
  if (typeof ack === 'function') {
    const id = socket.ids++;
    socket.acks[id] = ack;
    packet.id = id;
  }
  socket.packet(packet);
}

/**
 * Emits `event(...args, ack)` and resolves with the acknowledgement's arguments; rejects when the
 * acknowledgement is not called within `timeoutMs`.
 */
function emitWithAck(socket, event, args, timeoutMs) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the acknowledgement of ${event} was not called within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.emit(event, ...args, (...answer) => {
      clearTimeout(timer);
      resolve(answer);
    });
  });
}

/** Resolves once the relay lists `clientId` (the relay registers a client after its connect). */
async function registered(socket, clientId, timeoutMs) {
  const [list] = await emitWithAck(socket, 'LIST_CLIENTS', [], timeoutMs);
  if (!Array.isArray(list) || !list.includes(clientId)) {
    throw new Error(`LIST_CLIENTS does not list ${clientId}: ${JSON.stringify(list)}`);
  }
}

/**
 * Keeps every `SERVER_ERROR` text `socket` receives, in order; `next(timeoutMs)` resolves with the
 * first one not taken yet.
 */
function serverErrors(socket) {
  const all = [];
  let taken = 0;
  let waiters = [];
  socket.on('SERVER_ERROR', (message) => {
    all.push(message);
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  });
  return {
    all,
    next(timeoutMs, what) {
      if (taken < all.length) return Promise.resolve(all[taken++]);
      return new Promise((resolve, reject) => {
        const poll = () => {
          if (taken >= all.length) return waiters.push(poll);
          clearTimeout(timer);
          return resolve(all[taken++]);
        };
        const timer = setTimeout(() => {
          waiters = waiters.filter((f) => f !== poll);
          reject(new Error(`no SERVER_ERROR within ${timeoutMs} ms for ${what}`));
        }, timeoutMs);
        waiters.push(poll);
      });
    },
    /** Marks every message received so far as taken. */
    skip() {
      taken = all.length;
    },
  };
}

module.exports = {
  LIBRARIES,
  PROTOCOL_EVENTS,
  versionArg,
  ioOf,
  connect,
  connected,
  registered,
  onIncoming,
  sendPacket,
  hasBinary,
  emitWithAck,
  serverErrors,
};
