#!/usr/bin/env bash
# Self-check of the OAuth test fixture with curl: starts server.mjs with a throw-away CA and
# certificate, runs every check from README.md, prints the transcript, exits non-zero on the first
# unexpected answer. Needs node, npm ci already done (npm ci --prefix tests/oauth-server), curl,
# openssl, python3.  Usage: tests/oauth-server/check.sh [port]   (default port 9443)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
port="${1:-9443}"
work="$(mktemp -d /tmp/oauth-check.XXXXXX)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 1 -subj /CN=oauth-check-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
  -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
  -days 1 -extfile ext 2>/dev/null

CB=http://127.0.0.1:8080/api/oauth2/callback
export OAUTH_PORT="$port" OAUTH_CERT="$work/server.pem" OAUTH_KEY="$work/server.key" OAUTH_ACCESS_TTL=4
export OAUTH_CLIENTS='[
 {"client_id":"svc","client_secret":"svc-secret","grant_types":["client_credentials"]},
 {"client_id":"web","client_secret":"web-secret","grant_types":["authorization_code","refresh_token"],
  "redirect_uris":["'"$CB"'"]},
 {"client_id":"post","client_secret":"post-secret","grant_types":["authorization_code","refresh_token"],
  "redirect_uris":["'"$CB"'"],"token_endpoint_auth_method":"client_secret_post"}]'

: > out.log
start_ms=$(date +%s%3N)
node "$here/server.mjs" > out.log 2> err.log &
server_pid=$!
for _ in $(seq 1 500); do
  grep -q '^READY ' out.log && break
  kill -0 "$server_pid" 2>/dev/null || { cat err.log; exit 1; }
  sleep 0.01
done
echo "# $(cat out.log) after $(( $(date +%s%3N) - start_ms )) ms"

B="https://127.0.0.1:$port"
ok() { echo "  => OK: $*"; }
die() { echo "  => FAILED: $*"; echo "--- server stderr:"; cat err.log; exit 1; }
# run CMD...: print and run a curl command; its stdout lands in $out (stderr printed after it).
run() {
  echo
  echo "\$ $*"
  out="$(eval "$@" 2>"$work/stderr" || true)"
  echo "$out"
  if [ -s "$work/stderr" ]; then sed 's/^/(stderr) /' "$work/stderr"; fi
}
json() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d.get(sys.argv[2], ""))' "$1" "$2"; }
expect() { # expect FIELD VALUE
  local v; v="$(json "${out%% HTTP *}" "$1")"
  [ "$v" = "$2" ] || die "expected $1=$2, got '$v'"
  ok "$1=$2"
}

echo
echo "## 1. client_credentials"
run curl -sS --cacert ca.pem -u svc:svc-secret -d grant_type=client_credentials -d scope=api "$B/token" -w "' HTTP %{http_code}'"
expect token_type Bearer; expect expires_in 4; expect scope api
run curl -sS --cacert ca.pem -u svc:WRONG -d grant_type=client_credentials -d scope=api "$B/token" -w "' HTTP %{http_code}'"
expect error invalid_client
run curl -sS --cacert ca.pem -d grant_type=client_credentials -d client_id=svc -d client_secret=svc-secret -d scope=api "$B/token" -w "' HTTP %{http_code}'"
expect expires_in 4
CC="$(json "${out%% HTTP *}" access_token)"
run curl -sS --cacert ca.pem "'$B/test/valid?token=$CC'"
expect active True

echo
echo "## 2. authorization_code + PKCE S256, no cookie store (curl -L follows 3 redirects)"
VER="$(openssl rand -base64 48 | tr '+/' '-_' | tr -d '=\n')"
CH="$(printf %s "$VER" | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=\n')"
echo "# code_verifier=$VER"
echo "# code_challenge=BASE64URL(SHA256(code_verifier))=$CH"
RU="$(python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=""))' "$CB")"
run curl -sS --cacert ca.pem -L -o /dev/null -w "'%{url_effective} redirects=%{num_redirects}\n'" \
  "'$B/auth?response_type=code&client_id=web&redirect_uri=$RU&scope=api&state=st1&code_challenge=$CH&code_challenge_method=S256'"
case "$out" in "$CB?code="*"&state=st1&iss="*) ok "landed on redirect_uri with code and state";; *) die "no code";; esac
CODE="$(printf %s "$out" | head -1 | sed 's/.*[?&]code=\([^&]*\).*/\1/')"
run curl -sS --cacert ca.pem -u web:web-secret -d grant_type=authorization_code -d code="$CODE" \
  --data-urlencode redirect_uri="$CB" -d code_verifier=wrong-verifier-wrong-verifier-wrong-verifier-0123 "$B/token" -w "' HTTP %{http_code}'"
expect error invalid_grant
run curl -sS --cacert ca.pem -u web:web-secret -d grant_type=authorization_code -d code="$CODE" \
  --data-urlencode redirect_uri="$CB" "$B/token" -w "' HTTP %{http_code}'"
expect error invalid_grant
run curl -sS --cacert ca.pem -u web:web-secret -d grant_type=authorization_code -d code="$CODE" \
  --data-urlencode redirect_uri="$CB" -d code_verifier="$VER" "$B/token" -w "' HTTP %{http_code}'"
expect token_type Bearer; expect expires_in 4
AT="$(json "${out%% HTTP *}" access_token)"; RT="$(json "${out%% HTTP *}" refresh_token)"
[ -n "$RT" ] || die "no refresh_token"; ok "refresh_token present"
run curl -sS --cacert ca.pem "'$B/test/valid?token=$AT'"
expect active True
run curl -sS --cacert ca.pem -u web:web-secret -d token="$AT" "$B/token/introspection"
expect active True

echo
echo "## 3. expiry and refresh_token grant"
echo; echo "\$ sleep 5"; sleep 5
run curl -sS --cacert ca.pem "'$B/test/valid?token=$AT'"
expect active False
run curl -sS --cacert ca.pem -u web:web-secret -d grant_type=refresh_token -d refresh_token="$RT" "$B/token" -w "' HTTP %{http_code}'"
expect token_type Bearer; expect expires_in 4
AT2="$(json "${out%% HTTP *}" access_token)"
run curl -sS --cacert ca.pem "'$B/test/valid?token=$AT2'"
expect active True
run curl -sS --cacert ca.pem -u web:web-secret -d grant_type=refresh_token -d refresh_token=bogus "$B/token" -w "' HTTP %{http_code}'"
expect error invalid_grant

echo
echo "## 4. reused code: refused, and the tokens issued from it are revoked"
run curl -sS --cacert ca.pem -u web:web-secret -d grant_type=authorization_code -d code="$CODE" \
  --data-urlencode redirect_uri="$CB" -d code_verifier="$VER" "$B/token" -w "' HTTP %{http_code}'"
expect error invalid_grant
run curl -sS --cacert ca.pem "'$B/test/valid?token=$AT2'"
expect active False
run curl -sS --cacert ca.pem -u web:web-secret -d grant_type=refresh_token -d refresh_token="$RT" "$B/token" -w "' HTTP %{http_code}'"
expect error invalid_grant

echo
echo "## 5. authorization_code without PKCE, client_secret_post client"
run curl -sS --cacert ca.pem -L -o /dev/null -w "'%{url_effective} redirects=%{num_redirects}\n'" \
  "'$B/auth?response_type=code&client_id=post&redirect_uri=$RU&scope=api&state=st2'"
CODE2="$(printf %s "$out" | head -1 | sed 's/.*[?&]code=\([^&]*\).*/\1/')"
run curl -sS --cacert ca.pem -d grant_type=authorization_code -d client_id=post -d client_secret=post-secret \
  -d code="$CODE2" --data-urlencode redirect_uri="$CB" "$B/token" -w "' HTTP %{http_code}'"
expect token_type Bearer; expect expires_in 4
RT3="$(json "${out%% HTTP *}" refresh_token)"; [ -n "$RT3" ] || die "no refresh_token"; ok "refresh_token present"

echo
echo "## 6. authorization errors (JSON, no redirect)"
run curl -sS --cacert ca.pem "'$B/auth?response_type=code&client_id=web&redirect_uri=http%3A%2F%2F127.0.0.1%3A9999%2Fevil&scope=api&state=x'" -w "' HTTP %{http_code}'"
expect error invalid_redirect_uri
run curl -sS --cacert ca.pem "'$B/auth?response_type=code&client_id=nobody&redirect_uri=$RU&scope=api&state=x'" -w "' HTTP %{http_code}'"
expect error invalid_client

echo
echo "# all checks passed"
echo
echo "--- server stderr:"
cat err.log
