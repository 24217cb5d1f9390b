// js-notes: stores a note in the application's back end over HTTP and tells the sender the
// id the back end gave it.
//
//   note-save {"text"}  -> POST <backend_url> {"text", "userId"} (JSON)
//                       -> note-saved {"id"} to the sender, with the back end's `id`
//
// Config (sidecar js-notes.toml, [config]): `backend_url`, the URL notes are POSTed to. The
// sidecar must also allow that host (`[capabilities] allowed_hosts`): without it every
// request is refused and the sender gets a `listener_error` naming the refusal.

import { check, defineListener, otherError } from '../../guest-sdk/js/switchboard.js';

export const listener = defineListener({
  name: 'js-notes',
  version: '0.1.0',
  on: {
    async 'note-save'(ctx, content) {
      const { text } = check(content, { text: 'string' });
      const url = ctx.config('backend_url');
      if (!url) {
        throw otherError('js-notes has no backend_url in the [config] of its sidecar');
      }
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ text, userId: ctx.user.userId }),
      });
      if (!response.ok) {
        throw otherError(`the back end answered ${response.status}`);
      }
      const { id } = await response.json();
      ctx.reply('note-saved', { id });
    },
  },
});
