"""Only the owner reaches NNI's dashboard and REST API: a Host check (DNS rebinding) and a Jupyter-style token
(strategies/launch/access_guard.js, access_token.py), with NNI's internal channels left to its tuner and trials.

The guard is tested on a stub Node server (fast, every rule) and once on the real manager (the NNI paths).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import nni_node
import pytest

from conftest import worker_port
from strategies.cli.main import build_parser
from strategies.launch import create_experiment, listening_hosts, nnictl, resume_experiment, wait_for_experiment
from strategies.launch.access_token import TOKEN_ENV, load_token, resumed_token, save_token, token_file
from strategies.launch.rest import experiment_status, trial_jobs
from test_launcher import fixture_experiment

REPO = Path(__file__).resolve().parents[1]
NODE = Path(nni_node.__path__[0]) / "node"  # the Node binary NNI's manager runs on
TOKEN = "t0ken-for-the-stub_server"


def fetch(port: int, path: str, method: str = "GET", host: str | None = "127.0.0.1", **headers: str):
    """(status, headers, body) of one request, with the Host header as given (None: no Host at all)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            connection.putheader("Host", host.replace("PORT", str(port)))
        for name, value in headers.items():
            connection.putheader(name.replace("_", "-"), value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def upgrade_status(port: int, path: str, **headers: str) -> int:
    """The status line's code for a websocket handshake on `path`."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return int(connection.recv(64).split()[1])


# --- the guard on a stub server: every rule, no manager ------------------------------------------------------

STUB = """
const http = require('http');
const port = Number(process.argv[process.argv.indexOf('--port') + 1]);
const answer = (req, res) => res.end(`handled ${req.method} ${req.url} token-in-env=${process.env.RESNAS_TOKEN}`);
const server = http.createServer(answer);
server.on('upgrade', (req, socket) => socket.on('error', () => {}).end('HTTP/1.1 418 Teapot\\r\\nContent-Length: 0\\r\\n\\r\\n'));
server.listen(port, '127.0.0.1', () => {
  http.createServer(answer).listen(port + 1, '127.0.0.1', () => console.log('ready'));  // not NNI's port
});
"""


@pytest.fixture
def stub(tmp_path):
    """stub(token): a Node server under the guard, as the manager is (--port P --experiment-id ID)."""
    started = []

    def start(token: str | None, bind_host: str = "127.0.0.1") -> int:
        script = tmp_path / "stub.js"
        script.write_text(STUB)
        port = nnictl.free_port(worker_port(18650 + 2 * len(started)))
        env = nnictl.manager_environment(bind_host, token)
        process = subprocess.Popen([str(NODE), str(script), "--port", str(port), "--experiment-id", "stub"],
                                   env=env, stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "ready"
        return port

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_the_host_must_name_this_machine_whatever_the_token(stub):
    port = stub(TOKEN)
    auth = {"Authorization": f"token {TOKEN}"}
    for host in ("127.0.0.1:PORT", "localhost:PORT", "[::1]:PORT", "127.0.0.1", "LOCALHOST:9999"):
        assert fetch(port, "/api/v1/nni/check-status", host=host, **auth)[0] == 200, host
    for host in ("evil.example:PORT", "127.0.0.1.nip.io:PORT", "localhost.evil.example", "10.0.0.1:PORT", None):
        status, headers, body = fetch(port, "/api/v1/nni/check-status", host=host, **auth)
        assert status == 403 and headers["Content-Type"].startswith("text/plain"), host
        assert "resnas create" in body and body.count(". ") == 0 and body.strip().endswith(".")


def test_the_token_is_asked_for_and_taken_from_header_query_or_cookie(stub):
    port = stub(TOKEN)
    status, _, body = fetch(port, "/")
    assert status == 403 and "open the URL that `resnas create` printed" in body and len(body.splitlines()) == 1
    assert fetch(port, "/", Authorization="token wrong")[0] == 403
    assert fetch(port, "/?token=wrong")[0] == 403
    assert fetch(port, "/api/v1/nni/experiment/import-data", method="POST")[0] == 403
    assert fetch(port, "/logs/x", Cookie=f"resnas-token-{port + 2}={TOKEN}")[0] == 403  # another port's cookie
    status, _, body = fetch(port, "/api/v1/nni/trial-jobs", Authorization=f"token {TOKEN}")
    assert status == 200 and body.startswith("handled GET /api/v1/nni/trial-jobs")
    # Jupyter's way: the token becomes an HttpOnly, SameSite=Strict cookie and leaves the address bar.
    status, headers, _ = fetch(port, f"/oview?a=1&token={TOKEN}")
    assert status == 302 and headers["Location"] == "/oview?a=1"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"resnas-token-{port}={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert fetch(port, "/oview?a=1", Cookie=f"other=1; {cookie.split(';')[0]}")[0] == 200
    # A script's REST call with ?token= is answered as it is.
    assert fetch(port, f"/api/v1/nni/check-status?token={TOKEN}")[0] == 200
    # The processes the manager starts (tuner, trials) do not inherit the token.
    assert fetch(port, "/", Authorization=f"token {TOKEN}")[2].endswith("token-in-env=undefined")
    # Servers on other ports of the process are not NNI's and are left alone.
    assert fetch(port + 1, "/", host="evil.example")[0] == 200


def test_internal_channels_need_no_token_but_refuse_browsers(stub):
    port = stub(TOKEN)
    assert fetch(port, "/env/local-env/Ab1_c")[0] == 200  # a trial's command channel (GET and PUT)
    assert fetch(port, "/env/local-env/Ab1_c", method="PUT", Content_Length="0")[0] == 200
    assert fetch(port, "/env/local-env/Ab1_c", Origin="http://evil.example")[0] == 403
    assert fetch(port, "/env/local-env/Ab1_c", Sec_Fetch_Site="cross-site")[0] == 403
    assert fetch(port, "/env/local-env/Ab1_c", host="evil.example")[0] == 403
    assert fetch(port, "/env/local-env/Ab1_c", method="POST")[0] == 403  # not a channel method: token needed
    assert fetch(port, "/env/../index.html")[0] == 403
    assert upgrade_status(port, "/tuner") == 418  # the tuner's websocket reached the server's handler
    assert upgrade_status(port, "/platform/remote-1/worker") == 418
    assert upgrade_status(port, "/tuner", Origin="http://evil.example") == 403  # a web page's websocket
    assert upgrade_status(port, "/api/v1/nni/experiment") == 403
    assert upgrade_status(port, f"/api/v1/nni/experiment?token={TOKEN}") == 418


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_use_the_internal_channels(stub):
    port = stub(TOKEN)

    def first_line_as_nobody(path: str, extra: str = "") -> str:
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # the child becomes nobody and asks; nothing of pytest's runs here
            try:
                os.setuid(65534)
                with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
                    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
                    os.write(write, connection.recv(64))
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(child, 0)
        with os.fdopen(read, "rb") as answer:
            return answer.read().decode().splitlines()[0]

    assert first_line_as_nobody("/env/local-env/Ab1_c").startswith("HTTP/1.1 403")
    assert first_line_as_nobody("/", f"Authorization: token {TOKEN}\r\n").startswith("HTTP/1.1 200")
    assert fetch(port, "/env/local-env/Ab1_c")[0] == 200  # the owner still can


def test_without_a_token_only_the_host_is_checked(stub, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "left-in-the-shell")  # must not become the manager's token
    port = stub(None)
    assert fetch(port, "/api/v1/nni/check-status")[0] == 200
    assert fetch(port, "/api/v1/nni/check-status", host="evil.example:PORT")[0] == 403


def test_bound_to_every_interface_any_ip_literal_is_a_host_but_no_dns_name(stub):
    port = stub(TOKEN, bind_host="0.0.0.0")
    auth = {"Authorization": f"token {TOKEN}"}
    assert fetch(port, "/", host="192.168.1.7:PORT", **auth)[0] == 200
    assert fetch(port, "/", host="evil.example:PORT", **auth)[0] == 403
    assert fetch(port, "/", host="192.168.1.7:PORT")[0] == 403  # and the token is still needed


# --- the token on the Python side ----------------------------------------------------------------------------


def test_the_token_file_is_the_owners_only_and_is_reused_on_resume(tmp_path):
    folder = tmp_path / "abc123"
    assert load_token(folder) is None
    fresh = resumed_token(folder)
    assert len(fresh) >= 43 and fresh != resumed_token(folder)  # 32 random bytes, new each time until stored
    path = save_token(folder, fresh)
    assert path == token_file(folder) and path.read_text().strip() == fresh
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resumed_token(folder) == fresh == load_token(folder)
    assert [p.name for p in folder.iterdir()] == [path.name]  # no temporary file left beside it


def test_create_and_resume_store_and_reuse_the_token(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(nnictl, "_start_manager", lambda arguments, bind_host, token=None: started.append(token))
    monkeypatch.setattr(nnictl, "_await_manager", lambda port, token=None: "abc123")
    handle = create_experiment(fixture_experiment(tmp_path), port=worker_port(18700))
    assert handle.token == started[0] and load_token(handle.folder) == handle.token
    assert stat.S_IMODE(token_file(handle.folder).stat().st_mode) == 0o600
    assert handle.url == f"http://127.0.0.1:{handle.port}"  # safe to log
    assert handle.dashboard_url == f"{handle.url}/?token={handle.token}"
    again = resume_experiment("abc123", tmp_path / "nni-experiments", port=worker_port(18700))
    assert again.token == started[1] == handle.token  # the browser's cookie keeps working
    bare = resume_experiment("abc123", tmp_path / "nni-experiments", port=worker_port(18700), use_token=False)
    assert bare.token is None and started[2] is None and bare.dashboard_url == bare.url


def test_the_manager_environment_always_has_the_guard(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "stale")
    for bind_host in ("127.0.0.1", "0.0.0.0"):
        env = nnictl.manager_environment(bind_host, "secret")
        assert str(nnictl.ACCESS_GUARD) in env["NODE_OPTIONS"] and env[TOKEN_ENV] == "secret"
        assert env["RESNAS_BIND_HOST"] == bind_host
        assert TOKEN_ENV not in nnictl.manager_environment(bind_host, None)
    assert str(nnictl.PRELOAD) not in nnictl.manager_environment("0.0.0.0", None)["NODE_OPTIONS"]


# --- the real manager: NNI's own paths ----------------------------------------------------------------------


def resnas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "strategies.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


@pytest.mark.e2e
def test_the_real_manager_answers_only_the_token_holder_and_its_own_channels(tmp_path, capsys):
    handle = create_experiment(fixture_experiment(tmp_path, maxTrialNumber=1), port=worker_port(8766))
    port, token = handle.port, handle.token
    try:
        # The tuner's websocket and the trial's command channel need no token: the trial ran and reported.
        # (The REST server keeps answering after DONE, until stopped.)
        wait_for_experiment(handle, poll_seconds=0.5, timeout=60)  # may return NO_MORE_TRIAL a moment before DONE
        deadline = time.monotonic() + 10
        while experiment_status(handle) != "DONE" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert experiment_status(handle) == "DONE"
        assert [trial["status"] for trial in trial_jobs(handle)] == ["SUCCEEDED"]
        assert load_token(handle.folder) == token
        assert stat.S_IMODE(token_file(handle.folder).stat().st_mode) == 0o600

        assert fetch(port, "/api/v1/nni/check-status")[0] == 403
        assert fetch(port, "/api/v1/nni/check-status", host="evil.example:PORT", Authorization=f"token {token}")[0] == 403
        status, _, body = fetch(port, "/api/v1/nni/check-status", Authorization=f"token {token}")
        assert status == 200 and json.loads(body)["status"] == "DONE"
        refused = fetch(port, "/api/v1/nni/experiment/import-data", method="POST", Content_Type="application/json",
                        Content_Length="2")  # (no body is sent: the guard answers before NNI reads one)
        assert refused[0] == 403
        assert fetch(port, "/logs/")[0] == 403 and fetch(port, "/static/js/")[0] == 403
        assert upgrade_status(port, "/tuner", Origin="http://evil.example") == 403

        # The browser's way: ?token= once, then only the cookie, for the page and the page's own REST calls.
        status, headers, _ = fetch(port, handle.dashboard_url.removeprefix(handle.url))
        assert status == 302 and headers["Location"] == "/"
        cookie = headers["Set-Cookie"].split(";")[0]
        status, _, page = fetch(port, "/", Cookie=cookie)
        assert status == 200 and "<title>Neural Network Intelligence</title>" in page
        status, _, body = fetch(port, "/api/v1/nni/check-status", Cookie=cookie)
        assert status == 200 and json.loads(body)["status"] == "DONE"

        # `resnas status` in this process: a `python -m strategies.cli` start costs ~7 s here (main() imports
        # timm for its error types), and the budget pays for one, the `resnas stop` below.
        args = build_parser().parse_args(["status", handle.id])
        assert args.run(args) == 0
        printed = capsys.readouterr().out
        line = json.loads(printed.strip().splitlines()[-1])
        assert line["status"] == "DONE" and line["trials"] == {"SUCCEEDED": 1} and token not in printed
    finally:
        stopped = resnas("stop", handle.id)
    assert stopped.returncode == 0 and f"experiment {handle.id} stopped" in stopped.stdout, stopped.stderr
    deadline = time.monotonic() + 10
    while listening_hosts(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert listening_hosts(port) == set()
