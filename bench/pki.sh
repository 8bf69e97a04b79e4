#!/usr/bin/env bash
# bench/pki.sh DIR : makes (once) every certificate the benchmark needs, under DIR.
# EC P-256 keys throughout (fast to make and to handshake). Idempotent: a file that exists
# is kept, so repeated runs reuse what is there; delete DIR to start over.
#
#   DIR/client-ca.{key,pem}    the CA of every client certificate (the upstream trusts it)
#   DIR/server-ca.{key,pem}    the CA of the upstream's server certificate (mappings'
#                              caCertificates, proxy_ssl_trusted_certificate, Envoy's trusted_ca)
#   DIR/server.{key,pem}       the upstream's certificate, SAN DNS:localhost
#   DIR/<set>/<name>.{key,pem,p12,serial}   client certificates; P12 password "changeit"
#       bench/c0000            the certificate every contender presents (phase 1)
#       prop/p00..p29          one new certificate (hence a new cluster) per propagation trial
#       upd/u00..u30           certificate-update propagation: u00 first, then one per trial
#       rot/r00..r10           rotation under load: r00 first, then one per rotation
#       scale/s0000..s0999     the 1,000 certificates the scale mappings share
set -euo pipefail
dir="$1"
mkdir -p "$dir"
cd "$dir"

ca() { # ca NAME CN
  [ -s "$1.pem" ] && return
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -keyout "$1.key" -out "$1.pem" -subj "/O=mtlsgate bench/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
ca client-ca "bench client CA"
ca server-ca "bench server CA"
if [ ! -s server.pem ]; then
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key \
    -subj "/O=mtlsgate bench/CN=localhost" -out server.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' > server.ext
  openssl x509 -req -in server.csr -CA server-ca.pem -CAkey server-ca.key -days 3650 \
    -extfile server.ext -out server.pem 2>/dev/null
  rm -f server.csr server.ext
fi
printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n' > client.ext

# client SET/NAME : one client certificate, its P12 and its serial (upper-case hex, as nginx's
# $ssl_client_serial prints it).
client() {
  local f="$1"
  [ -s "$f.serial" ] && return
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$f.key" \
    -subj "/O=mtlsgate bench/CN=${f##*/}" -out "$f.csr" 2>/dev/null
  openssl x509 -req -in "$f.csr" -CA client-ca.pem -CAkey client-ca.key -days 3650 \
    -extfile client.ext -out "$f.pem" 2>/dev/null
  openssl pkcs12 -export -inkey "$f.key" -in "$f.pem" -certfile client-ca.pem \
    -passout pass:changeit -name "${f##*/}" -out "$f.p12"
  rm -f "$f.csr"
  openssl x509 -in "$f.pem" -noout -serial | sed 's/^serial=//' > "$f.serial"
}
export -f client

names=(bench/c0000)
for i in $(seq -w 0 29); do names+=("prop/p$i"); done
for i in $(seq -w 0 30); do names+=("upd/u$i"); done
for i in $(seq -w 0 10); do names+=("rot/r$i"); done
for i in $(seq -w 0 999); do names+=("scale/s$(printf %04d "$((10#$i))")"); done
mkdir -p bench prop upd rot scale
todo=()
for n in "${names[@]}"; do [ -s "$n.serial" ] || todo+=("$n"); done
if [ "${#todo[@]}" -gt 0 ]; then
  echo "bench/pki.sh: making ${#todo[@]} client certificates under $dir (once)" >&2
  printf '%s\n' "${todo[@]}" | xargs -P "$(nproc)" -n 16 bash -c 'for f; do client "$f"; done' _
fi
