// A fallback plugin in JavaScript, built with ComponentizeJS at its default settings
// (scripts/build-polyglot-plugins.sh): a JSON answer naming the upstream, the reason
// and when to retry, with `retry-after` and `x-fallback: js` headers.
//
// Config keys (all optional):
// - `message`: the text of the answer's `message` field (default "temporarily unavailable")
// - `status`: the status to answer with, 200-599 (default 503)
// - `probe_url`: a URL to fetch before answering. The gateway grants no network, so
//   the fetch fails at once; the answer reports what the plugin saw in `probe` and in an
//   `x-probe: failed` header. It shows that outgoing HTTP fails at call time, with an
//   error the plugin can handle, rather than refusing the plugin at load.

import { log, request } from 'edge-gateway:plugin/host@0.5.0';

const settings = { message: 'temporarily unavailable', status: 503, probeUrl: null };

export function init(config) {
  for (const [key, value] of config) {
    if (key === 'message') {
      settings.message = value;
    } else if (key === 'status') {
      const status = Number(value);
      if (!Number.isInteger(status) || status < 200 || status > 599) {
        throw `status: \`${value}\` is not a status between 200 and 599`;
      }
      settings.status = status;
    } else if (key === 'probe_url') {
      settings.probeUrl = value;
    } else {
      throw `unknown config key \`${key}\``;
    }
  }
  log('info', 'js fallback ready');
}

// What fetching `url` did, as text. Async: ComponentizeJS runs the event loop until the
// promise settles, within the call.
async function probe(url) {
  try {
    const response = await fetch(url);
    return `ok: ${response.status}`;
  } catch (e) {
    const why = `${e}`;
    log('warn', `probe ${url} failed: ${why}`);
    return `failed: ${why}`;
  }
}

export async function respond(context) {
  const document = {
    message: settings.message,
    reason: context.reason,
    state: context.state,
    upstream: request('upstream'),
    method: request('method'),
    path: request('path'),
    retry_after_ms: Number(context.retryAfterMs),
  };
  const headers = [
    ['content-type', 'application/json'],
    ['x-fallback', 'js'],
  ];
  if (context.retryAfterMs > 0n) {
    headers.push(['retry-after', String((context.retryAfterMs + 999n) / 1000n)]);
  }
  if (settings.probeUrl !== null) {
    document.probe = await probe(settings.probeUrl);
    headers.push(['x-probe', document.probe.startsWith('ok') ? 'ok' : 'failed']);
  }
  return {
    tag: 'respond',
    val: {
      status: settings.status,
      headers,
      body: new TextEncoder().encode(JSON.stringify(document)),
      trailers: [],
    },
  };
}
