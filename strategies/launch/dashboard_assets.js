// The dashboard without a CDN, for access_guard.js (which calls answerAsset only for requests it let through).
// NNI 3.0's bundle (static/static/js/964.*.js, and its source map) loads Fluent UI's icon fonts from
// https://res.cdn.office.net/files/fabric-cdn-prod_.../assets/icons/ and Segoe UI from https://res-1.cdn.office.net/
// files/fabric-cdn-prod_.../assets/fonts/: on a machine without internet every icon is an empty box. Here a static
// file of NNI's that names that CDN is answered with its URLs rewritten (read once, kept in memory; every other
// file is NNI's own answer, untouched):
//   - the icons' base becomes /resnas-assets on the manager's own port, and /resnas-assets/assets/icons/
//     fabric-icons-*.woff is answered from dashboard_fonts/ beside this file: the files of the npm package
//     @fluentui/font-icons-mdl2 that the bundle names (fetched by `make install`, not committed: the fonts are
//     under the Microsoft Fabric Assets License, not MIT);
//   - the web fonts' base (the one ending in /assets) becomes '': Segoe UI is in none of Fluent's npm packages, and
//     with an empty base @fluentui/theme registers no @font-face at all, so the page asks no one and uses the next
//     font of Fluent's stack (the system's sans-serif).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const CDN_BASE = /https:\/\/res(-\d+)?\.cdn\.office\.net\/files\/fabric-cdn-prod_[0-9.]+/g;
const WEB_FONTS_BASE = new RegExp(String.raw`${CDN_BASE.source}\/assets(?![\w/])`, 'g'); // not .../assets/icons/
const ASSETS = '/resnas-assets';
const FONTS = path.join(__dirname, 'dashboard_fonts');
const ICON_FONT = /^\/assets\/icons\/(fabric-icons(-\d+)?-[0-9a-f]{8}\.woff)$/;
// Plain names only, checked after decoding: no '..' segment, nothing outside NNI's static folder.
const STATIC_NAME = /^(\/[A-Za-z0-9_-][A-Za-z0-9._-]*)+\.(js|css|html|json|map)$/;
const CONTENT_TYPES = {
  js: 'application/javascript; charset=utf-8', css: 'text/css; charset=utf-8', html: 'text/html; charset=utf-8',
  json: 'application/json; charset=utf-8', map: 'application/json; charset=utf-8',
};
const NO_FONTS = 'The dashboard\'s icon fonts are not installed: run `make install` (it fetches the npm package '
  + '@fluentui/font-icons-mdl2 into strategies/launch/dashboard_fonts).\n';
const NOT_HERE = 'Only the dashboard\'s icon fonts are served here.\n';

// NNI's web server serves path.resolve('static') (rest_server/index.js), from its own working directory.
const staticRoot = path.resolve('static');
// static name -> { body, etag } with local URLs, or null where NNI's file is served as it is
const rewritten = new Map();

function rewrittenFile(name, prefix) {
  if (!rewritten.has(name)) {
    let text;
    try {
      text = fs.readFileSync(path.join(staticRoot, name), 'utf8');
    } catch (error) {
      return null; // not a file of NNI's: NNI answers it (its index.html fallback or a 404)
    }
    let file = null;
    if (text.search(CDN_BASE) >= 0) {
      const body = Buffer.from(text.replace(WEB_FONTS_BASE, '').replace(CDN_BASE, prefix + ASSETS));
      file = { body, etag: `"${crypto.createHash('sha256').update(body).digest('base64url')}"` };
    }
    rewritten.set(name, file);
  }
  return rewritten.get(name);
}

function send(request, response, status, type, body, headers) {
  response.writeHead(status, Object.assign({ 'Content-Type': type, 'Content-Length': body.length }, headers));
  response.end(request.method === 'HEAD' ? undefined : body);
}

// true when the request was answered here; false: NNI's own handling goes on.
function answerAsset(request, response, pathname, prefix) {
  if ((request.method !== 'GET' && request.method !== 'HEAD') || !pathname.startsWith(`${prefix}/`)) {
    return false;
  }
  let name;
  try {
    name = decodeURIComponent(pathname.slice(prefix.length)); // as NNI's express.static reads it
  } catch (error) {
    return false;
  }
  if (name === ASSETS || name.startsWith(`${ASSETS}/`)) {
    const icon = ICON_FONT.exec(name.slice(ASSETS.length));
    if (icon === null) {
      send(request, response, 404, 'text/plain; charset=utf-8', Buffer.from(NOT_HERE), { 'Cache-Control': 'no-store' });
      return true;
    }
    let font;
    try {
      font = fs.readFileSync(path.join(FONTS, icon[1]));
    } catch (error) {
      send(request, response, 404, 'text/plain; charset=utf-8', Buffer.from(NO_FONTS), { 'Cache-Control': 'no-store' });
      return true;
    }
    // The file name carries the font's hash: it never changes under that name.
    send(request, response, 200, 'font/woff', font, { 'Cache-Control': 'private, max-age=31536000, immutable' });
    return true;
  }
  const extension = STATIC_NAME.exec(name);
  const file = extension === null ? null : rewrittenFile(name, prefix);
  if (file === null) {
    return false;
  }
  // Asked again on every load (as NNI's own files are), answered 304 while the browser's copy is this one.
  const headers = { 'Cache-Control': 'no-cache', ETag: file.etag };
  if (request.headers['if-none-match'] === file.etag) {
    response.writeHead(304, headers);
    response.end();
  } else {
    send(request, response, 200, CONTENT_TYPES[extension[2]], file.body, headers);
  }
  return true;
}

module.exports = { answerAsset };
