// js-greet: the example JavaScript listener. It greets with a configured greeting, sends
// notices to one user or to every user of a user type, and lists who is online.
//
//   js-greet  {"name"}                              -> js-greeting {"text", "lang", "version"} to the sender
//   js-notify {"text", "toUserId"?, "toUserType"?}   -> js-notice {"from", "text"} to that user, or to
//                                                      every user of the type; js-notify-ack
//                                                      {"to": "user", "online"} or {"to": "user-type",
//                                                      "onlineUsers": count} to the sender
//   js-who    {"userType"?}                         -> js-online {"userType", "users"} to the sender
//
// Config (sidecar js-greet.toml, [config]): `greeting` (default "Hello").

import { check, defineListener, userRef } from '../../guest-sdk/js/switchboard.js';

const VERSION = '0.1.0';

export const listener = defineListener({
  name: 'js-greet',
  version: VERSION,
  on: {
    'js-greet'(ctx, content) {
      const { name } = check(content, { name: 'string' });
      const greeting = ctx.config('greeting') ?? 'Hello';
      ctx.reply('js-greeting', { text: `${greeting}, ${name}!`, lang: 'js', version: VERSION });
    },

    'js-notify'(ctx, content) {
      const { text, toUserId, toUserType } = check(content, {
        text: 'string',
        toUserId: 'string?',
        toUserType: 'integer?',
      });
      const userType = toUserType ?? ctx.user.userType;
      const notice = { from: ctx.user.userId, text };
      if (toUserId) {
        const to = userRef(userType, toUserId);
        ctx.sendToUser(to, 'js-notice', notice);
        ctx.reply('js-notify-ack', { to: 'user', online: ctx.isOnline(to) });
      } else {
        ctx.sendToUserType(userType, 'js-notice', notice);
        ctx.reply('js-notify-ack', { to: 'user-type', onlineUsers: ctx.onlineUsers(userType).length });
      }
    },

    'js-who'(ctx, content) {
      const { userType } = check(content, { userType: 'integer?' });
      const type = userType ?? ctx.user.userType;
      ctx.reply('js-online', { userType: type, users: ctx.onlineUsers(type).sort() });
    },
  },
});
