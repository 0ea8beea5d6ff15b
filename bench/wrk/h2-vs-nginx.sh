#!/usr/bin/env bash
# h2-vs-nginx.sh: HTTP/2 cache-hit throughput of Edgeshield against nginx
# proxy_cache (`listen ... ssl http2`), measured with h2load (Debian package
# nghttp2-client). Same layout and conventions as hits-vs-nginx.sh: each
# server pinned to core 0 (Edgeshield with GOMAXPROCS=1, nginx with
# worker_processes 1), h2load and the demo origin on core 1, the load
# alternating between the servers, same ECDSA P-256 certificate on both.
#
#   bash bench/wrk/h2-vs-nginx.sh            # from the repository root
#
# Cases: 1 KiB and 1 MiB hits over TLS with h2load -c CONNS -m STREAMS
# (64 connections, 10 concurrent streams each).
# Environment: EDGE_BIN, DURATION [10] (seconds per run), CONNS [64], STREAMS
# [10], REPEAT [3], CASES ["1k 1m"], ports as in hits-vs-nginx.sh, PRIO, OUT
# [bench/out/h2].
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD

DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
STREAMS=${STREAMS:-10}
REPEAT=${REPEAT:-3}
CASES=${CASES:-"1k 1m"}
ORIGIN_PORT=${ORIGIN_PORT:-28081}
EDGE_PORT=${EDGE_PORT:-28080}
EDGE_TLS_PORT=${EDGE_TLS_PORT:-28443}
ADMIN_PORT=${ADMIN_PORT:-29090}
NGINX_PORT=${NGINX_PORT:-28090}
NGINX_TLS_PORT=${NGINX_TLS_PORT:-28453}
OUT=${OUT:-$ROOT/bench/out/h2}
if [ -z "${PRIO+x}" ]; then
	if [ "$(id -u)" = 0 ]; then PRIO="nice -n -15"; else PRIO=""; fi
fi

for tool in h2load nginx taskset openssl curl; do
	command -v "$tool" >/dev/null || { echo "h2-vs-nginx.sh: $tool is required (h2load: apt-get install -y nghttp2-client)" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then
	echo "h2-vs-nginx.sh: needs 2 cores (server on core 0, h2load on core 1)" >&2
	exit 2
fi

# shellcheck source=bench/wrk/lib.sh
source "$ROOT/bench/wrk/lib.sh"


for p in $ORIGIN_PORT $EDGE_PORT $EDGE_TLS_PORT $ADMIN_PORT $NGINX_PORT $NGINX_TLS_PORT; do
	port_free "$p"
done
mkdir -p "$OUT"
rm -f "$OUT"/*.txt

make_cert

FLOOR_BODY=x

log "demo origin on 127.0.0.1:$ORIGIN_PORT (core 1)"
start origin 1 "$EDGE_BIN" origin --listen "127.0.0.1:$ORIGIN_PORT"
wait_port "$ORIGIN_PORT" "$LAST_PID" origin

log "edgeshield https :$EDGE_TLS_PORT, h2 by ALPN (core 0, GOMAXPROCS=1)"
mkdir -p "$TMP/edge"
fill bench/wrk/edge-tls.yaml.tmpl "$TMP/edge" "$EDGE_PORT" "$EDGE_TLS_PORT" >"$TMP/edge/edge.yaml"
start edge 0 env GOMAXPROCS=1 "$EDGE_BIN" run --config "$TMP/edge/edge.yaml"
EDGE_PID=$LAST_PID
wait_port "$EDGE_TLS_PORT" "$EDGE_PID" edge

# nginx: the wrk benchmark's configuration with HTTP/2 on its TLS listener
# (Debian's nginx 1.22 syntax `listen ... ssl http2`; 1.25+ would say
# `http2 on;`) and keep-alive without a request limit.
log "nginx https :$NGINX_TLS_PORT with http2 (core 0, worker_processes 1)"
mkdir -p "$TMP/nginx/cache"
fill bench/wrk/nginx.conf.tmpl "$TMP/nginx" "$NGINX_PORT" "$NGINX_TLS_PORT" |
	sed -e "s|listen 127.0.0.1:$NGINX_TLS_PORT ssl |listen 127.0.0.1:$NGINX_TLS_PORT ssl http2 |" \
		-e 's|keepalive_requests [0-9]*;|keepalive_requests 10000000;|' >"$TMP/nginx/nginx.conf"
grep -q "ssl http2" "$TMP/nginx/nginx.conf" || { echo "h2-vs-nginx.sh: could not enable http2 in nginx.conf" >&2; exit 1; }
chmod 755 "$TMP"
chmod -R a+rwX "$TMP/nginx"
chmod a+r "$TMP/key.pem"
start nginx 0 nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"
NGINX_PID=$LAST_PID
wait_port "$NGINX_TLS_PORT" "$NGINX_PID" nginx

declare -A URLPATH=([1k]=/bench/1k.bin [1m]=/bench/1m.bin)
declare -A TLSPORT_OF=([edge]=$EDGE_TLS_PORT [nginx]=$NGINX_TLS_PORT)

log "warming over HTTP/2"
for srv in edge nginx; do
	for c in $CASES; do
		u=https://127.0.0.1:${TLSPORT_OF[$srv]}${URLPATH[$c]}
		curl -sk --http2 -o /dev/null "$u"
		curl -sk --http2 -o /dev/null "$u"
		head=$(curl -sk --http2 -o /dev/null -D - "$u" | tr -d '\r')
		log "  $srv $u -> $(echo "$head" | head -1), $(echo "$head" | awk -F': ' 'tolower($1)=="cache-status"||tolower($1)=="x-cache-status"{print $2}')"
	done
done

median() { sort -n | awk '{a[NR]=$1} END{ if (NR==0) {print "-"} else if (NR%2) {print a[(NR+1)/2]} else {printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2} }'; }

printf '%-6s %-6s %12s %10s %8s\n' case server req/s MiB/s failed | tee "$OUT/table.txt"
for c in $CASES; do
	declare -A RPS=() MIBS=() FAILED=()
	for i in $(seq 1 "$REPEAT"); do
		for srv in edge nginx; do
			u=https://127.0.0.1:${TLSPORT_OF[$srv]}${URLPATH[$c]}
			f="$OUT/$c-$srv-$i.txt"
			$PRIO taskset -c 1 h2load -c "$CONNS" -m "$STREAMS" -D "$DURATION" --warm-up-time=1 "$u" >"$f" 2>&1 || true
			rps=$(awk '/^finished in/{gsub(/,/,""); print $4}' "$f")
			bytes=$(awk '/^finished in/{gsub(/,/,""); print $6, $7}' "$f")
			mib=$(echo "$bytes" | awk '{n=$1; u=$2; f=(u=="KB/s")?1/1024:(u=="GB/s")?1024:(u=="B/s")?1/1048576:1; printf "%.1f", n*f}')
			failed=$(awk '/^requests:/{gsub(/,/,""); for(i=1;i<=NF;i++) if($i=="failed") print $(i-1)}' "$f")
			RPS[$srv]+="${rps:-0} "
			MIBS[$srv]+="${mib:-0} "
			FAILED[$srv]=$(( ${FAILED[$srv]:-0} + ${failed:-0} ))
		done
	done
	for srv in edge nginx; do
		printf '%-6s %-6s %12s %10s %8s\n' "$c" "$srv" \
			"$(echo "${RPS[$srv]}" | tr ' ' '\n' | grep . | median)" \
			"$(echo "${MIBS[$srv]}" | tr ' ' '\n' | grep . | median)" "${FAILED[$srv]}" | tee -a "$OUT/table.txt"
	done
	unset RPS MIBS FAILED
done
log "raw h2load outputs and the table: $OUT"
