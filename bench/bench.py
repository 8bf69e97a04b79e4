#!/usr/bin/env python3
"""The benchmark behind scripts/bench: mtlsgate side by side with the alternatives.

scripts/bench installs what is missing, builds (scripts/setup), makes the certificates
(bench/pki.sh) and then runs this file, which starts everything on loopback under
.run/bench/run/, measures, prints one table and, last, one machine-readable RESULT line.

Standard library only. It never fails on a number: a figure it cannot measure is NA, and it
exits non-zero only when the stack itself cannot be started.
"""

import argparse
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
import zlib

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BENCH = os.path.join(ROOT, "bench")
STATE = os.path.join(ROOT, ".run", "bench")
PKI = os.path.join(STATE, "pki")
RUN = os.path.join(STATE, "run")
VENV = os.path.join(ROOT, ".venv")
ENVOY = os.path.join(VENV, "bin", "envoy")
BAO = os.path.join(VENV, "bin", "bao")
# A benchmark measures what an operator runs: the control plane built for release
# (scripts/bench builds it).
MTLSGATE = os.environ.get("MTLSGATE_BENCH_BIN") or os.path.join(ROOT, "target", "release", "mtlsgate")
WASM = os.path.join(ROOT, "target", "wasm32-wasip1", "wasm", "mtlsgate_filter.wasm")

ACCOUNT = "123"
P12_PASSWORD = "changeit"
NODE_ID = "mtlsgate-bench"
# Envoy's upstream connection lifetime: mtlsgate's default (--upstream-max-connection-seconds),
# used by the baseline Envoy too.
MAX_CONN_SECONDS = 60


def log(msg):
    sys.stderr.write("\033[1m==> %s\033[0m\n" % msg)
    sys.stderr.flush()


def note(msg):
    sys.stderr.write("    %s\n" % msg)
    sys.stderr.flush()


class Unavailable(Exception):
    """Something a phase needs could not be had: its figures become NA."""


# --------------------------------------------------------------------------------------------
# Processes


class Procs:
    """Every process the benchmark starts, stopped (by pid) on exit."""

    def __init__(self):
        self.procs = {}

    def start(self, name, argv, env=None, cpus=None):
        if cpus:
            argv = ["taskset", "-c", cpus] + argv
        logf = open(os.path.join(RUN, name + ".log"), "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=full_env, cwd=ROOT)
        self.procs[name] = p
        return p

    def pid(self, name):
        return self.procs[name].pid

    def alive(self, name):
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def stop(self, name, sig=signal.SIGTERM):
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        try:
            p.send_signal(sig)
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        except ProcessLookupError:
            pass

    def stop_all(self):
        for name in reversed(list(self.procs)):
            self.stop(name)


PROCS = Procs()


def wait_http(host, port, path, seconds, proc=None, ok=lambda s: 200 <= s < 300):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc and not PROCS.alive(proc):
            raise Unavailable("%s exited; see %s" % (proc, os.path.join(RUN, proc + ".log")))
        try:
            status, _, _ = request("GET", host, port, path, timeout=2)
            if ok(status):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise Unavailable("http://%s:%d%s did not answer within %ds" % (host, port, path, seconds))


def port_free(port):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def cpu_seconds(pid):
    """utime + stime of a process and its (nginx worker) children, in seconds."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    pids = [pid]
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tck


def rss_mib(pid):
    """Resident set size (VmRSS) of a process, MiB; children included (nginx)."""
    total = 0
    pids = [pid]
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024.0


# --------------------------------------------------------------------------------------------
# HTTP


def request(method, host, port, path, headers=None, body=None, timeout=30, conn=None):
    """One request; answers (status, lower-cased headers, body). With `conn`, reuses it."""
    own = conn is None
    c = conn or http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        if own:
            c.close()


class Client:
    """A keep-alive client that reconnects when the server closes."""

    def __init__(self, host, port, timeout=30):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None

    def __call__(self, method, path, headers=None, body=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                return request(method, self.host, self.port, path, headers, body, conn=self.conn)
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None


def multipart(fields):
    """fields: [(name, filename or None, bytes)] -> (content type, body)."""
    boundary = "bench" + uuid.uuid4().hex
    out = []
    for name, filename, data in fields:
        disp = 'form-data; name="%s"' % name
        if filename:
            disp += '; filename="%s"' % filename
        out.append(b"--" + boundary.encode() + b"\r\n")
        out.append(("Content-Disposition: %s\r\n" % disp).encode())
        if filename:
            out.append(b"Content-Type: application/x-pkcs12\r\n")
        out.append(b"\r\n" + data + b"\r\n")
    out.append(b"--" + boundary.encode() + b"--\r\n")
    return "multipart/form-data; boundary=" + boundary, b"".join(out)


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def serial_of(name):
    return read(os.path.join(PKI, name + ".serial")).strip().upper()


def norm_serial(s):
    return (s or "").strip().upper().lstrip("0")


# --------------------------------------------------------------------------------------------
# The mtlsgate stack


class Stack:
    def __init__(self, ports, server_cpus, concurrency):
        self.p = ports
        self.cpus = server_cpus
        self.concurrency = concurrency
        self.dev_token = "bench-" + secrets.token_hex(16)
        # The links to the gateway are mutual TLS: a link PKI per run (mtlsgate pki).
        self.pki = os.path.join(RUN, "pki")
        self.bao_token = secrets.token_hex(16)
        self.password = secrets.token_hex(12)
        self.bearer = None
        self.api = Client("127.0.0.1", ports["api"], timeout=120)
        self.server_ca_pem = read(os.path.join(PKI, "server-ca.pem"))

    def start(self):
        p = self.p
        db = os.path.join(RUN, "mtlsgate.db")
        for f in (db, db + "-wal", db + "-shm"):
            if os.path.exists(f):
                os.remove(f)
        log("starting OpenBao (dev) on 127.0.0.1:%d" % p["bao"])
        PROCS.start("openbao", [BAO, "server", "-dev", "-dev-root-token-id=" + self.bao_token,
                                "-dev-listen-address=127.0.0.1:%d" % p["bao"]],
                    env={"HOME": RUN}, cpus=self.cpus)
        wait_http("127.0.0.1", p["bao"], "/v1/sys/health", 30, "openbao")

        shutil.rmtree(self.pki, ignore_errors=True)
        subprocess.run([MTLSGATE, "pki", "init", "--dir", self.pki, "--gateway", NODE_ID],
                       check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        subprocess.run([MTLSGATE, "user", "add", "--database", db, "--account", ACCOUNT,
                        "--username", "bench", "--admin"], input=(self.password + "\n").encode(),
                       check=True, stdout=subprocess.DEVNULL, cwd=ROOT)

        log("starting the control plane on 127.0.0.1:%d (xDS %d)" % (p["api"], p["xds"]))
        PROCS.start("control-plane", [
            MTLSGATE, "serve", "--http-addr", "127.0.0.1:%d" % p["api"],
            "--xds-addr", "127.0.0.1:%d" % p["xds"], "--database", db,
            "--feed-addr", "127.0.0.1:%d" % p["feed"],
            "--link-cert-file", os.path.join(self.pki, "control-plane.pem"),
            "--link-key-file", os.path.join(self.pki, "control-plane.key"),
            "--link-ca-file", os.path.join(self.pki, "ca.pem"),
            "--vault-addr", "http://127.0.0.1:%d" % p["bao"],
            "--public-gateway", "127.0.0.1:%d" % p["gateway"],
            "--public-api", "127.0.0.1:%d" % p["api"],
            "--upstream-max-connection-seconds", str(MAX_CONN_SECONDS),
            # The benchmark's partners listen on loopback; Envoy's admin port stays denied.
            "--egress-allow", "127.0.0.1,::1", "--egress-deny", "127.0.0.1:%d" % p["admin"],
        ], env={"VAULT_TOKEN": self.bao_token, "MTLSGATE_DEV_ADMIN_TOKEN": self.dev_token},
            cpus=self.cpus)
        wait_http("127.0.0.1", p["api"], "/healthz", 60, "control-plane")

        log("starting Envoy + filter on 127.0.0.1:%d (admin %d, --concurrency %d)"
            % (p["gateway"], p["admin"], self.concurrency))
        bootstrap = os.path.join(RUN, "envoy.yaml")
        # The bootstrap is rendered exactly as scripts/up does, with scripts/lib.sh.
        pairs = ["NODE_ID=" + NODE_ID, "WASM=" + WASM] + self.link_pairs(NODE_ID) + [
                 # A throttle far above what the benchmark sends (the maximum the filter takes).
                 "THROTTLE_RATE=1000000", "THROTTLE_BURST=1000000", "XFF_TRUSTED_HOPS=0",
                 "FORWARD_TIMEOUT_SECONDS=60", "FORWARD_MAX_BODY_BYTES=8388608",
                 "LISTEN_ADDRESS=127.0.0.1", "LISTEN_PORT=%d" % p["gateway"],
                 "ADMIN_ADDRESS=127.0.0.1", "ADMIN_PORT=%d" % p["admin"],
                 "CONTROL_ADDRESS=127.0.0.1", "XDS_PORT=%d" % p["xds"], "API_PORT=%d" % p["api"],
                 "ACCESS_LOG=" + os.path.join(RUN, "audit.log")]
        subprocess.run(["bash", "-c", 'source "$1"; shift; render_bootstrap "$@"', "_",
                        os.path.join(ROOT, "scripts", "lib.sh"), bootstrap] + pairs, check=True)
        PROCS.start("envoy", [ENVOY, "-c", bootstrap, "--disable-hot-restart",
                              "--concurrency", str(self.concurrency), "--log-level", "warn",
                              "--file-flush-interval-msec", "1000"], cpus=self.cpus)
        wait_http("127.0.0.1", p["admin"], "/ready", 60, "envoy")

        # Log in as a client does: the Bearer token of the login method.
        st, _, body = self.api("POST", "/api/account/%s/login?v=1.3" % ACCOUNT,
                               {"Content-Type": "application/json"},
                               json.dumps({"username": "bench", "password": self.password}))
        if st != 200:
            raise Unavailable("login answered %d: %s" % (st, body[:200]))
        self.bearer = json.loads(body)["bearer"]
        # The gateway knows the user once its snapshot has it.
        gw = Client("127.0.0.1", p["gateway"])
        deadline = time.monotonic() + 30
        while True:
            st, _, _ = gw("GET", "/mtls/account/" + ACCOUNT,
                          {"Authorization": "Bearer " + self.bearer})
            if st not in (401, 503):
                break
            if time.monotonic() > deadline:
                raise Unavailable("the gateway never accepted the login token (status %d)" % st)
            time.sleep(0.1)
        gw.close()

    # -- management API ---------------------------------------------------------------------

    def auth(self, extra=None):
        h = {"Authorization": "Bearer " + self.dev_token}
        h.update(extra or {})
        return h

    def upload(self, name, client=None, cert_id=None):
        """Uploads (or with cert_id, replaces) a P12 by file; answers the certificate id."""
        meta = {"name": name.replace("/", "-"), "password": P12_PASSWORD}
        if cert_id is not None:
            meta["id"] = cert_id
        ctype, body = multipart([("file", "cert.p12", read(os.path.join(PKI, name + ".p12"), "rb")),
                                 ("certificate", None, json.dumps(meta).encode())])
        st, _, resp = (client or self.api)(
            "PUT" if cert_id is not None else "POST",
            "/mtls/account/%s/certificates/by-file" % ACCOUNT,
            self.auth({"Content-Type": ctype}), body)
        if cert_id is not None:
            if st // 100 != 2:
                raise Unavailable("certificate update answered %d: %s" % (st, resp[:300]))
            return cert_id
        if st != 201:
            raise Unavailable("certificate upload answered %d: %s" % (st, resp[:300]))
        return json.loads(resp)["successfulySavedCertificates"][0]["id"]

    def mapping(self, cert_id, url, name, service="1"):
        return {"certificationId": str(cert_id), "serviceId": service, "enable": True, "url": url,
                "siteId": ACCOUNT, "name": name, "deleted": False,
                "caCertificates": self.server_ca_pem}

    def map(self, mappings):
        st, _, resp = self.api("POST", "/api/account/%s/configuration/ac-common/mtls?v=3.0" % ACCOUNT,
                               self.auth({"Content-Type": "application/json"}),
                               json.dumps(mappings))
        if st != 201:
            raise Unavailable("mapping POST answered %d: %s" % (st, resp[:300]))

    def forward_headers(self, url):
        return {"Authorization": "Bearer " + self.bearer, "LP-forward-url": url,
                "LP-service-name": "IDP"}

    def wait_forward(self, url, seconds=30, serial=None):
        """Forwards until it succeeds (and, with serial, the target saw that certificate)."""
        gw = Client("127.0.0.1", self.p["gateway"])
        deadline = time.monotonic() + seconds
        try:
            while True:
                st, h, body = gw("GET", "/mtls/account/" + ACCOUNT, self.forward_headers(url))
                if st == 200 and (serial is None
                                  or norm_serial(h.get("x-client-serial")) == norm_serial(serial)):
                    return
                if time.monotonic() > deadline:
                    raise Unavailable("forward to %s never succeeded (last %d %s)"
                                      % (url, st, body[:200]))
                time.sleep(0.02)
        finally:
            gw.close()

    def link_pairs(self, node):
        """The bootstrap values of the links for `node`, its certificate issued if needed."""
        gw = os.path.join(self.pki, "gateways", node)
        if not os.path.exists(os.path.join(gw, "gateway.pem")):
            subprocess.run([MTLSGATE, "pki", "issue-gateway", "--dir", self.pki, "--node-id", node],
                           check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        return ["LINK_DIR=" + gw, "LINK_CA=" + os.path.join(self.pki, "ca.pem"),
                "FEED_PORT=%d" % self.p["feed"]]

    def snapshot_bytes(self):
        """The gateway's snapshot, read from the feed as the gateway does (its certificate)."""
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "ca.pem"))
        gw = os.path.join(self.pki, "gateways", NODE_ID)
        ctx.load_cert_chain(os.path.join(gw, "gateway.pem"), os.path.join(gw, "gateway.key"))
        conn = http.client.HTTPSConnection("127.0.0.1", self.p["feed"], context=ctx, timeout=120)
        try:
            conn.request("GET", "/v1/runtime/snapshot?node=%s&waitSeconds=0" % NODE_ID)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise Unavailable("runtime snapshot answered %d" % resp.status)
        return body

    def envoy_stat(self, name):
        st, _, body = request("GET", "127.0.0.1", self.p["admin"], "/stats?filter=^%s$" % name)
        for line in body.decode().splitlines():
            k, _, v = line.partition(": ")
            if k == name:
                return int(v)
        return None


# --------------------------------------------------------------------------------------------
# wrk


class Wrk:
    def __init__(self, cpu, threads, connections):
        self.cpu, self.threads, self.connections = cpu, threads, connections

    def start(self, url, headers, seconds, timeout_s=5):
        argv = ["wrk", "-t%d" % self.threads, "-c%d" % self.connections, "-d%ds" % seconds,
                "--timeout", "%ds" % timeout_s, "--latency", "-s",
                os.path.join(BENCH, "wrk-report.lua")]
        for k, v in headers.items():
            argv += ["-H", "%s: %s" % (k, v)]
        argv.append(url)
        if self.cpu is not None:
            argv = ["taskset", "-c", str(self.cpu)] + argv
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    @staticmethod
    def result(p):
        out = p.communicate()[0].decode(errors="replace")
        for line in out.splitlines():
            if line.startswith("WRKJSON "):
                r = json.loads(line[len("WRKJSON "):])
                r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0
                r["socket_errors"] = r["connect"] + r["read"] + r["write"] + r["timeout"]
                return r
        raise Unavailable("wrk printed no summary:\n" + out[-2000:])

    def run(self, url, headers, seconds, cpu_pids=()):
        before = [cpu_seconds(p) for p in cpu_pids]
        r = self.result(self.start(url, headers, seconds))
        r["cpu_s"] = [cpu_seconds(p) - b for p, b in zip(cpu_pids, before)]
        return r


# --------------------------------------------------------------------------------------------
# Phases


def fmt(x, nd=1):
    if x is None:
        return "NA"
    if isinstance(x, float):
        return "%.*f" % (nd, x)
    return str(x)


def phase_overhead(cfg, stack, wrk, ports, cpus, concurrency, results):
    """Phase 1: (a) mtlsgate, (b) bare Envoy, (c) nginx; same wrk parameters, one at a time."""
    log("phase 1: request-path overhead (wrk -t%d -c%d, %d s after %d s warm-up, %d round(s))"
        % (wrk.threads, wrk.connections, cfg["duration"], cfg["warmup"], cfg["rounds"]))
    up = ports["upstream"]
    url_a = "https://localhost:%d/bench" % up
    cert = stack.upload("bench/c0000")
    stack.map([stack.mapping(cert, url_a, "bench")])
    stack.wait_forward(url_a, serial=serial_of("bench/c0000"))
    results["bench_cert"] = cert
    # The very same headers for every contender (b and c drop them before the target, as
    # mtlsgate does).
    headers = stack.forward_headers(url_a)

    # (b) the same Envoy, static cluster, certificate from files, no filter.
    conf_b = os.path.join(RUN, "baseline-envoy.yaml")
    render(os.path.join(BENCH, "baseline-envoy.yaml"), conf_b,
           ADMIN_PORT=ports["baseline_admin"], LISTEN_PORT=ports["baseline"], UPSTREAM_PORT=up,
           PKI=PKI, MAX_CONN_SECONDS=MAX_CONN_SECONDS)
    PROCS.start("baseline-envoy", [ENVOY, "-c", conf_b, "--disable-hot-restart",
                                   "--concurrency", str(concurrency), "--log-level", "warn",
                                   "--base-id", "7"], cpus=cpus)
    wait_http("127.0.0.1", ports["baseline_admin"], "/ready", 60, "baseline-envoy")
    # (c) nginx with proxy_ssl_certificate.
    conf_c = os.path.join(RUN, "proxy-nginx.conf")
    render(os.path.join(BENCH, "proxy-nginx.conf"), conf_c, RUN=RUN, PKI=PKI, WORKERS=concurrency,
           PROXY_PORT=ports["nginx"], UPSTREAM_PORT=up)
    PROCS.start("proxy-nginx", ["nginx", "-p", RUN, "-e", os.path.join(RUN, "proxy-nginx.error.log"),
                                "-c", conf_c], cpus=cpus)
    wait_http("127.0.0.1", ports["nginx"], "/bench", 30, "proxy-nginx", ok=lambda s: s > 0)

    contenders = {
        "a": ("http://127.0.0.1:%d/mtls/account/%s" % (ports["gateway"], ACCOUNT), "envoy"),
        "b": ("http://127.0.0.1:%d/bench" % ports["baseline"], "baseline-envoy"),
        "c": ("http://127.0.0.1:%d/bench" % ports["nginx"], "proxy-nginx"),
    }
    want = norm_serial(serial_of("bench/c0000"))
    for key, (url, _) in contenders.items():
        host, port, path = split_url(url)
        st, h, body = request("GET", host, port, path, headers)
        seen = norm_serial(h.get("x-client-serial"))
        note("(%s) GET %s -> %d, target saw client certificate %s" % (key, url, st, seen or "-"))
        if st != 200 or seen != want:
            raise Unavailable("contender %s does not forward with the client certificate "
                              "(status %d, serial %r): %s" % (key, st, seen, body[:200]))

    runs = {k: [] for k in contenders}
    for rnd in range(cfg["rounds"]):
        for key, (url, proc) in contenders.items():
            pids = [PROCS.pid(proc), PROCS.pid("upstream-nginx")]
            wrk.run(url, headers, cfg["warmup"])
            r = wrk.run(url, headers, cfg["duration"], pids)
            r["cpu_us_per_req"] = r["cpu_s"][0] * 1e6 / max(r["requests"], 1)
            r["upstream_cpu_us_per_req"] = r["cpu_s"][1] * 1e6 / max(r["requests"], 1)
            if rnd == 0:
                # Unloaded: one connection, one request at a time: the service time added.
                one = Wrk(wrk.cpu, 1, 1).run(url, headers, cfg["latency_duration"])
                r["c1_p50_us"], r["c1_p99_us"] = one["p50_us"], one["p99_us"]
            runs[key].append(r)
            note("round %d (%s): %.0f req/s, p50 %.2f ms, p99 %.2f ms, errors %d/%d, "
                 "proxy CPU %.1f us/req" % (rnd + 1, key, r["rps"], r["p50_us"] / 1000,
                                            r["p99_us"] / 1000, r["status"], r["socket_errors"],
                                            r["cpu_us_per_req"]))
    summary = {}
    for key, rs in runs.items():
        summary[key] = {
            "rps": statistics.median(r["rps"] for r in rs),
            "p50_ms": statistics.median(r["p50_us"] for r in rs) / 1000,
            "p99_ms": statistics.median(r["p99_us"] for r in rs) / 1000,
            "cpu_us_per_req": statistics.median(r["cpu_us_per_req"] for r in rs),
            "upstream_cpu_us_per_req": statistics.median(r["upstream_cpu_us_per_req"] for r in rs),
            "errors": sum(r["status"] + r["socket_errors"] for r in rs),
            "c1_p50_ms": rs[0]["c1_p50_us"] / 1000,
            "c1_p99_ms": rs[0]["c1_p99_us"] / 1000,
            "rounds": [{k: r[k] for k in ("rps", "p50_us", "p99_us", "status", "socket_errors",
                                           "cpu_us_per_req")} for r in rs],
        }
    results["overhead"] = summary
    if not cfg.get("hold"):
        PROCS.stop("baseline-envoy")
        PROCS.stop("proxy-nginx", signal.SIGQUIT)


def split_url(url):
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    return host, int(port), "/" + path


def render(src, dst, **values):
    text = read(src)
    for k, v in values.items():
        text = text.replace("@@%s@@" % k, str(v))
    if "@@" in text:
        raise Unavailable("unfilled placeholder in " + src)
    with open(dst, "w") as f:
        f.write(text)


def trial_loop(stack, n, action, serial_for=None):
    """Runs `action(i)` (a POST or PUT) n times; after each, forwards until it succeeds
    (with serial_for, until the target saw that certificate). Answers the delays, ms, measured
    from the moment the action's answer was read to the first successful answer."""
    gw = Client("127.0.0.1", stack.p["gateway"])
    delays = []
    try:
        for i in range(n):
            # why: the filter's poller asks again only on its next 100 ms tick after an answer,
            # so a change made right after the previous one waits for that tick; a random pause
            # samples every phase of it instead of always hitting the same one.
            time.sleep(random.uniform(0.0, 0.25))
            url = action(i)
            t0 = time.perf_counter()
            want = norm_serial(serial_for(i)) if serial_for else None
            polls = 0
            while True:
                st, h, _ = gw("GET", "/mtls/account/" + ACCOUNT, stack.forward_headers(url))
                polls += 1
                if st == 200 and (want is None or norm_serial(h.get("x-client-serial")) == want):
                    break
                if time.perf_counter() - t0 > 30:
                    raise Unavailable("trial %d: not served 30 s after the change (last %d)"
                                      % (i, st))
            delays.append((time.perf_counter() - t0) * 1000)
    finally:
        gw.close()
    return delays


def phase_propagation(cfg, stack, ports, results):
    n = cfg["trials"]
    log("phase 2: propagation (%d trials each; polled from this process, no pause between polls)" % n)
    up, upc = ports["upstream"], ports["upstream_close"]
    tag = secrets.token_hex(3)
    bench_cert = results.get("bench_cert") or stack.upload("bench/c0000")
    out = {}

    # (1) a new mapping whose cluster (certificate, host, port, trust) already exists.
    def new_mapping(i):
        url = "https://localhost:%d/prop/%s/%d" % (up, tag, i)
        stack.map([stack.mapping(bench_cert, url, "prop-%s-%d" % (tag, i))])
        return url
    out["mapping_existing_cluster"] = trial_loop(stack, n, new_mapping)
    note("new mapping, existing cluster: median %.0f ms, worst %.0f ms"
         % (statistics.median(out["mapping_existing_cluster"]), max(out["mapping_existing_cluster"])))

    # (2) a new mapping with a certificate not mapped before: a new cluster and secret must be
    # pushed over ADS and acknowledged before the filter may route to it.
    prop_ids = [stack.upload("prop/p%02d" % i) for i in range(n)]

    def new_cluster(i):
        url = "https://localhost:%d/propc/%s/%d" % (up, tag, i)
        stack.map([stack.mapping(prop_ids[i], url, "propc-%s-%d" % (tag, i))])
        return url
    out["mapping_new_cluster"] = trial_loop(stack, n, new_cluster)
    note("new mapping, new cluster + certificate: median %.0f ms, worst %.0f ms"
         % (statistics.median(out["mapping_new_cluster"]), max(out["mapping_new_cluster"])))

    # (3) a certificate update (PUT by-file): until the target sees the new certificate. The
    # target here closes every connection, so each forward shows what Envoy presents *now*.
    upd_url = "https://localhost:%d/upd/%s" % (upc, tag)
    upd_id = stack.upload("upd/u00")
    stack.map([stack.mapping(upd_id, upd_url, "upd-%s" % tag)])
    stack.wait_forward(upd_url, serial=serial_of("upd/u00"))

    def update(i):
        stack.upload("upd/u%02d" % (i + 1), cert_id=upd_id)
        return upd_url
    out["certificate_update"] = trial_loop(stack, n, update,
                                           serial_for=lambda i: serial_of("upd/u%02d" % (i + 1)))
    note("certificate update: median %.0f ms, worst %.0f ms"
         % (statistics.median(out["certificate_update"]), max(out["certificate_update"])))
    results["propagation"] = out


def phase_rotation(cfg, stack, wrk, ports, results):
    """Phase 3: wrk keeps a mapping busy while its certificate is replaced n times. Alongside,
    a probe in this process forwards one request after another to a second mapping with the
    same certificate whose target closes every connection: every probe request is a new
    upstream connection, so the target's log shows when new connections switch."""
    n = cfg["rotations"]
    gap = cfg["rotation_gap"]
    lead = cfg["rotation_lead"]
    seconds = int(lead * 2 + n * gap + 1)
    log("phase 3: %d rotations, %.1f s apart, under wrk load (%d s)" % (n, gap, seconds))
    tag = secrets.token_hex(3)
    url = "https://localhost:%d/rotation/%s" % (ports["upstream"], tag)
    probe_url = "https://localhost:%d/rotation-probe/%s" % (ports["upstream_close"], tag)
    rot_id = stack.upload("rot/r00")
    stack.map([stack.mapping(rot_id, url, "rotation-%s" % tag),
               stack.mapping(rot_id, probe_url, "rotation-probe-%s" % tag)])
    stack.wait_forward(url, serial=serial_of("rot/r00"))
    stack.wait_forward(probe_url, serial=serial_of("rot/r00"))
    order = {norm_serial(serial_of("rot/r%02d" % i)): i for i in range(n + 1)}
    logf = os.path.join(RUN, "upstream-conns.log")
    time.sleep(0.3)  # the upstream flushes its log every 100 ms
    offset = os.path.getsize(logf) if os.path.exists(logf) else 0
    headers = stack.forward_headers(url)
    headers["X-Bench-Log"] = "1"
    p = wrk.start("http://127.0.0.1:%d/mtls/account/%s" % (ports["gateway"], ACCOUNT), headers,
                  seconds)
    probe = {"requests": 0, "failures": 0, "stop": False}

    def prober():
        gw = Client("127.0.0.1", ports["gateway"], timeout=10)
        h = stack.forward_headers(probe_url)
        while not probe["stop"]:
            try:
                st, _, _ = gw("GET", "/mtls/account/" + ACCOUNT, h)
            except OSError:
                st = 0
            probe["requests"] += 1
            if st != 200:
                probe["failures"] += 1
            time.sleep(0.005)
        gw.close()
    th = threading.Thread(target=prober)
    th.start()
    time.sleep(lead)
    marks = []  # (time the PUT answered, index of the certificate now expected)
    put_ms = []
    try:
        for i in range(1, n + 1):
            t = time.time()
            stack.upload("rot/r%02d" % i, cert_id=rot_id)
            marks.append((time.time(), i))
            put_ms.append((marks[-1][0] - t) * 1000)
            time.sleep(max(0.0, gap - (time.time() - t)))
    finally:
        r = Wrk.result(p)
        probe["stop"] = True
        th.join()
    time.sleep(0.5)
    with open(logf) as f:
        f.seek(offset)
        lines = f.read().splitlines()
    reqs = []  # (time, connection, request number on it, certificate index, path kind)
    for line in lines:
        parts = line.split()
        if len(parts) < 7 or tag not in parts[5]:
            continue
        reqs.append((float(parts[0]), parts[1] + ":" + parts[2], int(parts[3]),
                     order.get(norm_serial(parts[4]), -1),
                     "probe" if "rotation-probe" in parts[5] else "load"))
    reqs.sort()
    per = []
    for t_put, idx in marks:
        after = [q for q in reqs if q[0] > t_put]
        new_conns = [q for q in after if q[2] == 1]
        stale_new = [q for q in new_conns if q[3] < idx]
        stale_pooled = [q for q in after if q[2] > 1 and q[3] < idx]
        fresh = [q for q in after if q[3] >= idx]
        per.append({
            "new_connections_within_1s": sum(1 for q in new_conns if q[0] < t_put + 1),
            # every new connection after this presents the new certificate
            "new_conn_switch_ms": (max(q[0] for q in stale_new) - t_put) * 1000 if stale_new else 0.0,
            "stale_new_connections": len(stale_new),
            "first_new_cert_ms": (fresh[0][0] - t_put) * 1000 if fresh else None,
            # requests on connections opened before the rotation keep the old certificate
            "stale_pooled_requests": len(stale_pooled),
            "last_stale_pooled_ms": ((max(q[0] for q in stale_pooled) - t_put) * 1000
                                     if stale_pooled else 0.0),
        })
    failures = r["status"] + r["socket_errors"]
    switch = [x["new_conn_switch_ms"] for x in per]
    results["rotation"] = {
        "requests": r["requests"], "rps": r["rps"], "non2xx": r["status"],
        "socket_errors": r["socket_errors"], "failures": failures,
        "probe_requests": probe["requests"], "probe_failures": probe["failures"],
        "new_conn_switch_ms_max": max(switch) if switch else None,
        "new_conn_switch_ms_median": statistics.median(switch) if switch else None,
        "first_new_cert_ms_max": max((x["first_new_cert_ms"] for x in per
                                      if x["first_new_cert_ms"] is not None), default=None),
        "last_stale_pooled_ms_max": max(x["last_stale_pooled_ms"] for x in per),
        # the old certificate was still in use on pooled connections when the run ended
        "stale_pooled_at_end": bool(reqs) and any(
            q[2] > 1 and q[3] < n for q in reqs if q[0] > reqs[-1][0] - 0.5),
        "stale_pooled_requests": sum(x["stale_pooled_requests"] for x in per),
        "put_ms_median": statistics.median(put_ms),
        "logged_requests": len(reqs),
        "per_rotation": per,
    }
    note("%d requests, %d non-2xx, %d socket errors (probe: %d requests, %d failed); new "
         "connections on the new certificate within %s ms (median), %s ms (worst)"
         % (r["requests"], r["status"], r["socket_errors"], probe["requests"], probe["failures"],
            fmt(results["rotation"]["new_conn_switch_ms_median"], 0),
            fmt(results["rotation"]["new_conn_switch_ms_max"], 0)))


def phase_scale(cfg, stack, wrk, ports, results):
    levels = cfg["levels"]
    log("phase 4: scale, %s mappings over 1,000 certificates" % ", ".join("{:,}".format(x) for x in levels))
    up = ports["upstream"]
    out = {"levels": []}
    results["scale"] = out
    # 1,000 certificates by file, four uploads at a time.
    t0 = time.perf_counter()
    ids = [None] * 1000
    errors = []

    def uploader(k):
        c = Client("127.0.0.1", ports["api"], timeout=120)
        try:
            for i in range(k, 1000, 4):
                ids[i] = stack.upload("scale/s%04d" % i, client=c)
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            c.close()
    threads = [threading.Thread(target=uploader, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise Unavailable("certificate upload failed: %s" % errors[0])
    out["cert_upload_s"] = time.perf_counter() - t0
    note("1,000 certificates uploaded by file in %.1f s" % out["cert_upload_s"])

    bench_url = "https://localhost:%d/bench" % up
    if not results.get("bench_cert"):  # phase 1 did not run: its mapping is the one measured
        results["bench_cert"] = stack.upload("bench/c0000")
        stack.map([stack.mapping(results["bench_cert"], bench_url, "bench")])
        stack.wait_forward(bench_url, serial=serial_of("bench/c0000"))
    headers = stack.forward_headers(bench_url)
    gateway = "http://127.0.0.1:%d/mtls/account/%s" % (ports["gateway"], ACCOUNT)
    have = 0
    tag = secrets.token_hex(3)

    def url_of(i):
        return "https://localhost:%d/s/%s/%d" % (up, tag, i)
    for level in levels:
        add = level - have
        # Bulk load: batches of 1,000 (the API's maximum), mapping i on certificate i mod 1000.
        t0 = time.perf_counter()
        for start in range(have, level, 1000):
            batch = [stack.mapping(ids[i % 1000], url_of(i), "s-%s-%d" % (tag, i))
                     for i in range(start, min(level, start + 1000))]
            stack.map(batch)
        t_posted = time.perf_counter()
        have = level
        # Served: the newest mapping forwards, and check-mapping of a 1,000-triplet sample over
        # the whole set (every certificate among them when there are 1,000+) says all exist.
        # (with fewer than 1,000 mappings, each is asked about more than once).
        if level >= 1000:
            sample = [url_of(level - 1 - (k * level) // 1000) for k in range(1000)]
        else:
            sample = [url_of(level - 1 - (k % level)) for k in range(1000)]
        body = json.dumps([{"serviceName": "IDP", "accountId": ACCOUNT, "url": u} for u in sample])
        gw = Client("127.0.0.1", ports["gateway"], timeout=120)
        served_at = None
        while time.perf_counter() - t0 < cfg["serve_timeout"]:
            st, _, _ = gw("GET", "/mtls/account/" + ACCOUNT, stack.forward_headers(url_of(level - 1)))
            if st == 200:
                st2, _, resp = gw("POST", "/mtls/mapping?v=2",
                                  {"Authorization": "Bearer " + stack.bearer,
                                   "Content-Type": "application/json"}, body)
                if st2 == 200 and all(x.get("doExist") for x in json.loads(resp)):
                    served_at = time.perf_counter()
                    break
            time.sleep(0.05)
        row = {"mappings": level, "added": add,
               "post_s": t_posted - t0,
               "load_to_served_s": (served_at - t0) if served_at else None,
               "last_post_to_served_s": (served_at - t_posted) if served_at else None}
        note("%s mappings: %s added, POSTs took %.1f s, all served %s s after the first POST"
             % ("{:,}".format(level), "{:,}".format(add), row["post_s"], fmt(row["load_to_served_s"], 2)))
        # Let the last snapshot settle everywhere before measuring throughput.
        time.sleep(cfg["settle"])
        # Check mapping of a 1,000-triplet batch, through the gateway as a client calls it.
        times = []
        existing = 0
        for _ in range(cfg["check_repeats"]):
            t = time.perf_counter()
            st2, _, resp = gw("POST", "/mtls/mapping?v=2",
                              {"Authorization": "Bearer " + stack.bearer,
                               "Content-Type": "application/json"}, body)
            times.append((time.perf_counter() - t) * 1000)
            if st2 == 200:
                existing = sum(1 for x in json.loads(resp) if x.get("doExist"))
        gw.close()
        row["check_mapping_ms"] = statistics.median(times)
        row["check_mapping_exist"] = existing
        row["check_mapping_body_kib"] = len(body) / 1024
        # Throughput: the same request as phase 1 (a), with this many mappings loaded.
        wrk.run(gateway, headers, cfg["warmup"])
        r = wrk.run(gateway, headers, cfg["scale_duration"],
                    [PROCS.pid("envoy"), PROCS.pid("control-plane"), PROCS.pid("openbao")])
        secs = r["duration_us"] / 1e6
        row.update(rps=r["rps"], p50_ms=r["p50_us"] / 1000, p99_ms=r["p99_us"] / 1000,
                   errors=r["status"] + r["socket_errors"],
                   cpu_us_per_req=r["cpu_s"][0] * 1e6 / max(r["requests"], 1),
                   # what the control plane and OpenBao took from the servers' CPU meanwhile
                   cp_cpu_pct=100 * r["cpu_s"][1] / secs, bao_cpu_pct=100 * r["cpu_s"][2] / secs)
        row["cp_rss_mib"] = rss_mib(PROCS.pid("control-plane"))
        row["envoy_rss_mib"] = rss_mib(PROCS.pid("envoy"))
        row["bao_rss_mib"] = rss_mib(PROCS.pid("openbao"))
        t = time.perf_counter()
        snap = stack.snapshot_bytes()
        row["snapshot_ms"] = (time.perf_counter() - t) * 1000
        row["snapshot_bytes"] = len(snap)
        row["snapshot_gzip_bytes"] = len(zlib.compress(snap, 6))
        row["snapshot_mappings"] = len(json.loads(snap).get("mappings", []))
        row["clusters"] = stack.envoy_stat("cluster_manager.active_clusters")
        out["levels"].append(row)
        note("%s mappings: %.0f req/s, p99 %.2f ms, check-mapping(1,000) %.1f ms, snapshot %.1f MiB, "
             "RSS control plane %.0f MiB / Envoy %.0f MiB"
             % ("{:,}".format(level), row["rps"], row["p99_ms"], row["check_mapping_ms"],
                row["snapshot_bytes"] / 2**20, row["cp_rss_mib"], row["envoy_rss_mib"]))


# --------------------------------------------------------------------------------------------
# Report


def tamper_token(token, how):
    """A login token made invalid in a chosen way (to time the filter's refusal paths)."""
    import base64

    def b64d(x):
        return base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))

    def b64e(b):
        return base64.urlsafe_b64encode(b).decode().rstrip("=")
    h, p, sig = token.split(".")
    if how == "signature":  # flip a bit of S: the whole Ed25519 check runs, then fails
        raw = bytearray(b64d(sig))
        raw[40] ^= 1
        return "%s.%s.%s" % (h, p, b64e(bytes(raw)))
    if how == "kid":  # a key the gateway does not know: refused before any signature work
        header = json.loads(b64d(h))
        header["kid"] = "unknown"
        return "%s.%s.%s" % (b64e(json.dumps(header).encode()), p, sig)
    raise ValueError(how)


def variant_bootstrap(stack, ports, name, node, listen, admin, drop):
    """mtlsgate's bootstrap rendered for another node and ports, minus one YAML block (the
    block starting at the line that begins with `drop`, up to the next line as indented)."""
    path = os.path.join(RUN, "envoy-%s.yaml" % name)
    pairs = ["NODE_ID=" + node, "WASM=" + WASM] + stack.link_pairs(node) + [
             "THROTTLE_RATE=1000000", "THROTTLE_BURST=1000000", "XFF_TRUSTED_HOPS=0",
                 "FORWARD_TIMEOUT_SECONDS=60", "FORWARD_MAX_BODY_BYTES=8388608",
             "LISTEN_ADDRESS=127.0.0.1", "LISTEN_PORT=%d" % listen, "ADMIN_ADDRESS=127.0.0.1",
             "ADMIN_PORT=%d" % admin, "CONTROL_ADDRESS=127.0.0.1", "XDS_PORT=%d" % ports["xds"],
             "API_PORT=%d" % ports["api"], "ACCESS_LOG=" + os.path.join(RUN, "audit-%s.log" % name)]
    subprocess.run(["bash", "-c", 'source "$1"; shift; render_bootstrap "$@"', "_",
                    os.path.join(ROOT, "scripts", "lib.sh"), path] + pairs, check=True)
    lines = read(path).split("\n")
    start = next((i for i, l in enumerate(lines) if l.lstrip().startswith(drop)), None)
    if start is None:
        raise Unavailable("no %r in the bootstrap" % drop)
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    # The block: deeper lines, and for a mapping key also the list items at its own indent.
    def inside(line):
        if not line.strip():
            return True
        ind = len(line) - len(line.lstrip())
        return ind > indent or (ind == indent and not drop.startswith("-")
                                and line.lstrip().startswith("- "))
    while end < len(lines) and inside(lines[end]):
        end += 1
    with open(path, "w") as f:
        f.write("\n".join(lines[:start] + lines[end:]))
    return path


def phase_breakdown(cfg, stack, wrk, ports, results):
    """Optional (--phases ...,breakdown): where mtlsgate's Envoy CPU per request goes, from
    requests that stop at different points of the filter and from two variant Envoys."""
    log("breakdown: Envoy CPU per request along the filter's path (wrk -c%d, %d s each)"
        % (wrk.connections, cfg["duration"]))
    up = ports["upstream"]
    bench_url = "https://localhost:%d/bench" % up
    if not results.get("bench_cert"):
        results["bench_cert"] = stack.upload("bench/c0000")
        stack.map([stack.mapping(results["bench_cert"], bench_url, "bench")])
        stack.wait_forward(bench_url, serial=serial_of("bench/c0000"))
    fwd = stack.forward_headers(bench_url)
    gw = "http://127.0.0.1:%d" % ports["gateway"]
    path = "/mtls/account/" + ACCOUNT

    def with_auth(token):
        h = dict(fwd)
        h["Authorization"] = "Bearer " + token
        return h
    unmapped = dict(fwd)
    unmapped["LP-forward-url"] = "https://localhost:%d/not-mapped" % up
    # Two variants of mtlsgate's own Envoy, on their own node ids and ports.
    nolog = variant_bootstrap(stack, ports, "nolog", NODE_ID + "-nolog", ports["variant"],
                              ports["variant_admin"], "access_log:")
    nofilter = variant_bootstrap(stack, ports, "nofilter", NODE_ID + "-nofilter",
                                 ports["variant2"], ports["variant2_admin"],
                                 "- name: envoy.filters.http.wasm")
    for name, conf, admin in (("envoy-nolog", nolog, ports["variant_admin"]),
                              ("envoy-nofilter", nofilter, ports["variant2_admin"])):
        PROCS.start(name, [ENVOY, "-c", conf, "--disable-hot-restart", "--concurrency",
                           str(stack.concurrency), "--log-level", "warn",
                           "--file-flush-interval-msec", "1000"], cpus=cfg["server_cpus"])
        wait_http("127.0.0.1", admin, "/ready", 60, name)
    # The no-log variant serves once its node has acknowledged the bench cluster.
    deadline = time.monotonic() + 30
    while request("GET", "127.0.0.1", ports["variant"], path, fwd)[0] != 200:
        if time.monotonic() > deadline:
            raise Unavailable("the no-access-log variant never forwarded")
        time.sleep(0.1)
    v1 = "http://127.0.0.1:%d" % ports["variant"]
    v2 = "http://127.0.0.1:%d" % ports["variant2"]
    cases = [
        ("forward (as phase 1 a)", gw + path, fwd, "envoy", 200),
        ("valid token, unmapped URL: 400", gw + path, unmapped, "envoy", 400),
        ("bad signature: 401 after Ed25519", gw + path, with_auth(tamper_token(stack.bearer, "signature")), "envoy", 401),
        ("unknown key id: 401 before Ed25519", gw + path, with_auth(tamper_token(stack.bearer, "kid")), "envoy", 401),
        ("no /mtls path: filter passes, 404", gw + "/other", {}, "envoy", 404),
        ("variant without access log: forward", v1 + path, fwd, "envoy-nolog", 200),
        ("variant without the filter: 404", v2 + "/other", {}, "envoy-nofilter", 404),
    ]
    rows = []
    for label, url, headers, proc, want in cases:
        host, port, pth = split_url(url)
        st = request("GET", host, port, pth, headers)[0]
        wrk.run(url, headers, cfg["warmup"])
        r = wrk.run(url, headers, cfg["duration"], [PROCS.pid(proc)])
        cpu = r["cpu_s"][0] * 1e6 / max(r["requests"], 1)
        rows.append({"case": label, "status": st, "expected": want, "rps": r["rps"],
                     "cpu_us_per_req": cpu, "p50_ms": r["p50_us"] / 1000})
        note("%-40s %d  %7.0f req/s  %6.1f us/req" % (label, st, r["rps"], cpu))
    PROCS.stop("envoy-nolog")
    PROCS.stop("envoy-nofilter")
    c = {row["case"]: row["cpu_us_per_req"] for row in rows}
    results["breakdown"] = {"cases": rows, "derived": {
        "ed25519_verify_us": c["bad signature: 401 after Ed25519"] - c["unknown key id: 401 before Ed25519"],
        "after_signature_us": c["forward (as phase 1 a)"] - c["bad signature: 401 after Ed25519"],
        "filter_fixed_us": c["no /mtls path: filter passes, 404"] - c["variant without the filter: 404"],
        "access_log_us": c["forward (as phase 1 a)"] - c["variant without access log: forward"],
    }}


def machine():
    info = {"nproc": os.cpu_count()}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    for line in read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            info["mem_gib"] = int(line.split()[1]) / 2**20
    info["envoy"] = subprocess.run([ENVOY, "--version"], capture_output=True, text=True).stdout.strip().split("version: ")[-1]
    info["nginx"] = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    info["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    return info


def ratio(x, y):
    if x is None or y is None or y == 0:
        return None
    return x / y


def report(cfg, results, started):
    lines = []
    add = lines.append
    m = results.get("machine", {})
    add("")
    add("mtlsgate benchmark (%s) — %s, %s CPUs, %.0f GiB; Envoy %s; %s; %s"
        % ("quick" if cfg["quick"] else "full", m.get("cpu", "?"), m.get("nproc", "?"),
           m.get("mem_gib", 0), m.get("envoy", "?"), m.get("nginx", "?"), m.get("wrk", "?")))
    add("wrk -t%d -c%d -d%ds (warm-up %ds), %s; servers on CPU %s; Envoy --concurrency %d, nginx %d workers"
        % (cfg["threads"], cfg["connections"], cfg["duration"], cfg["warmup"],
           "wrk on CPU %s" % cfg["wrk_cpu"] if cfg["wrk_cpu"] is not None else "no pinning",
           cfg["server_cpus"] or "any", cfg["concurrency"], cfg["concurrency"]))
    add("")
    o = results.get("overhead")
    add("| 1. request path                  |   req/s | p50 ms | p99 ms | proxy CPU us/req | 1 conn: p50 ms | p99 ms | errors |")
    add("|----------------------------------|--------:|-------:|-------:|-----------------:|---------------:|-------:|-------:|")
    names = {"a": "(a) mtlsgate: Envoy + filter", "b": "(b) Envoy, static cluster", "c": "(c) nginx proxy_ssl_certificate"}
    for k in "abc":
        s = (o or {}).get(k)
        if s:
            add("| %-32s | %7.0f | %6.2f | %6.2f | %16.1f | %14.3f | %6.3f | %6d |" % (
                names[k], s["rps"], s["p50_ms"], s["p99_ms"], s["cpu_us_per_req"], s["c1_p50_ms"],
                s["c1_p99_ms"], s["errors"]))
        else:
            add("| %-32s |      NA |     NA |     NA |               NA |             NA |     NA |     NA |" % names[k])
    ok = bool(o and all(k in o for k in "abc"))
    a_b = ratio(o["a"]["rps"], o["b"]["rps"]) if ok else None
    a_c = ratio(o["a"]["rps"], o["c"]["rps"]) if ok else None
    added = (o["a"]["p99_ms"] - o["b"]["p99_ms"]) if ok else None
    for label, other in (("ratio a/b (target >= 0.90)      ", "b"), ("ratio a/c (target >= 1.0)       ", "c")):
        r = lambda f: ratio(o["a"][f], o[other][f]) if ok else None
        add("| %s | %7s | %6s | %6s | %16s | %14s | %6s |        |" % (
            label, fmt(r("rps"), 3), fmt(r("p50_ms"), 2), fmt(r("p99_ms"), 2),
            fmt(r("cpu_us_per_req"), 2), fmt(r("c1_p50_ms"), 2), fmt(r("c1_p99_ms"), 2)))
    add("| added, a - b (target p99 <= 0.5) |         | %6s | %6s | %16s | %14s | %6s |        |" % (
        fmt(o["a"]["p50_ms"] - o["b"]["p50_ms"], 2) if ok else "NA", fmt(added, 2),
        fmt(o["a"]["cpu_us_per_req"] - o["b"]["cpu_us_per_req"], 1) if ok else "NA",
        fmt(o["a"]["c1_p50_ms"] - o["b"]["c1_p50_ms"], 3) if ok else "NA",
        fmt(o["a"]["c1_p99_ms"] - o["b"]["c1_p99_ms"], 3) if ok else "NA"))
    add("")
    p = results.get("propagation")
    add("| 2. propagation (%2d trials)                  | median ms | worst ms |" % cfg["trials"])
    add("|---------------------------------------------|----------:|---------:|")
    worst = None
    for key, label in (("mapping_existing_cluster", "new mapping, existing cluster"),
                       ("mapping_new_cluster", "new mapping + new certificate/cluster"),
                       ("certificate_update", "certificate update (PUT by-file)")):
        d = (p or {}).get(key)
        if d:
            worst = max(worst or 0, max(d))
            add("| %-43s | %9.0f | %8.0f |" % (label, statistics.median(d), max(d)))
        else:
            add("| %-43s |        NA |       NA |" % label)
    add("")
    rot = results.get("rotation")
    add("| 3. rotation under load (%d rotations)                    |        |" % cfg["rotations"])
    add("|----------------------------------------------------------|-------:|")
    if rot:
        add("| wrk requests (req/s)                                     | %d (%.0f) |" % (rot["requests"], rot["rps"]))
        add("| failed requests: wrk non-2xx + socket errors (target 0)  | %6d |" % rot["failures"])
        add("| failed probe requests (new connection each)              | %6d |" % rot["probe_failures"])
        add("| new connections all on the new certificate, ms: median   | %6s |" % fmt(rot["new_conn_switch_ms_median"], 0))
        add("| new connections all on the new certificate, ms: worst    | %6s |" % fmt(rot["new_conn_switch_ms_max"], 0))
        add("| pooled connections: last old-certificate request, ms     | %6s%s |" % (
            fmt(rot["last_stale_pooled_ms_max"], 0),
            " (still so at the end of the run)" if rot.get("stale_pooled_at_end") else ""))
    else:
        add("| NA                                                       |     NA |")
    add("")
    sc = (results.get("scale") or {}).get("levels") or []
    base = sc[0]["rps"] if sc and sc[0]["mappings"] == 100 else None
    add("| 4. scale (1,000 certificates) | req/s | ratio vs 100 | p99 ms | Envoy CPU us/req | CP+Bao CPU % | CP RSS MiB | Envoy RSS MiB | snapshot MiB | bulk load -> served s | check 1,000 ms | errors |")
    add("|-------------------------------|------:|-------------:|-------:|-----------------:|-------------:|-----------:|--------------:|-------------:|----------------------:|---------------:|-------:|")
    for row in sc:
        add("| %29s | %5.0f | %12s | %6.2f | %16.1f | %12.1f | %10.0f | %13.0f | %12.2f | %21s | %14.1f | %6d |" % (
            "{:,} mappings".format(row["mappings"]), row["rps"], fmt(ratio(row["rps"], base), 3),
            row["p99_ms"], row["cpu_us_per_req"], row["cp_cpu_pct"] + row["bao_cpu_pct"],
            row["cp_rss_mib"], row["envoy_rss_mib"], row["snapshot_bytes"] / 2**20,
            ("%s (%s new)" % (fmt(row["load_to_served_s"], 2), "{:,}".format(row["added"]))),
            row["check_mapping_ms"], row["errors"]))
    if not sc:
        add("| NA |")
    if results.get("scale", {}).get("cert_upload_s") is not None:
        add("(1,000 certificates uploaded by file in %.1f s, 4 at a time; snapshot deflated: %s MiB)"
            % (results["scale"]["cert_upload_s"],
               " / ".join("%.2f" % (row["snapshot_gzip_bytes"] / 2**20) for row in sc)))
    bd = results.get("breakdown")
    if bd:
        add("")
        add("| breakdown: mtlsgate's Envoy          | status |   req/s | Envoy CPU us/req |")
        add("|--------------------------------------|-------:|--------:|-----------------:|")
        for row in bd["cases"]:
            add("| %-36s | %6d | %7.0f | %16.1f |" % (row["case"], row["status"], row["rps"], row["cpu_us_per_req"]))
        d = bd["derived"]
        add("derived, us/request: Ed25519 verify %.0f; after the signature (claims, lookup, audit, "
            "forwarding) %.0f; filter fixed cost (no /mtls path) %.0f; access log %.0f"
            % (d["ed25519_verify_us"], d["after_signature_us"], d["filter_fixed_us"], d["access_log_us"]))
    for err in results.get("errors", []):
        add("could not measure: " + err)
    add("(%.0f s in all; details in .run/bench/results.json, logs in .run/bench/run/)" % (time.time() - started))
    ratio_100k = None
    for row in sc:
        if row["mappings"] == 100000:
            ratio_100k = ratio(row["rps"], base)
    result = "RESULT a_over_b=%s a_over_c=%s added_p99_ms=%s propagation_worst_ms=%s rotation_failures=%s scale_ratio_100k=%s" % (
        fmt(a_b, 3), fmt(a_c, 3), fmt(added, 2), fmt(worst, 0),
        fmt(rot["failures"] if rot else None), fmt(ratio_100k, 3))
    add(result)
    print("\n".join(lines))
    sys.stdout.flush()
    return result


# --------------------------------------------------------------------------------------------


def start_all(cfg, ports, stack):
    log("starting the upstream (nginx, client certificate required) on 127.0.0.1:%d and :%d"
        % (ports["upstream"], ports["upstream_close"]))
    render(os.path.join(BENCH, "upstream-nginx.conf"), os.path.join(RUN, "upstream-nginx.conf"),
           RUN=RUN, PKI=PKI, UPSTREAM_PORT=ports["upstream"],
           UPSTREAM_CLOSE_PORT=ports["upstream_close"])
    PROCS.start("upstream-nginx", ["nginx", "-p", RUN, "-e", os.path.join(RUN, "upstream-nginx.error.log"),
                                   "-c", os.path.join(RUN, "upstream-nginx.conf")],
                cpus=cfg["server_cpus"])
    deadline = time.monotonic() + 10
    while port_free(ports["upstream"]):
        if not PROCS.alive("upstream-nginx") or time.monotonic() > deadline:
            raise Unavailable("the upstream nginx did not start; see .run/bench/run/upstream-nginx*.log")
        time.sleep(0.1)
    stack.start()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a reduced run (under 3 minutes)")
    ap.add_argument("--phases", default="overhead,propagation,rotation,scale",
                    help="comma-separated subset of overhead,propagation,rotation,scale, "
                    "plus breakdown (not run by default): where the filter's CPU goes")
    ap.add_argument("--hold", action="store_true",
                    help="keep everything running at the end (for investigation) until Ctrl-C")
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    hold = args.hold
    started = time.time()
    quick = args.quick
    ncpu = os.cpu_count() or 1
    env_int = lambda k, d: int(os.environ.get(k, d))
    cfg = {
        "quick": quick,
        "hold": hold,
        "threads": env_int("BENCH_WRK_THREADS", 1),
        "connections": env_int("BENCH_CONNECTIONS", 32),
        "duration": env_int("BENCH_DURATION", 6 if quick else 20),
        "warmup": env_int("BENCH_WARMUP", 2 if quick else 5),
        "rounds": env_int("BENCH_ROUNDS", 1 if quick else 3),
        "latency_duration": 3 if quick else 10,
        "trials": env_int("BENCH_TRIALS", 10 if quick else 30),
        "rotations": 10,
        "rotation_gap": 1.0 if quick else 2.0,
        "rotation_lead": 2.0,
        "levels": [100, 10000] if quick else [100, 10000, 100000],
        "scale_duration": env_int("BENCH_SCALE_DURATION", 5 if quick else 15),
        "check_repeats": 3 if quick else 7,
        "settle": 1.0 if quick else 3.0,
        "serve_timeout": 600 if quick else 3600,
        # Envoy's workers: what scripts/up's Envoy uses (its default, one per CPU).
        "concurrency": env_int("BENCH_CONCURRENCY", ncpu),
    }
    # wrk on its own CPU (the last), everything else on the others, where there are two or more.
    if ncpu >= 2:
        cfg["wrk_cpu"] = ncpu - 1
        cfg["server_cpus"] = "0" if ncpu == 2 else "0-%d" % (ncpu - 2)
        # The measuring client (this process: poll loops, uploads) stays off the servers' CPUs.
        os.sched_setaffinity(0, {ncpu - 1})
    else:
        cfg["wrk_cpu"] = None
        cfg["server_cpus"] = None

    base = env_int("BENCH_PORT_BASE", 17100)
    ports = {"bao": base, "bao_cluster": base + 1, "api": base + 10, "xds": base + 11,
             "feed": base + 12,
             "gateway": base + 20, "admin": base + 21, "baseline": base + 30,
             "baseline_admin": base + 31, "nginx": base + 40, "upstream": base + 50,
             "upstream_close": base + 51, "variant": base + 60, "variant_admin": base + 61,
             "variant2": base + 70, "variant2_admin": base + 71}
    busy = [p for p in ports.values() if not port_free(p)]
    if busy:
        sys.exit("bench: ports %s on 127.0.0.1 are in use (another bench? set BENCH_PORT_BASE)" % busy)

    shutil.rmtree(RUN, ignore_errors=True)
    os.makedirs(os.path.join(RUN, "nginx-tmp"), exist_ok=True)
    results = {"config": cfg, "errors": []}

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    # why: started in the background by a non-interactive shell, SIGINT arrives ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        results["machine"] = machine()
        stack = Stack(ports, cfg["server_cpus"], cfg["concurrency"])
        try:
            start_all(cfg, ports, stack)
        except (Unavailable, subprocess.CalledProcessError, OSError) as e:
            log("the stack could not be started: %s" % e)
            report(cfg, results, started)
            return 1
        wrk = Wrk(cfg["wrk_cpu"], cfg["threads"], cfg["connections"])
        for name, phase in (("request-path overhead", lambda: phase_overhead(cfg, stack, wrk, ports, cfg["server_cpus"], cfg["concurrency"], results)),
                            ("propagation", lambda: phase_propagation(cfg, stack, ports, results)),
                            ("rotation", lambda: phase_rotation(cfg, stack, wrk, ports, results)),
                            ("scale", lambda: phase_scale(cfg, stack, wrk, ports, results)),
                            ("breakdown", lambda: phase_breakdown(cfg, stack, wrk, ports, results))):
            if name.split()[-1] not in phases:
                continue
            try:
                phase()
            except Exception as e:  # a phase that cannot run leaves NA, the others go on
                traceback.print_exc()
                results["errors"].append("%s: %s" % (name, e))
                log("%s could not be measured: %s" % (name, e))
        with open(os.path.join(STATE, "results.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
        report(cfg, results, started)
        if args.hold:
            log("holding (Ctrl-C stops): gateway 127.0.0.1:%d, admin %d, API %d, upstream %d; "
                "dev token %s, link PKI in %s, bearer in %s"
                % (ports["gateway"], ports["admin"], ports["api"], ports["upstream"],
                   stack.dev_token, stack.pki, os.path.join(RUN, "bearer")))
            with open(os.path.join(RUN, "bearer"), "w") as f:
                f.write(stack.bearer or "")
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        PROCS.stop_all()


if __name__ == "__main__":
    sys.exit(main())
