#!/usr/bin/env bash
# hits-vs-nginx.sh: cache-hit throughput of Edgeshield against nginx
# proxy_cache, side by side in one run, measured with wrk.
#
#   bash bench/wrk/hits-vs-nginx.sh            # from the repository root
#
# Layout on a 2-core machine (issue 2 "Speed and memory", issue 4 "Speed"):
#   core 0: the server under test: Edgeshield with GOMAXPROCS=1, or nginx with
#           worker_processes 1 (both pinned with taskset -c 0);
#   core 1: wrk (taskset -c 1 wrk -t1 -c64 -d10s --latency) and the demo origin,
#           which is idle once the objects are cached.
# Both servers run for the whole script, but the load runs ALTERNATE
# (edge, nginx, edge, nginx, ...): they never share core 0 under load. As
# root, both servers and wrk run at nice -15 (see PRIO below), so background
# work on a shared machine disturbs both servers less, and equally. Each
# case is repeated REPEAT times and the median of each figure is reported.
#
# Cases: plain HTTP keep-alive hits of 1 KiB, 64 KiB and 1 MiB; HTTPS
# keep-alive 1 KiB hits (same ECDSA P-256 certificate and key on both, TLS
# 1.3 with TLS_AES_128_GCM_SHA256 on both); HTTPS resumed handshakes per
# second (tls-hs: wrk with "Connection: close": every request is a new TLS
# connection, but wrk keeps its SSL object and resumes the session with the
# server's TLS 1.3 ticket — checked with nginx's $ssl_session_reused); HTTPS
# full handshakes per second (tls-full: HS_CLIENTS [4] parallel
# `openssl s_time -new` clients, a new session every connection, no request).
# The 1 KiB case also measures two references: the same nginx answering 1 KiB
# with `return 200` from memory, the cheapest response this machine gives;
# and the ceiling, a bare fasthttp responder (bench/wrk/ceiling: the same
# headers and 1 KiB body as an edge hit, from memory, GOMAXPROCS=1 on core 0),
# the most the edge's hit path could reach on fasthttp (goal: edge ≥ 0.9×).
# Each row reports user and system CPU microseconds per request, so a ratio
# that no server code can reach shows as system time alone over its budget.
#
# Environment (defaults in brackets): EDGE_BIN [bin/edgeshield, built with
# make build when unset], DURATION [10s], CONNS [64], REPEAT [3], CASES [all:
# "1k 64k 1m tls-1k tls-hs tls-full"], HS_CLIENTS [4], ports ORIGIN_PORT [28081] EDGE_PORT [28080]
# EDGE_TLS_PORT [28443] ADMIN_PORT [29090] NGINX_PORT [28090] NGINX_TLS_PORT
# [28453], OUT [bench/out/wrk] for the raw wrk outputs and the table, PRIO
# [as root: "nice -n -15"], EDGE_ENV [""]: NAME=VALUE words for the edge's
# environment, e.g. "EDGESHIELD_CACHE_OFFHEAP_MIN_SIZE=0" to serve every
# body from the heap (copies) instead of memory files (sendfile).
#
# The server's CPU use during each run (from /proc/PID/stat, all its
# processes) is reported next to its figures: near 100% means the server was
# the bottleneck; well below it means wrk (core 1) was.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
REPEAT=${REPEAT:-3}
CASES=${CASES:-"1k 64k 1m tls-1k tls-hs tls-full"}
HS_CLIENTS=${HS_CLIENTS:-4}
EDGE_ENV=${EDGE_ENV:-}
ORIGIN_PORT=${ORIGIN_PORT:-28081}
EDGE_PORT=${EDGE_PORT:-28080}
EDGE_TLS_PORT=${EDGE_TLS_PORT:-28443}
ADMIN_PORT=${ADMIN_PORT:-29090}
NGINX_PORT=${NGINX_PORT:-28090}
NGINX_TLS_PORT=${NGINX_TLS_PORT:-28453}
CEILING_PORT=${CEILING_PORT:-28070}
OUT=${OUT:-$ROOT/bench/out/wrk}
# Servers and wrk run under this command prefix, the same for both servers.
# On a machine shared with other work, a request/response ping-pong between
# two pinned processes is dominated by wake-up latency behind the other
# runnable tasks (measured here at load 10: edge at 36% and wrk at 25% CPU,
# neither saturated). A high nice priority reduces that. Not SCHED_FIFO: a
# real-time wrk starved the loopback softirq thread on its core and never
# finished a 1 MiB run. Needs root (else: plain). PRIO="" disables it.
if [ -z "${PRIO+x}" ]; then
	if [ "$(id -u)" = 0 ]; then PRIO="nice -n -15"; else PRIO=""; fi
fi

for tool in wrk nginx taskset openssl curl; do
	command -v "$tool" >/dev/null || { echo "hits-vs-nginx.sh: $tool is required" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then
	echo "hits-vs-nginx.sh: needs 2 cores (server on core 0, wrk on core 1)" >&2
	exit 2
fi

# shellcheck source=bench/wrk/lib.sh
source "$ROOT/bench/wrk/lib.sh"


# cpu_ticks PID: "USER SYSTEM" clock ticks of PID and its direct children
# (nginx's master and worker).
cpu_ticks() {
	local u=0 s=0 p f
	for p in $1 $(pgrep -P "$1" || true); do
		f=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null) || continue
		u=$((u + ${f% *}))
		s=$((s + ${f#* }))
	done
	echo "$u $s"
}

for p in $ORIGIN_PORT $EDGE_PORT $EDGE_TLS_PORT $ADMIN_PORT $NGINX_PORT $NGINX_TLS_PORT $CEILING_PORT; do
	port_free "$p"
done
mkdir -p "$OUT"
rm -f "$OUT"/*.txt

make_cert

FLOOR_BODY=$(head -c 1024 /dev/zero | tr '\0' x)

log "demo origin on 127.0.0.1:$ORIGIN_PORT (core 1)"
start origin 1 "$EDGE_BIN" origin --listen "127.0.0.1:$ORIGIN_PORT"
wait_port "$ORIGIN_PORT" "$LAST_PID" origin

log "edgeshield on :$EDGE_PORT and https :$EDGE_TLS_PORT (core 0, GOMAXPROCS=1)"
mkdir -p "$TMP/edge"
fill bench/wrk/edge-tls.yaml.tmpl "$TMP/edge" "$EDGE_PORT" "$EDGE_TLS_PORT" >"$TMP/edge/edge.yaml"
# shellcheck disable=SC2086 # EDGE_ENV is a list of NAME=VALUE words
start edge 0 env GOMAXPROCS=1 $EDGE_ENV "$EDGE_BIN" run --config "$TMP/edge/edge.yaml"
EDGE_PID=$LAST_PID
wait_port "$EDGE_PORT" "$EDGE_PID" edge
wait_port "$EDGE_TLS_PORT" "$EDGE_PID" edge

log "nginx on :$NGINX_PORT and https :$NGINX_TLS_PORT (core 0, worker_processes 1)"
mkdir -p "$TMP/nginx/cache"
fill bench/wrk/nginx.conf.tmpl "$TMP/nginx" "$NGINX_PORT" "$NGINX_TLS_PORT" >"$TMP/nginx/nginx.conf"
# The worker may run as an unprivileged user: it must reach the cache and key.
chmod 755 "$TMP"
chmod -R a+rwX "$TMP/nginx"
chmod a+r "$TMP/key.pem"
start nginx 0 nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"
NGINX_PID=$LAST_PID
wait_port "$NGINX_PORT" "$NGINX_PID" nginx
wait_port "$NGINX_TLS_PORT" "$NGINX_PID" nginx

log "ceiling (bare fasthttp responder) on :$CEILING_PORT (core 0, GOMAXPROCS=1)"
go build -o "$TMP/ceiling" ./bench/wrk/ceiling
start ceiling 0 env GOMAXPROCS=1 "$TMP/ceiling" --listen "127.0.0.1:$CEILING_PORT"
CEILING_PID=$LAST_PID
wait_port "$CEILING_PORT" "$CEILING_PID" ceiling

declare -A URLPATH=([1k]=/bench/1k.bin [64k]=/bench/64k.bin [1m]=/bench/1m.bin [tls-1k]=/bench/1k.bin [tls-hs]=/bench/1k.bin [tls-full]=/bench/1k.bin)
# "floor" is a reference, not a contender: the same nginx answering a 1 KiB
# `return 200` from its configuration (no cache lookup, no file, no
# upstream): about the cheapest HTTP response this machine can produce, so
# it shows how much of a 1 KiB hit's cost is the kernel's TCP work.
declare -A PORT_OF=([edge]=$EDGE_PORT [nginx]=$NGINX_PORT [floor]=$NGINX_PORT [ceiling]=$CEILING_PORT)
declare -A TLSPORT_OF=([edge]=$EDGE_TLS_PORT [nginx]=$NGINX_TLS_PORT)
declare -A PID_OF=([edge]=$EDGE_PID [nginx]=$NGINX_PID [floor]=$NGINX_PID [ceiling]=$CEILING_PID)

url_of() { # SERVER CASE
	[ "$1" != floor ] || { echo "http://127.0.0.1:$NGINX_PORT/__floor-1k"; return; }
	case $2 in
	tls-*) echo "https://127.0.0.1:${TLSPORT_OF[$1]}${URLPATH[$2]}" ;;
	*) echo "http://127.0.0.1:${PORT_OF[$1]}${URLPATH[$2]}" ;;
	esac
}

# Warm both caches (two fetches each) and show that the next fetch is a hit.
log "warming: /bench/1k.bin /bench/64k.bin /bench/1m.bin on both"
for srv in edge nginx; do
	for path in /bench/1k.bin /bench/64k.bin /bench/1m.bin; do
		for scheme in http https; do
			if [ $scheme = http ]; then u=http://127.0.0.1:${PORT_OF[$srv]}$path; else u=https://127.0.0.1:${TLSPORT_OF[$srv]}$path; fi
			curl -sk -o /dev/null "$u"
			curl -sk -o /dev/null "$u"
			st=$(curl -sk -o /dev/null -D - "$u" | tr -d '\r' |
				awk -F': ' 'tolower($1)=="cache-status"||tolower($1)=="x-cache-status"{print $2}')
			log "  $srv $u -> ${st:-no cache header}"
		done
	done
done

# to_ms VALUE: wrk latency (850.00us, 1.20ms, 2.00s) in milliseconds.
to_ms() {
	awk -v v="$1" 'BEGIN{
		n=v; sub(/[a-z]+$/, "", n); u=v; sub(/^[0-9.]+/, "", u)
		f = (u=="us") ? 0.001 : (u=="s") ? 1000 : (u=="m") ? 60000 : 1
		printf "%.3f", n*f }'
}
# to_mib VALUE: wrk transfer/s (512.00KB, 1.20MB, 2.00GB) in MiB/s.
to_mib() {
	awk -v v="$1" 'BEGIN{
		n=v; sub(/[A-Z]+$/, "", n); u=v; sub(/^[0-9.]+/, "", u)
		f = (u=="B") ? 1/1048576 : (u=="KB") ? 1/1024 : (u=="GB") ? 1024 : 1
		printf "%.1f", n*f }'
}

HZ=$(getconf CLK_TCK)
WRK_CMDS=()

# cpu_figures "U0 S0" "U1 S1" NS REQUESTS: "CPU% USER_US SYS_US": the
# server's CPU share over NS nanoseconds, and its user and system CPU
# microseconds per request.
cpu_figures() {
	awk -v a="$1" -v b="$2" -v ns="$3" -v n="$4" -v hz="$HZ" 'BEGIN{
		split(a, x, " "); split(b, y, " ")
		u = (y[1] - x[1]) / hz; s = (y[2] - x[2]) / hz
		printf "%.0f %.2f %.2f\n", 100 * (u + s) / (ns / 1e9), (n > 0 ? 1e6 * u / n : 0), (n > 0 ? 1e6 * s / n : 0) }'
}

# run SERVER CASE REP: one wrk run; appends "rps p50 p99 mib cpu eff usr sys"
# (eff: requests per server CPU-second; usr, sys: CPU microseconds per
# request) to $TMP/SERVER-CASE.dat and keeps the raw output in $OUT.
run() {
	local srv=$1 c=$2 rep=$3 url raw t0 t1 s0 s1 rps p50 p99 tr cpu usr sys
	local -a extra=()
	if [ "$c" = tls-full ]; then
		run_full_handshakes "$srv" "$rep"
		return 0
	fi
	url=$(url_of "$srv" "$c")
	[ "$c" != tls-hs ] || extra=(-H "Connection: close")
	raw=$OUT/$c-$srv-$rep.txt
	local cmd=($PRIO taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency "${extra[@]}" "$url")
	[ "$rep" != 1 ] || WRK_CMDS+=("$(printf '%q ' "${cmd[@]}")")
	t0=$(cpu_ticks "${PID_OF[$srv]}")
	s0=$(date +%s%N)
	"${cmd[@]}" >"$raw" 2>&1 || { log "wrk failed: $(tail -n 3 "$raw")"; return 0; }
	s1=$(date +%s%N)
	t1=$(cpu_ticks "${PID_OF[$srv]}")
	rps=$(awk '/^Requests\/sec:/{print $2}' "$raw")
	p50=$(to_ms "$(awk '$1=="50%"{print $2}' "$raw")")
	p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$raw")")
	tr=$(to_mib "$(awk '/^Transfer\/sec:/{print $2}' "$raw")")
	read -r cpu usr sys < <(cpu_figures "$t0" "$t1" $((s1 - s0)) "$(awk '/ requests in /{print $1}' "$raw")")
	if grep -Eq 'Non-2xx|Socket errors' "$raw"; then
		log "  $srv $c #$rep: $(grep -E 'Non-2xx|Socket errors' "$raw" | tr -s ' ' | paste -sd';')"
	fi
	log "  $srv $c #$rep: ${rps} req/s p50 ${p50} ms p99 ${p99} ms ${tr} MiB/s server CPU ${cpu}% (${usr} µs user + ${sys} µs sys per request)"
	eff=$(awk -v r="$rps" -v c="$cpu" 'BEGIN{ if (c+0 > 0) printf "%.0f", r*100/c; else print 0 }')
	echo "$rps $p50 $p99 $tr $cpu $eff $usr $sys" >>"$TMP/$srv-$c.dat"
}

# run_full_handshakes SERVER REP: HS_CLIENTS parallel `openssl s_time -new`
# clients on core 1 (each connection a full TLS handshake, then closed);
# handshakes/s = their connections over the measured wall time.
run_full_handshakes() {
	local srv=$1 rep=$2 t0 t1 s0 s1 i total rps cpu usr sys eff secs=${DURATION%s}
	local -a pids=()
	local cmd=($PRIO taskset -c 1 openssl s_time -connect "127.0.0.1:${TLSPORT_OF[$srv]}" -new -time "$secs")
	[ "$rep" != 1 ] || WRK_CMDS+=("$(printf '%q ' "${cmd[@]}")  # x $HS_CLIENTS in parallel")
	t0=$(cpu_ticks "${PID_OF[$srv]}")
	s0=$(date +%s%N)
	for i in $(seq 1 "$HS_CLIENTS"); do
		"${cmd[@]}" >"$OUT/tls-full-$srv-$rep.$i.txt" 2>&1 &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || true; done
	s1=$(date +%s%N)
	t1=$(cpu_ticks "${PID_OF[$srv]}")
	total=$(cat "$OUT"/tls-full-"$srv"-"$rep".*.txt | awk '/connections in .* real seconds/{n+=$1} END{print n+0}')
	rps=$(awk -v n="$total" -v ns=$((s1 - s0)) 'BEGIN{printf "%.2f", n/(ns/1e9)}')
	read -r cpu usr sys < <(cpu_figures "$t0" "$t1" $((s1 - s0)) "$total")
	eff=$(awk -v r="$rps" -v c="$cpu" 'BEGIN{ if (c+0 > 0) printf "%.0f", r*100/c; else print 0 }')
	log "  $srv tls-full #$rep: $total full handshakes, ${rps}/s, server CPU ${cpu}%"
	echo "$rps - - - $cpu $eff $usr $sys" >>"$TMP/$srv-tls-full.dat"
}

# median SERVER CASE COLUMN
median() {
	local f=$TMP/$1-$2.dat
	[ -s "$f" ] || { echo "n/a"; return; }
	awk -v c="$3" '{print $c}' "$f" | sort -g | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'
}

for c in $CASES; do
	[ -n "${URLPATH[$c]:-}" ] || { echo "hits-vs-nginx.sh: unknown case $c" >&2; exit 2; }
	log "case $c: $REPEAT x (edge, nginx$([ "$c" != 1k ] || echo ', nginx return 200 reference, fasthttp ceiling')), $DURATION each, $CONNS connections"
	for rep in $(seq 1 "$REPEAT"); do
		run edge "$c" "$rep"
		run nginx "$c" "$rep"
		[ "$c" != 1k ] || run floor "$c" "$rep"
		[ "$c" != 1k ] || run ceiling "$c" "$rep"
	done
done

declare -A LABEL=([1k]="1 KiB hit" [64k]="64 KiB hit" [1m]="1 MiB hit"
	[tls-1k]="HTTPS 1 KiB hit (keep-alive)" [tls-hs]="HTTPS resumed handshakes + 1 KiB (wrk, Connection: close)"
	[tls-full]="HTTPS full handshakes (openssl s_time -new, $HS_CLIENTS clients)")
declare -A TARGET=([1k]=2 [64k]=1 [1m]=1 [tls-1k]=1.5 [tls-hs]= [tls-full]=)

{
	echo "| case | edge req/s | nginx req/s | edge/nginx | target | edge p50 / p99 ms | nginx p50 / p99 ms | edge MiB/s | nginx MiB/s | edge CPU | nginx CPU | edge / nginx req per CPU-s | CPU µs per request, user + sys: edge / nginx |"
	echo "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	for c in $CASES; do
		er=$(median edge "$c" 1)
		nr=$(median nginx "$c" 1)
		ratio=$(awk -v a="$er" -v b="$nr" 'BEGIN{ if (b+0 > 0) printf "%.2f", a/b; else print "n/a" }')
		tgt=${TARGET[$c]}
		if [ -z "$tgt" ]; then
			verdict="(reported)"
		elif awk -v r="$ratio" -v t="$tgt" 'BEGIN{exit !(r+0 >= t)}'; then
			verdict="≥ ${tgt}× met"
		else
			verdict="≥ ${tgt}× MISSED"
		fi
		ee=$(median edge "$c" 6)
		ne=$(median nginx "$c" 6)
		eratio=$(awk -v a="$ee" -v b="$ne" 'BEGIN{ if (b+0 > 0) printf "%.2f", a/b; else print "n/a" }')
		printf '| %s | %.0f | %.0f | %s | %s | %s / %s | %s / %s | %s | %s | %s%% | %s%% | %s / %s = %s | %s + %s / %s + %s |\n' \
			"${LABEL[$c]}" "$er" "$nr" "$ratio" "$verdict" \
			"$(median edge "$c" 2)" "$(median edge "$c" 3)" \
			"$(median nginx "$c" 2)" "$(median nginx "$c" 3)" \
			"$(median edge "$c" 4)" "$(median nginx "$c" 4)" \
			"$(median edge "$c" 5)" "$(median nginx "$c" 5)" "$ee" "$ne" "$eratio" \
			"$(median edge "$c" 7)" "$(median edge "$c" 8)" "$(median nginx "$c" 7)" "$(median nginx "$c" 8)"
	done
	if [ -s "$TMP/floor-1k.dat" ]; then
		fr=$(median floor 1k 1)
		nr=$(median nginx 1k 1)
		echo
		awk -v f="$fr" -v n="$nr" -v fu="$(median floor 1k 7)" -v fs="$(median floor 1k 8)" \
			-v es="$(median edge 1k 8)" -v eu="$(median edge 1k 7)" 'BEGIN{
			printf "Reference, 1 KiB: the same nginx answering `return 200` from memory (no cache lookup, no file) made %.0f req/s = %.2f× nginx proxy_cache, ", f, f / n
			printf "at %s µs user + %s µs sys per request. The ≥ 2× target allows %.2f µs per request in all (1e6 / (2 × %.0f)); ", fu, fs, 1e6 / (2 * n), n
			printf "the edge spends %s µs in the kernel alone (%s µs user).\n", es, eu }'
	fi
	if [ -s "$TMP/ceiling-1k.dat" ]; then
		awk -v c="$(median ceiling 1k 1)" -v e="$(median edge 1k 1)" -v cu="$(median ceiling 1k 7)" -v cs="$(median ceiling 1k 8)" 'BEGIN{
			printf "\nCeiling, 1 KiB: a bare fasthttp responder (bench/wrk/ceiling: the headers and body of a hit, from memory) made %.0f req/s ", c
			printf "at %s µs user + %s µs sys per request; edge / ceiling = %.2f (goal ≥ 0.9).\n", cu, cs, e / c }'
		printf 'Per run, edge / ceiling:'
		paste -d' ' "$TMP/edge-1k.dat" "$TMP/ceiling-1k.dat" | awk '{printf " %.2f", $1 / $9} END{print ""}'
	fi
	echo
	echo "Medians of $REPEAT alternating runs each (every column's median taken on its own)."
	echo "Servers pinned to core 0 (edge: GOMAXPROCS=1; nginx: worker_processes 1), wrk and the idle origin on core 1."
	echo "CPU = the server's user+system CPU time over the run's wall time (100% = core 0 saturated);"
	echo "req per CPU-s = requests/s divided by that CPU share: the cost per request, which other load on the machine skews less."
	echo "Servers and wrk ran under \"${PRIO:-normal scheduling}\"; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
	echo
	echo "Commands (SERVER = edge or nginx; edge ports $EDGE_PORT/$EDGE_TLS_PORT, nginx $NGINX_PORT/$NGINX_TLS_PORT):"
	echo
	echo '```'
	echo "taskset -c 1 $EDGE_BIN origin --listen 127.0.0.1:$ORIGIN_PORT"
	echo "$PRIO taskset -c 0 env GOMAXPROCS=1 ${EDGE_ENV:+$EDGE_ENV }$EDGE_BIN run --config edge.yaml   # bench/wrk/edge-tls.yaml.tmpl filled in"
	echo "$PRIO taskset -c 0 nginx -p DIR -c DIR/nginx.conf -e DIR/error.log      # bench/wrk/nginx.conf.tmpl filled in"
	for cmd in "${WRK_CMDS[@]}"; do echo "$cmd"; done
	echo '```'
} | tee "$OUT/table.md"
