'use strict';
// A client of the seed-era P2P protocol (see the seed protocol document), built on a plain
// socket.io-client 2.x socket. It behaves like the seed's client plugin so that the relay can be
// tested against what existing JavaScript peers send and expect.

const io = require('socket.io-client');

const EV = Object.freeze({
  JOIN_ROOM: 'JOIN_ROOM',
  LEAVE_ROOM: 'LEAVE_ROOM',
  EMIT_ROOM: 'EMIT_ROOM',
  LIST_CLIENTS: 'LIST_CLIENTS',
  P2P_EMIT: 'P2P_EMIT',
  P2P_EMIT_ACKNOWLEDGE: 'P2P_EMIT_ACKNOWLEDGE',
  MULTI_API_ADD_TARGET: 'MULTI_API_ADD_TARGET',
  MULTI_API_TARGET_DISCONNECT: 'MULTI_API_TARGET_DISCONNECT',
  SERVER_ERROR: 'SERVER_ERROR',
});

/**
 * Opens a raw socket.io-client 2.x socket announcing `clientId` in the handshake query.
 * `forceNew` matters: socket.io-client otherwise shares one Manager (and so one handshake query,
 * i.e. one client id) between every socket opened to the same host.
 */
function connectRaw(url, clientId, options) {
  const opts = Object.assign({ transports: ['websocket'], forceNew: true }, options || {});
  if (clientId !== undefined && clientId !== null) {
    opts.query = Object.assign({}, opts.query || {}, { clientId });
  }
  return io(url, opts);
}

class SeedClient {
  constructor(url, clientId, options) {
    this.clientId = clientId;
    this.socket = connectRaw(url, clientId, options);
    /** Every SERVER_ERROR message received, in order. */
    this.serverErrors = [];
    this._serverErrorWaiters = [];
    this._addTargetCallbacks = [];
    this._targetDisconnectCallbacks = [];
    // clientId -> [{event, cb, listener}] for listeners registered through from(clientId).
    this._fromListeners = new Map();
    // [{event, cb, listener}] for listeners registered through onAny/onceAny.
    this._anyListeners = [];
    this._addTargetHooked = false;

    this.socket.on(EV.SERVER_ERROR, (message) => {
      this.serverErrors.push(message);
      const waiters = this._serverErrorWaiters;
      this._serverErrorWaiters = [];
      for (const w of waiters) w(message);
    });
    // Registered before any caller's callback so that, by the time a caller hears of the
    // disconnect, the listeners tied to that peer are already gone.
    this.socket.on(EV.MULTI_API_TARGET_DISCONNECT, (targetId) => {
      this._dropFromListeners(targetId);
      for (const cb of this._targetDisconnectCallbacks.slice()) cb(targetId);
    });
  }

  /** Resolves once connected; rejects on a connection error, a disconnect, or after `timeoutMs`. */
  waitConnected(timeoutMs = 5000) {
    const s = this.socket;
    if (s.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (err) => {
        clearTimeout(timer);
        s.off('connect', onConnect);
        s.off('connect_error', onError);
        s.off('error', onError);
        s.off('disconnect', onDisconnect);
        if (err) reject(err);
        else resolve();
      };
      const onConnect = () => done();
      const onError = (e) => done(new Error(`connection error: ${e && e.message ? e.message : e}`));
      const onDisconnect = (reason) => done(new Error(`disconnected before connecting: ${reason}`));
      const timer = setTimeout(() => done(new Error(`not connected after ${timeoutMs} ms`)), timeoutMs);
      s.on('connect', onConnect);
      s.on('connect_error', onError);
      s.on('error', onError);
      s.on('disconnect', onDisconnect);
    });
  }

  /** Resolves with the next SERVER_ERROR message (or one already received past index `since`). */
  nextServerError(timeoutMs = 3000, since = this.serverErrors.length) {
    if (this.serverErrors.length > since) return Promise.resolve(this.serverErrors[since]);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this._serverErrorWaiters.indexOf(waiter);
        if (i >= 0) this._serverErrorWaiters.splice(i, 1);
        reject(new Error(`no SERVER_ERROR within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (message) => {
        clearTimeout(timer);
        resolve(message);
      };
      this._serverErrorWaiters.push(waiter);
    });
  }

  close() {
    this.socket.close();
  }

  // ---- Core ----

  joinRoom(room, cb) {
    if (typeof cb === 'function') this.socket.emit(EV.JOIN_ROOM, room, cb);
    else this.socket.emit(EV.JOIN_ROOM, room);
  }

  leaveRoom(room, cb) {
    if (typeof cb === 'function') this.socket.emit(EV.LEAVE_ROOM, room, cb);
    else this.socket.emit(EV.LEAVE_ROOM, room);
  }

  emitRoom(room, event, ...args) {
    this.socket.emit(EV.EMIT_ROOM, room, event, ...args);
  }

  getClientList() {
    return new Promise((resolve) => {
      this.socket.emit(EV.LIST_CLIENTS, (list) => resolve(list));
    });
  }

  // ---- Message ----

  /**
   * Asks `targetId` to accept this client as a peer. The seed server acknowledges with nothing on
   * success and with an error string otherwise (e.g. "Client x is not registered to server").
   */
  addP2pTarget(targetId) {
    return new Promise((resolve, reject) => {
      this.socket.emit(EV.MULTI_API_ADD_TARGET, targetId, (err) => {
        if (err !== undefined && err !== null) reject(new Error(String(err)));
        else resolve();
      });
    });
  }

  /** Accepts every add-target request, then tells `cb` who asked. */
  onAddP2pTarget(cb) {
    this._addTargetCallbacks.push(cb);
    if (this._addTargetHooked) return;
    this._addTargetHooked = true;
    this.socket.on(EV.MULTI_API_ADD_TARGET, (sourceId, ack) => {
      // Accepting is an acknowledgement without arguments; anything else would read as a refusal.
      if (typeof ack === 'function') ack();
      for (const f of this._addTargetCallbacks.slice()) f(sourceId);
    });
  }

  onP2pTargetDisconnect(cb) {
    this._targetDisconnectCallbacks.push(cb);
  }

  /**
   * Sends `event(...args)` to `targetId`. With a function as the last argument the event goes as
   * P2P_EMIT_ACKNOWLEDGE and the function receives the target's acknowledgement.
   */
  emitTo(targetId, event, ...args) {
    const ack = args.length > 0 && typeof args[args.length - 1] === 'function' ? args.pop() : null;
    const payload = { targetClientId: targetId, event, args: [this.clientId, ...args] };
    if (ack) this.socket.emit(EV.P2P_EMIT_ACKNOWLEDGE, payload, ack);
    else this.socket.emit(EV.P2P_EMIT, payload);
  }

  /** Listens to `event` from any sender; `cb` gets the arguments after the sender id. */
  onAny(event, cb) {
    this._addAny(event, cb, false);
  }

  onceAny(event, cb) {
    this._addAny(event, cb, true);
  }

  /** Removes one onAny/onceAny listener, or all of them for `event` when `cb` is omitted. */
  offAny(event, cb) {
    this._anyListeners = this._anyListeners.filter((e) => {
      if (e.event !== event || (cb && e.cb !== cb)) return true;
      this.socket.off(event, e.listener);
      return false;
    });
  }

  _addAny(event, cb, once) {
    const entry = { event, cb, listener: null };
    entry.listener = (_sender, ...rest) => {
      if (once) this._removeAny(entry);
      cb(...rest);
    };
    this._anyListeners.push(entry);
    this.socket.on(event, entry.listener);
  }

  _removeAny(entry) {
    const i = this._anyListeners.indexOf(entry);
    if (i >= 0) this._anyListeners.splice(i, 1);
    this.socket.off(entry.event, entry.listener);
  }

  /** Listeners that only hear events whose sender id (args[0]) is `sourceId`. */
  from(sourceId) {
    return {
      on: (event, cb) => this._addFrom(sourceId, event, cb, false),
      once: (event, cb) => this._addFrom(sourceId, event, cb, true),
      off: (event, cb) => this._offFrom(sourceId, event, cb),
    };
  }

  /** How many listeners registered through from(sourceId) are still active. */
  fromListenerCount(sourceId) {
    const list = this._fromListeners.get(sourceId);
    return list ? list.length : 0;
  }

  _addFrom(sourceId, event, cb, once) {
    const entry = { event, cb, listener: null };
    entry.listener = (sender, ...rest) => {
      if (sender !== sourceId) return;
      // A once-listener must survive events from other senders, so socket.once would not do.
      if (once) this._removeFrom(sourceId, entry);
      cb(...rest);
    };
    if (!this._fromListeners.has(sourceId)) this._fromListeners.set(sourceId, []);
    this._fromListeners.get(sourceId).push(entry);
    this.socket.on(event, entry.listener);
  }

  _removeFrom(sourceId, entry) {
    const list = this._fromListeners.get(sourceId);
    if (list) {
      const i = list.indexOf(entry);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this._fromListeners.delete(sourceId);
    }
    this.socket.off(entry.event, entry.listener);
  }

  _offFrom(sourceId, event, cb) {
    const list = this._fromListeners.get(sourceId);
    if (!list) return;
    for (const entry of list.slice()) {
      if (entry.event === event && (!cb || entry.cb === cb)) this._removeFrom(sourceId, entry);
    }
  }

  _dropFromListeners(sourceId) {
    const list = this._fromListeners.get(sourceId);
    if (!list) return;
    for (const entry of list) this.socket.off(entry.event, entry.listener);
    this._fromListeners.delete(sourceId);
  }

  // ---- Stream ----
  // Written from the Stream section of the seed protocol document: one chunk in flight per
  // stream, each sent as P2P_EMIT_ACKNOWLEDGE of `P2P_EMIT_STREAM-from-stream-<own stream id>`
  // and the next one only after the acknowledgement; a `null` chunk ends a direction;
  // PEER_STREAM_DESTROYED destroys the peer's end.

  // Set `streamChunksAsJson = true` to send stream chunks as JSON arrays of numbers (which the
  // seed's receivers also accept) instead of Buffers.

  /**
   * Opens a stream to `targetId`. Resolves with a Node Duplex once the peer accepts; rejects with
   * the refusal text (unknown client, not listening) otherwise.
   */
  addP2pStream(targetId) {
    const seq = (this._streamSeq = (this._streamSeq || 0) + 1);
    const tag = Math.random().toString(36).slice(2, 8);
    const sourceStreamId = `${this.clientId}-${seq}-${tag}`;
    const targetStreamId = `${targetId}-${seq}-${tag}`;
    // The peer may send a chunk right behind its acceptance, so listen before asking.
    const duplex = this._createStream(targetId, sourceStreamId, targetStreamId);
    return new Promise((resolve, reject) => {
      const info = { sourceStreamId, targetStreamId, targetClientId: targetId };
      this.socket.emit('MULTI_API_CREATE_STREAM', info, (err) => {
        if (err !== undefined && err !== null) {
          duplex._p2p.quiet = true;
          duplex.destroy();
          reject(new Error(String(err)));
        } else {
          resolve(duplex);
        }
      });
    });
  }

  /**
   * Accepts every stream a peer opens: `cb(duplex, connectionInfo)`. Replaces an earlier `cb`.
   * From the first call on, this client answers every request: accepted while a `cb` is set,
   * refused with the seed's text after `offAddP2pStream`.
   */
  onAddP2pStream(cb) {
    this._streamAcceptor = cb;
    if (this._streamHooked) return;
    this._streamHooked = true;
    this.socket.on('MULTI_API_CREATE_STREAM', (info, ack) => {
      const answer = typeof ack === 'function' ? ack : () => {};
      const accept = this._streamAcceptor;
      if (!accept) {
        answer(`Client ${this.clientId} is not listening to create stream event`);
        return;
      }
      if (!info || typeof info.sourceClientId !== 'string') {
        answer('MULTI_API_CREATE_STREAM without sourceClientId');
        return;
      }
      // On this side the ids swap: our stream id is the opener's targetStreamId.
      const duplex = this._createStream(info.sourceClientId, info.targetStreamId, info.sourceStreamId);
      answer();
      accept(duplex, info);
    });
  }

  /** Stops accepting streams. */
  offAddP2pStream() {
    this._streamAcceptor = null;
  }

  /** How many streams of this client still have socket listeners. */
  streamCount() {
    return this._streams ? this._streams.size : 0;
  }

  _createStream(peerId, ownStreamId, peerStreamId) {
    const { Duplex } = require('stream');
    if (!this._streams) this._streams = new Set();
    const socket = this.socket;
    const dataEvent = `P2P_EMIT_STREAM-from-stream-${peerStreamId}`;
    const state = { peerId, ownStreamId, peerStreamId, heldAck: null, ended: false, quiet: false };
    const client = this;
    const duplex = new Duplex({
      // Chunks from Rust peers are JSON arrays of numbers; the readable side hands out Buffers.
      write(chunk, _encoding, callback) {
        // The seed sends Buffers (binary attachments); `streamChunksAsJson` sends arrays of numbers.
        const payload = client.streamChunksAsJson ? Array.from(chunk) : chunk;
        client.emitTo(peerId, `P2P_EMIT_STREAM-from-stream-${ownStreamId}`, payload, (err) => {
          if (err !== undefined && err !== null) callback(new Error(String(err)));
          else callback();
        });
      },
      final(callback) {
        client.emitTo(peerId, `P2P_EMIT_STREAM-from-stream-${ownStreamId}`, null, () => callback());
      },
      read() {
        // The reader wants more: acknowledge the chunk held back, so the peer sends the next.
        const ack = state.heldAck;
        state.heldAck = null;
        if (ack) ack();
      },
      destroy(err, callback) {
        detach();
        if (!state.quiet && !(state.ended && duplex.writableFinished)) {
          client.emitTo(peerId, 'PEER_STREAM_DESTROYED', ownStreamId);
        }
        callback(err);
      },
    });
    duplex._p2p = state;

    const onData = (sender, chunk, ack) => {
      if (sender !== peerId) return;
      const answer = typeof ack === 'function' ? ack : () => {};
      if (chunk === null || chunk === undefined) {
        state.ended = true;
        duplex.push(null);
        answer();
        maybeDone();
        return;
      }
      let buf;
      if (Buffer.isBuffer(chunk)) buf = chunk;
      else if (chunk instanceof ArrayBuffer) buf = Buffer.from(chunk);
      else if (Array.isArray(chunk)) buf = Buffer.from(chunk);
      else if (typeof chunk === 'string') buf = Buffer.from(chunk);
      else {
        answer('stream chunk is not bytes');
        duplex.destroy(new Error('stream chunk is not bytes'));
        return;
      }
      // Stop-and-wait: acknowledge now if the readable side has room, else when it is read.
      if (duplex.push(buf)) answer();
      else state.heldAck = answer;
    };
    const onDestroyed = (sender, streamId) => {
      if (sender !== peerId || streamId !== peerStreamId) return;
      state.quiet = true;
      duplex.destroy(new Error(`stream destroyed by '${peerId}'`));
    };
    const onTargetGone = (id) => {
      if (id !== peerId) return;
      state.quiet = true;
      duplex.destroy(new Error(`client '${peerId}' disconnected`));
    };
    const onDisconnect = () => {
      state.quiet = true;
      duplex.destroy(new Error('disconnected from the server'));
    };
    function detach() {
      if (!client._streams.has(duplex)) return;
      client._streams.delete(duplex);
      socket.off(dataEvent, onData);
      socket.off('PEER_STREAM_DESTROYED', onDestroyed);
      socket.off('MULTI_API_TARGET_DISCONNECT', onTargetGone);
      socket.off('disconnect', onDisconnect);
    }
    // Both directions ended: the stream is over and its listeners go.
    function maybeDone() {
      if (state.ended && duplex.writableFinished) detach();
    }
    duplex.on('finish', maybeDone);
    socket.on(dataEvent, onData);
    socket.on('PEER_STREAM_DESTROYED', onDestroyed);
    socket.on('MULTI_API_TARGET_DISCONNECT', onTargetGone);
    socket.on('disconnect', onDisconnect);
    this._streams.add(duplex);
    return duplex;
  }
}

// ---- Service ----
// Written from the Service section of the seed protocol document: a service is addressed like a
// client, a topic is the room `service:<service>:topic:<topic>`, publications arrive as
// `<room>-DEFAULT_TOPIC_EVENT` and `<room>-TOPIC_BEING_DESTROYED` ends a topic.

const SUBSCRIBE_TOPIC = 'SUBSCRIBE_TOPIC';
const UNSUBSCRIBE_TOPIC = 'UNSUBSCRIBE_TOPIC';
const EMPTY_TOPIC = 'topicName can not be empty';

function topicRoom(service, topic) {
  return `service:${service}:topic:${topic}`;
}

function topicNames(names) {
  // The seed ignores names that are not strings (and empty ones make no topic).
  const list = Array.isArray(names) ? names : [names];
  return list.filter((n) => typeof n === 'string' && n.length > 0);
}

/** Calls `api` of `service`; with a function as the last argument it receives the answer. */
SeedClient.prototype.emitService = function emitService(service, api, ...args) {
  this.emitTo(service, api, ...args);
};

/**
 * Subscribes to `topic` of `service`. Resolves once the service acknowledged; `cb` then receives
 * each publication's arguments. When the topic is destroyed its listener is removed and
 * `onDestroyed` (optional) is called. Rejects with the service's error text (`ack(error)`).
 */
SeedClient.prototype.subscribeTopic = function subscribeTopic(service, topic, cb, onDestroyed) {
  return new Promise((resolve, reject) => {
    this.emitService(service, SUBSCRIBE_TOPIC, this.clientId, topic, (err) => {
      if (err !== undefined && err !== null && err !== '') {
        reject(new Error(String(err)));
        return;
      }
      const room = topicRoom(service, topic);
      const publication = `${room}-DEFAULT_TOPIC_EVENT`;
      const onPublish = (...args) => cb(...args);
      this.socket.on(publication, onPublish);
      this.socket.once(`${room}-TOPIC_BEING_DESTROYED`, () => {
        this.socket.off(publication, onPublish);
        if (typeof onDestroyed === 'function') onDestroyed();
      });
      resolve();
    });
  });
};

/** Unsubscribes from `topic` of `service` (not acknowledged, as in the seed). */
SeedClient.prototype.unsubscribeTopic = function unsubscribeTopic(service, topic) {
  this.emitService(service, UNSUBSCRIBE_TOPIC, this.clientId, topic);
  const room = topicRoom(service, topic);
  this.socket.off(`${room}-DEFAULT_TOPIC_EVENT`);
  this.socket.off(`${room}-TOPIC_BEING_DESTROYED`);
};

/** Turns this client into the service named by its client id (one service per client). */
SeedClient.prototype._initService = function _initService() {
  this.isService = true;
  this._topics = new Set();
  const membership = (action, event) => (clientId, topic, ack) => {
    const answer = typeof ack === 'function' ? ack : () => {};
    if (typeof topic !== 'string' || topic.length === 0) {
      answer(EMPTY_TOPIC);
      return;
    }
    this.socket.emit(event, action, clientId, topicRoom(this.clientId, topic), answer);
  };
  this.onAny(SUBSCRIBE_TOPIC, membership('CLIENT_SUBSCRIBE_TOPIC', EV.JOIN_ROOM));
  this.onAny(UNSUBSCRIBE_TOPIC, membership('CLIENT_UNSUBSCRIBE_TOPIC', EV.LEAVE_ROOM));
};

SeedClient.prototype._requireService = function _requireService(what) {
  if (!this.isService) throw new Error(`${what}: this client is not a service`);
};

/** Handles calls of `api`: `cb(...args, ack?)` with the arguments after the caller id. */
SeedClient.prototype.provideService = function provideService(api, cb) {
  this._requireService('provideService');
  this.onAny(api, cb);
};

/** Removes the handlers of `api` (or only `cb`). */
SeedClient.prototype.destroyService = function destroyService(api, cb) {
  this._requireService('destroyService');
  this.offAny(api, cb);
};

/** Creates one topic or an array of topics. */
SeedClient.prototype.createTopic = function createTopic(names) {
  this._requireService('createTopic');
  for (const name of topicNames(names)) {
    if (this._topics.has(name)) continue;
    this._topics.add(name);
    this.socket.emit(EV.JOIN_ROOM, 'SERVICE_CREATE_TOPIC', topicRoom(this.clientId, name));
  }
};

/** Publishes to a topic this service created; throws otherwise. */
SeedClient.prototype.publishTopic = function publishTopic(topic, ...args) {
  this._requireService('publishTopic');
  if (typeof topic !== 'string') throw new Error('publishTopic: the topic name must be a string');
  if (!this._topics.has(topic)) throw new Error(`publishTopic: topic '${topic}' was not created`);
  const room = topicRoom(this.clientId, topic);
  this.socket.emit(EV.EMIT_ROOM, room, `${room}-DEFAULT_TOPIC_EVENT`, ...args);
};

/** Destroys one topic or an array of topics: subscribers are told and leave. */
SeedClient.prototype.destroyTopic = function destroyTopic(names) {
  this._requireService('destroyTopic');
  for (const name of topicNames(names)) {
    this._topics.delete(name);
    this.socket.emit(EV.LEAVE_ROOM, 'SERVICE_DESTROY_TOPIC', topicRoom(this.clientId, name));
  }
};

/** Sends `event(serviceName, ...args)` to a client (with an acknowledgement if the last argument is a function). */
SeedClient.prototype.emitClient = function emitClient(clientId, event, ...args) {
  this._requireService('emitClient');
  this.emitTo(clientId, event, ...args);
};

function createSeedClient(url, clientId, options) {
  return new SeedClient(url, clientId, options);
}

/** A client that is the service `serviceName` (its client id is the service name). */
function createSeedService(url, serviceName, options) {
  const client = new SeedClient(url, serviceName, options);
  client._initService();
  return client;
}

module.exports = { createSeedClient, createSeedService, connectRaw, SeedClient, EV, topicRoom };
