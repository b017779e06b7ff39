// Preloaded into NNI's Node manager (NODE_OPTIONS=--require ...) by `resnas create`.
// NNI 3.0 serves its dashboard and REST API on every interface with no login, and that API deserialises
// payloads that can run code. This forces every TCP server of the process onto RESNAS_BIND_HOST
// (127.0.0.1 by default); Unix sockets and pipes are left alone.
'use strict';
const net = require('net');

const host = process.env.RESNAS_BIND_HOST || '127.0.0.1';
const originalListen = net.Server.prototype.listen;

function isPort(value) {
  return typeof value === 'number' || (typeof value === 'string' && /^\d+$/.test(value));
}

net.Server.prototype.listen = function listenOnBindHost(...args) {
  if (args.length === 0 || args[0] === undefined || args[0] === null) {
    args = [0, host];
  } else if (isPort(args[0])) {
    if (typeof args[1] === 'string') {
      args[1] = host;
    } else {
      args.splice(1, 0, host);
    }
  } else if (typeof args[0] === 'object' && args[0].path === undefined && !(args[0] instanceof net.Server)
             && args[0].fd === undefined && args[0]._handle === undefined) {
    args[0] = Object.assign({}, args[0], { host });
  }
  return originalListen.apply(this, args);
};
