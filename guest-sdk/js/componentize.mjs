// Builds a JavaScript listener into a component of the world `plugin`
// (switchboard:plugin@0.1.0) with componentize-js.
//
//   node componentize.mjs SOURCE.js OUT.wasm [--wit DIR] [--world NAME]
//
// SOURCE.js is an ES module exporting `listener`; it may import relative modules under the
// current directory (componentize-js maps the current directory as the guest's `/`). Run it
// from the folder that holds both the listener and the helpers it imports.
//
// The WASI features a listener can use are kept: stdio (console output, discarded by the
// host), random, clocks and `http` (`fetch()` through wasi:http/outgoing-handler, which the
// host allows per plugin with `[capabilities] allowed_hosts`). `fetch-event` (serving
// incoming HTTP requests) is disabled: a listener is not an HTTP server.

import { writeFile, rename } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { componentize } from '@bytecodealliance/componentize-js';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (flag, fallback) => {
  const i = args.indexOf(flag);
  if (i < 0) return fallback;
  const [, value] = args.splice(i, 2);
  return value;
};
const witPath = resolve(option('--wit', join(here, '..', 'wit')));
const worldName = option('--world', 'plugin');
const [source, out] = args;
if (!source || !out) {
  console.error('usage: node componentize.mjs SOURCE.js OUT.wasm [--wit DIR] [--world NAME]');
  process.exit(2);
}

const started = Date.now();
const { component } = await componentize({
  sourcePath: source,
  witPath,
  worldName,
  disableFeatures: ['fetch-event'],
});
const tmp = `${out}.tmp${process.pid}`;
await writeFile(tmp, component);
await rename(tmp, out);
console.error(
  `componentize-js: ${source} -> ${out} (${(component.length / 1e6).toFixed(1)} MB, ${((Date.now() - started) / 1000).toFixed(1)} s)`,
);
