// js-timers: promises and timers in a JavaScript listener, for the end-to-end tests.
//
//   timer-await        awaits a 20 ms setTimeout, then replies timer-done {}
//   timer-leak         starts a timer and returns: the timer could never fire, so the call
//                      fails with a listener error saying so
//   throw-after-await  throws a plain Error after an await: a listener error with its message
//   reject             returns a rejected promise: a listener error with its message

import { defineListener } from '../../guest-sdk/js/switchboard.js';

export const listener = defineListener({
  name: 'js-timers',
  version: '1',
  on: {
    async 'timer-await'(ctx) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      ctx.reply('timer-done', {});
    },
    'timer-leak'() {
      setTimeout(() => {}, 10);
    },
    async 'throw-after-await'() {
      await Promise.resolve();
      throw new Error('boom after await');
    },
    reject() {
      return Promise.reject(new Error('rejected on purpose'));
    },
  },
});
