// Preloaded into NNI's Node manager (NODE_OPTIONS=--require ...) by `resnas create` / `resnas resume`.
// NNI 3.0's web server has no login, accepts any Host header, and its REST API deserialises payloads that can
// run code (POST /api/v1/nni/experiment/import-data). This wraps the request handling of the manager's own
// port, Jupyter-style:
//   - a Host that is not 127.0.0.1 / localhost / [::1] (any port) or the --bind-host address is refused: a web
//     page that rebinds its DNS name to 127.0.0.1 still sends its own name (DNS rebinding defence);
//   - everything needs the experiment's token (RESNAS_TOKEN) as ?token=... (which sets an HttpOnly,
//     SameSite=Strict cookie and redirects to the same URL without it), as that cookie, or as an
//     `Authorization: token ...` header; without RESNAS_TOKEN (`--no-token`) only the Host check applies;
//   - except NNI's internal channels, which its tuner and trials call without any token: the tuner websocket
//     (/tuner), the local trials' HTTP command channel (/env/ENV/TRIAL, GET and PUT) and the remote workers'
//     websocket (/platform/ID). A browser cannot use them (no Origin / Sec-Fetch-* header allowed), nor, over
//     loopback, a process of another user (the client socket's owner is read from /proc/net/tcp).
// Requests let through that ask for the dashboard's icon fonts, or for a static file naming their CDN, are answered
// by dashboard_assets.js from this port (so the dashboard works without internet).
// Other servers of the process (none on the local platform) are left alone.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const net = require('net');
const { answerAsset } = require('./dashboard_assets');

function argument(name) {
  const index = process.argv.indexOf(name);
  return index >= 0 ? process.argv[index + 1] : undefined;
}

// NNI's main.js is started as `node main.js --port P --experiment-id ID ...`; anything else that inherits
// NODE_OPTIONS (a trial's own Node tool) is not the manager and keeps its servers as they are.
const managerPort = argument('--experiment-id') === undefined ? NaN : Number(argument('--port'));
const prefix = argument('--url-prefix') ? `/${argument('--url-prefix')}` : '';

const token = process.env.RESNAS_TOKEN || '';
delete process.env.RESNAS_TOKEN; // the tuner, trials and GPU collector it starts need not hold it
const tokenDigest = crypto.createHash('sha256').update(token).digest();
const cookieName = `resnas-token-${managerPort}`; // cookies ignore ports: one name per experiment port

const bindHost = (process.env.RESNAS_BIND_HOST || '127.0.0.1').toLowerCase();
const wildcardBind = bindHost === '0.0.0.0' || bindHost === '::';
const allowedHosts = new Set(['127.0.0.1', 'localhost', '[::1]', net.isIPv6(bindHost) ? `[${bindHost}]` : bindHost]);

// NNI ids (environment, trial, channel) are letters, digits, '-' and '_': no '..', no '%2F'.
const ID = '[A-Za-z0-9_-]+';
const INTERNAL_UPGRADES = [new RegExp(`^${prefix}/tuner(/${ID})?$`), new RegExp(`^${prefix}/platform/${ID}(/${ID})?$`)];
const INTERNAL_REQUESTS = [new RegExp(`^${prefix}/env/${ID}/${ID}$`)];

const REFUSED_HOST = 'This NNI server only answers requests addressed to 127.0.0.1, localhost or the address it '
  + 'was bound to (--bind-host), so open the URL that `resnas create` printed.\n';
const REFUSED_TOKEN = 'This NNI dashboard needs its access token: open the URL that `resnas create` printed '
  + '(it ends in ?token=...), or `resnas status ID` for a summary.\n';
const REFUSED_INTERNAL = 'This is a channel for NNI\'s own tuner and trials, not for browsers or other users.\n';

function hostName(header) {
  const host = String(header).trim().toLowerCase();
  if (host.startsWith('[')) {
    return host.slice(0, host.indexOf(']') + 1);
  }
  return host.split(':').length === 2 ? host.split(':')[0] : host;
}

function hostAllowed(header) {
  if (!header) {
    return false;
  }
  const name = hostName(header);
  // Bound to every interface, any IP literal names this machine: a rebinding page can only send a DNS name.
  return allowedHosts.has(name) || (wildcardBind && net.isIP(name.replace(/^\[|\]$/g, '')) !== 0);
}

function sameToken(given) {
  // Digests of equal length, so timingSafeEqual leaks neither the token nor its length.
  const digest = crypto.createHash('sha256').update(String(given)).digest();
  return crypto.timingSafeEqual(digest, tokenDigest);
}

function cookieToken(header) {
  for (const part of String(header || '').split(';')) {
    const [name, ...value] = part.trim().split('=');
    if (name === cookieName) {
      return value.join('=');
    }
  }
  return undefined;
}

function headerToken(header) {
  const match = /^token\s+(\S+)$/i.exec(String(header || '').trim());
  return match ? match[1] : undefined;
}

function fromBrowser(headers) {
  // Browsers send Origin on every websocket handshake and Sec-Fetch-* on every request; NNI's clients
  // (Python requests and websockets) send neither.
  return headers.origin !== undefined || headers['sec-fetch-site'] !== undefined
    || headers['sec-fetch-mode'] !== undefined;
}

function hexPort(address) {
  return parseInt(address.split(':')[1], 16);
}

function peerUids(socket) {
  // Owners of the client end of this loopback connection: /proc/net/tcp(6) rows whose local port is our
  // peer's port and whose remote port is ours. null where /proc is missing (not Linux).
  const uids = [];
  let readable = false;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let rows;
    try {
      rows = fs.readFileSync(table, 'latin1').split('\n').slice(1);
      readable = true;
    } catch (error) {
      continue;
    }
    for (const row of rows) {
      const fields = row.trim().split(/\s+/);
      if (fields.length > 7 && hexPort(fields[1]) === socket.remotePort && hexPort(fields[2]) === socket.localPort) {
        uids.push(Number(fields[7]));
      }
    }
  }
  return readable ? uids : null;
}

function isLoopback(address) {
  return /^(::ffff:)?127\./.test(address || '') || address === '::1';
}

function sameUser(socket) {
  if (typeof process.getuid !== 'function' || !isLoopback(socket.remoteAddress)) {
    return true; // a remote worker: it has no token, and another machine's users are not ours to tell apart
  }
  const uids = peerUids(socket);
  return uids === null || (uids.length > 0 && uids.every(uid => uid === process.getuid()));
}

function guarded(request) {
  return request.socket.localPort === managerPort;
}

function url(request) {
  try {
    return new URL(request.url, 'http://localhost');
  } catch (error) {
    return null;
  }
}

// The answer for one request: null to let NNI handle it, or [status, headers, body].
function verdict(request, upgrade) {
  if (!hostAllowed(request.headers.host)) {
    return [403, {}, REFUSED_HOST];
  }
  const parsed = url(request);
  if (parsed === null) {
    return [400, {}, 'Bad request URL.\n'];
  }
  const internal = upgrade
    ? INTERNAL_UPGRADES.some(pattern => pattern.test(parsed.pathname))
    : (request.method === 'GET' || request.method === 'PUT')
      && INTERNAL_REQUESTS.some(pattern => pattern.test(parsed.pathname));
  if (internal) {
    return fromBrowser(request.headers) || !sameUser(request.socket) ? [403, {}, REFUSED_INTERNAL] : null;
  }
  if (!token) {
    return null;
  }
  const queryToken = parsed.searchParams.get('token');
  if (queryToken !== null) {
    if (!sameToken(queryToken)) {
      return [403, {}, REFUSED_TOKEN];
    }
    const page = !upgrade && (request.method === 'GET' || request.method === 'HEAD')
      && !parsed.pathname.startsWith(`${prefix}/api/`);
    if (!page) {
      return null; // a script's call: answered as it is, no cookie
    }
    // Jupyter's way: the token moves into a cookie and out of the address bar (and the browser's history).
    parsed.searchParams.delete('token');
    const cookie = `${cookieName}=${token}; HttpOnly; SameSite=Strict; Path=${prefix || '/'}`;
    return [302, { Location: parsed.pathname + parsed.search, 'Set-Cookie': cookie }, 'Found.\n'];
  }
  const given = headerToken(request.headers.authorization) ?? cookieToken(request.headers.cookie);
  return given !== undefined && sameToken(given) ? null : [403, {}, REFUSED_TOKEN];
}

function answer(response, [status, headers, body]) {
  response.writeHead(status, Object.assign({
    'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store',
  }, headers));
  response.end(body);
}

function answerUpgrade(socket, [status, , body]) {
  // Node has already taken its own listeners off an upgraded socket: without this, a client's reset would be
  // an uncaught 'error' and end the manager.
  socket.on('error', () => socket.destroy());
  socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n`
    + `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

// 'checkContinue' and 'checkExpectation' stand in for 'request' when a client sends `Expect:`.
const REQUEST_EVENTS = new Set(['request', 'checkContinue', 'checkExpectation']);
const originalEmit = http.Server.prototype.emit;

http.Server.prototype.emit = function emitGuarded(event, ...args) {
  if (REQUEST_EVENTS.has(event) && guarded(args[0])) {
    const refusal = verdict(args[0], false);
    if (refusal !== null) {
      answer(args[1], refusal);
      return true;
    }
    const parsed = url(args[0]);
    if (event === 'request' && parsed !== null && answerAsset(args[0], args[1], parsed.pathname, prefix)) {
      return true;
    }
  } else if (event === 'upgrade' && guarded(args[0])) {
    const refusal = verdict(args[0], true);
    if (refusal !== null) {
      answerUpgrade(args[1], refusal);
      return true;
    }
  }
  return originalEmit.call(this, event, ...args);
};
