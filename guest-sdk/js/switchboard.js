// Helpers for Switchboard listener plugins written in JavaScript (world
// `switchboard:plugin/plugin@0.1.0`, built with componentize-js).
//
// A plugin exports `listener`, made by `defineListener`:
//
//   import { defineListener, check } from './switchboard.js';
//
//   export const listener = defineListener({
//     name: 'js-hello',
//     version: '0.1.0',
//     on: {
//       'js-hello'(ctx, content) {
//         const { name } = check(content, { name: 'string' });
//         ctx.reply('js-hello', { text: `hello, ${name}` });
//       },
//     },
//   });
//
// The host imports below are bound by componentize-js to the WIT contract
// (guest-sdk/wit/0.1.0/plugin.wit); this file is hand-written and holds no generated code.

import { send, sendToTenant } from 'switchboard:plugin/sender@0.1.0';
import { isOnline, onlineUsers } from 'switchboard:plugin/presence@0.1.0';
import { log } from 'switchboard:plugin/logging@0.1.0';
import { get } from 'switchboard:plugin/config@0.1.0';

/**
 * An error a listener returns to the host: a value, not a fault. Thrown from a handler, it
 * becomes the `error` of `on-message` (`invalid-content`, `forbidden` or `other`), which the
 * sender receives as an error envelope. Any other exception traps the call (a fault).
 */
export class ListenerError extends Error {
  /**
   * @param {'invalid-content' | 'forbidden' | 'other'} tag
   * @param {string} message
   */
  constructor(tag, message) {
    super(message);
    // componentize-js returns an exception's `payload` as the WIT error value.
    Object.defineProperty(this, 'payload', { value: { tag, val: message } });
  }
}

/** The content is not what the listener accepts. */
export const invalidContent = (message) => new ListenerError('invalid-content', message);
/** The sender may not do this. */
export const forbidden = (message) => new ListenerError('forbidden', message);
/** Anything else. */
export const otherError = (message) => new ListenerError('other', message);

/**
 * A user as the host indexes sessions.
 * @param {number} userType
 * @param {string | number} userId
 * @returns {{userType: number, userId: string}}
 */
export const userRef = (userType, userId) => ({ userType, userId: String(userId) });

const KINDS = {
  string: (v) => typeof v === 'string',
  number: (v) => typeof v === 'number' && Number.isFinite(v),
  integer: (v) => Number.isInteger(v),
  boolean: (v) => typeof v === 'boolean',
  object: (v) => typeof v === 'object' && v !== null && !Array.isArray(v),
  array: (v) => Array.isArray(v),
  any: () => true,
};

/**
 * Checks that `content` is an object whose fields have the kinds in `shape`, and returns it.
 * A kind is one of string, number, integer, boolean, object, array, any; a trailing `?` makes
 * the field optional (absent or null). Throws `invalid-content` naming the first bad field.
 *
 * @template T
 * @param {T} content
 * @param {Record<string, string>} shape e.g. `{ text: 'string', toUserId: 'string?' }`
 * @returns {T}
 */
export function check(content, shape) {
  if (!KINDS.object(content)) {
    throw invalidContent('content must be a JSON object');
  }
  for (const [field, spec] of Object.entries(shape)) {
    const optional = spec.endsWith('?');
    const kind = optional ? spec.slice(0, -1) : spec;
    const test = KINDS[kind];
    if (!test) {
      throw new TypeError(`unknown kind ${spec} for field ${field}`);
    }
    const value = content[field];
    if (value === undefined || value === null) {
      if (!optional) {
        throw invalidContent(`missing field ${field}`);
      }
    } else if (!test(value)) {
      throw invalidContent(`field ${field} must be ${kind === 'integer' ? 'an' : 'a'} ${kind}`);
    }
  }
  return content;
}

/** What a handler can do while handling one message (or one lifecycle event). */
export class Context {
  /** @param {{sessionId: string, user: {userType: number, userId: string}, tenantId?: string}} session */
  constructor(session) {
    /** The session being handled. */
    this.session = session;
    /** Its user: `{userType, userId}`. */
    this.user = session.user;
    /** Its tenant, or undefined on single-tenant hosts. */
    this.tenantId = session.tenantId ?? undefined;
  }

  /** Sends `value` (JSON-encoded) as `type` to the session being handled. */
  reply(type, value) {
    this.sendTo({ tag: 'session', val: this.session.sessionId }, type, value);
  }

  /** Sends to one session by id. */
  sendToSession(sessionId, type, value) {
    this.sendTo({ tag: 'session', val: sessionId }, type, value);
  }

  /** Sends to every session of one user (`userRef(type, id)`). */
  sendToUser(user, type, value) {
    this.sendTo({ tag: 'user', val: user }, type, value);
  }

  /** Sends to every session of each listed user, as one delivery. */
  sendToUsers(users, type, value) {
    this.sendTo({ tag: 'users', val: users }, type, value);
  }

  /** Sends to every user of one user type. */
  sendToUserType(userType, type, value) {
    this.sendTo({ tag: 'user-type', val: userType }, type, value);
  }

  /** Sends to every session in the tenant. Needs the `broadcast` capability. */
  sendToEveryone(type, value) {
    this.sendTo({ tag: 'everyone' }, type, value);
  }

  /**
   * Sends to a WIT `target` within the tenant of the session being handled. A refused send
   * throws; uncaught, it becomes the listener's error.
   */
  sendTo(target, type, value) {
    send(target, type, JSON.stringify(value ?? null));
  }

  /** Sends within another tenant (undefined: every tenant). Needs `cross_tenant`. */
  sendToTenant(tenantId, target, type, value) {
    sendToTenant(tenantId, target, type, JSON.stringify(value ?? null));
  }

  /** Whether the user has an open session (in this tenant, cluster-wide). */
  isOnline(user) {
    return isOnline(user);
  }

  /** Ids of the online users of one user type (in this tenant, cluster-wide). */
  onlineUsers(userType) {
    return onlineUsers(userType);
  }

  /** A value of the `[config]` table of the plugin's sidecar, or undefined. */
  config(key) {
    return get(key) ?? undefined;
  }

  /** Logs at debug level, tagged with the plugin's name by the host. */
  debug(message) {
    log('debug', String(message));
  }

  /** Logs at info level. */
  info(message) {
    log('info', String(message));
  }

  /** Logs at warn level. */
  warn(message) {
    log('warn', String(message));
  }

  /** Logs at error level. */
  error(message) {
    log('error', String(message));
  }
}

function parseContent(text) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw invalidContent(`content is not JSON: ${e.message}`);
  }
}

/**
 * Timers work inside a call: an async handler may `await new Promise((r) => setTimeout(r, 10))`.
 * A timer cannot outlive its call, though: the host ends the call when the handler returns
 * (or its promise settles), and a callback still waiting then would never run. Such timers are
 * tracked, cancelled when the handler finishes, and reported as the listener's error, instead
 * of silently never firing.
 */
const pendingTimers = new Set();
const runtimeTimers = {
  setTimeout: globalThis.setTimeout,
  clearTimeout: globalThis.clearTimeout,
  setInterval: globalThis.setInterval,
  clearInterval: globalThis.clearInterval,
};
if (typeof runtimeTimers.setTimeout === 'function') {
  globalThis.setTimeout = (callback, ms, ...args) => {
    const id = runtimeTimers.setTimeout(() => {
      pendingTimers.delete(id);
      callback(...args);
    }, ms);
    pendingTimers.add(id);
    return id;
  };
  globalThis.clearTimeout = (id) => {
    pendingTimers.delete(id);
    runtimeTimers.clearTimeout(id);
  };
}
if (typeof runtimeTimers.setInterval === 'function') {
  globalThis.setInterval = (callback, ms, ...args) => {
    const id = runtimeTimers.setInterval(callback, ms, ...args);
    pendingTimers.add(id);
    return id;
  };
  globalThis.clearInterval = (id) => {
    pendingTimers.delete(id);
    runtimeTimers.clearInterval(id);
  };
}

/** Cancels the timers a handler left behind; returns the error that reports them, if any. */
function leftoverTimers() {
  const count = pendingTimers.size;
  if (count === 0) return undefined;
  for (const id of pendingTimers) {
    runtimeTimers.clearTimeout?.(id);
    runtimeTimers.clearInterval?.(id);
  }
  pendingTimers.clear();
  return otherError(
    `${count} timer(s) from setTimeout/setInterval were still pending when the handler ` +
      'finished; a call ends when its handler returns or its promise settles, so they would ' +
      'never run: await them inside the handler',
  );
}

/** The text of anything thrown or rejected. */
function messageOf(e) {
  if (e instanceof Error) return e.message || String(e);
  if (typeof e === 'string') return e;
  try {
    return JSON.stringify(e) ?? String(e);
  } catch {
    return String(e);
  }
}

/**
 * A handler's result as the export returns it: nothing for a synchronous handler (its
 * exceptions propagate as before), and for an async handler (one that returns a promise) a
 * promise the host's call awaits: componentize-js runs the event loop until it settles, so
 * `await fetch(...)` works. A rejection becomes the listener's error: a `ListenerError`
 * as it is, anything else as `other` with its message (a `listener_error` for the sender).
 * Timers still pending when the handler finishes are an error too (see `leftoverTimers`).
 */
function settle(result) {
  if (!result || typeof result.then !== 'function') {
    const leftover = leftoverTimers();
    if (leftover) throw leftover;
    return undefined;
  }
  return Promise.resolve(result).then(
    () => {
      const leftover = leftoverTimers();
      if (leftover) throw leftover;
    },
    (e) => {
      leftoverTimers();
      throw e instanceof ListenerError ? e : otherError(messageOf(e));
    },
  );
}

/**
 * Makes the `listener` export.
 *
 * @param {object} spec
 * @param {string} spec.name unique among loaded plugins
 * @param {string} spec.version shown with every fault report
 * @param {Record<string, (ctx: Context, content: any, type: string) => void | Promise<void>>} [spec.on]
 *   a handler per message type; the claimed types are its keys. A handler may be `async`
 *   (e.g. to `await fetch(...)`): the call lasts until its promise settles, and a rejection
 *   becomes the listener's error
 * @param {string[]} [spec.messageTypes] claimed types, when `onMessage` handles them
 * @param {(ctx: Context, type: string, content: any) => void} [spec.onMessage]
 * @param {(ctx: Context) => void} [spec.onConnect] a session opened
 * @param {(ctx: Context) => void} [spec.onDisconnect] a session closed
 */
export function defineListener(spec) {
  const on = spec.on ?? {};
  const messageTypes = spec.messageTypes ?? Object.keys(on);
  const lifecycleEvents = Boolean(spec.onConnect || spec.onDisconnect);
  return {
    describe() {
      return { name: spec.name, version: spec.version, messageTypes, lifecycleEvents };
    },
    onMessage(session, type, content) {
      const ctx = new Context(session);
      const value = parseContent(content);
      const handler = on[type];
      if (handler) {
        return settle(handler(ctx, value, type));
      } else if (spec.onMessage) {
        return settle(spec.onMessage(ctx, type, value));
      }
      throw otherError(`no handler for ${type}`);
    },
    onConnect(session) {
      return settle(spec.onConnect?.(new Context(session)));
    },
    onDisconnect(session) {
      return settle(spec.onDisconnect?.(new Context(session)));
    },
  };
}
