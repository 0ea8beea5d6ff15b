#!/usr/bin/env bash
# bench/compare.sh — `make bench`: Edgeshield against nginx (proxy_cache) and
# Varnish (malloc storage), configured equivalently, on the same demo origin.
#
#   bash bench/compare.sh [--quick] [--servers "edgeshield nginx varnish"]
#
# Layout: demo origin 127.0.0.1:18081, Edgeshield 18080 (admin 19090),
# nginx 18082, Varnish 18083. The servers under test share core 0 (one
# nginx worker, one Varnish child, Edgeshield with GOMAXPROCS=1); the load
# generator (`edgeshield bench`) and the origin run on core 1. Servers that
# are not installed, or that do not come up, are skipped with a message.
#
# Scenarios, for each server:
#   hit-<size>-max  closed-loop maximum throughput (--max-throughput, BENCH_CONNS
#                   connections) on a cached 1 KiB / 64 KiB / 1 MiB object.
#                   This is the harness's own closed-loop mode (same client code,
#                   same HTTP/1.1 keep-alive behaviour everywhere); when wrk is
#                   installed the 1 KiB case is also measured with wrk and printed
#                   under the table as a cross-check of the generator (BENCH_WRK=0: skip).
#   hit-1k-rate     open loop at BENCH_RATE req/s on the cached 1 KiB object:
#                   the latency comparison (closed loops hide stalls).
#   zipf            open loop at BENCH_ZIPF_RATE req/s over BENCH_ZIPF_OBJECTS
#                   4 KiB /dyn objects with Zipf(1) popularity, cold at start:
#                   hit ratio and origin requests.
#   crowd           BENCH_CLIENTS concurrent clients for each of BENCH_CROWD_OBJECTS
#                   new 64 KiB objects while the origin takes 200 ms
#                   (X-Origin-Delay): origin requests per object (1 = coalesced).
# BENCH_ROUNDS=N repeats everything N times (fresh servers and objects each
# round) and the table keeps the median run of each case: use it on a shared
# or noisy machine.
# Output: one comparison table on stdout, bench/out/report.{html,json} and the
# per-run JSON in bench/out/runs/. Every process started is stopped on exit.
set -euo pipefail

SCRIPT=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/.."

BIN=${BENCH_BIN:-./bin/edgeshield}
OUT=${BENCH_OUT:-bench/out}
SERVERS=${BENCH_SERVERS:-edgeshield nginx varnish}
DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNS:-64}
RATE=${BENCH_RATE:-2000}
ZIPF_RATE=${BENCH_ZIPF_RATE:-2000}
ZIPF_OBJECTS=${BENCH_ZIPF_OBJECTS:-10000}
CLIENTS=${BENCH_CLIENTS:-200}
CROWD_OBJECTS=${BENCH_CROWD_OBJECTS:-5}
ROUNDS=${BENCH_ROUNDS:-1} # >1: repeat everything, the table keeps the median run of each case
WRK=${BENCH_WRK:-auto} # auto: cross-check hit-1k-max with wrk when installed; 0: never
ORIGIN_PORT=18081 EDGE_PORT=18080 ADMIN_PORT=19090 NGINX_PORT=18082 VARNISH_PORT=18083

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SCRIPT"; }
while [ $# -gt 0 ]; do
	case $1 in
	--quick) DURATION=3s ZIPF_OBJECTS=2000 CLIENTS=50; shift ;;
	--servers) SERVERS=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "compare.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
done

log() { echo "== $*" >&2; }

if [ ! -x "$BIN" ]; then
	echo "compare.sh: $BIN not found; run 'make build' (or set BENCH_BIN)" >&2
	exit 2
fi

TMP=$(mktemp -d /tmp/edgeshield-bench.XXXXXX)
chmod 755 "$TMP" # nginx workers and the Varnish child drop privileges when started as root
PIDS=()

# cleanup stops every process this script started: TERM, a bounded wait,
# then KILL for whatever is left.
cleanup() {
	local pid i
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for i in $(seq 1 50); do
		local alive=0
		for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
		[ $alive = 0 ] && break
		sleep 0.2
	done
	for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# pin CORE CMD… runs CMD on CORE when taskset exists and there are 2+ cores.
PIN=1
if ! command -v taskset >/dev/null || [ "$(nproc)" -lt 2 ]; then
	log "taskset or a second core missing: processes are not pinned"
	PIN=0
fi
pin() {
	local core=$1
	shift
	if [ $PIN = 1 ]; then taskset -c "$core" "$@"; else "$@"; fi
}

# start NAME CORE CMD… starts CMD in the background, pinned to CORE ("-":
# not pinned), output in $TMP/NAME.log, pid in LAST_PID. CMD must be an
# external command so that the pid is the server's own (taskset and env
# exec it), which is what cleanup kills; and the pid is recorded in this
# shell, never in a $(…) subshell.
start() {
	local name=$1 core=$2
	shift 2
	if [ $PIN = 1 ] && [ "$core" != - ]; then
		taskset -c "$core" "$@" >"$TMP/$name.log" 2>&1 &
	else
		"$@" >"$TMP/$name.log" 2>&1 &
	fi
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}

# port_free PORT fails when something already listens on 127.0.0.1:PORT.
port_free() {
	if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
		echo "compare.sh: 127.0.0.1:$1 is already in use (another benchmark still running?)" >&2
		return 1
	fi
}

# stop PID stops one server (TERM, bounded wait, KILL) so that the next
# one has core 0 and the memory to itself.
stop() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for i in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# wait_port PORT PID: until 127.0.0.1:PORT accepts (10 s) or PID exits.
wait_port() {
	local port=$1 pid=$2 i
	for i in $(seq 1 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# bench runs the load generator on core 1; a failed run is reported and the
# comparison goes on (the table shows what was measured).
bench() { pin 1 "$BIN" bench "$@" || log "run failed (exit $?): bench $*"; }

mkdir -p "$OUT/runs"
rm -f "$OUT"/runs/*.json "$OUT/report.json" "$OUT/report.html"

log "demo origin on 127.0.0.1:$ORIGIN_PORT"
for p in $ORIGIN_PORT $EDGE_PORT $ADMIN_PORT $NGINX_PORT $VARNISH_PORT; do port_free "$p" || exit 1; done
start origin 1 "$BIN" origin --listen "127.0.0.1:$ORIGIN_PORT"
if ! wait_port $ORIGIN_PORT "$LAST_PID"; then
	echo "compare.sh: the demo origin did not start:" >&2
	cat "$TMP/origin.log" >&2
	exit 1
fi
ORIGIN=http://127.0.0.1:$ORIGIN_PORT

start_edgeshield() {
	start edgeshield 0 env GOMAXPROCS=1 "$BIN" run --origin "$ORIGIN" \
		--listen "127.0.0.1:$EDGE_PORT" --admin "127.0.0.1:$ADMIN_PORT"
	wait_port $EDGE_PORT "$LAST_PID"
}

start_nginx() {
	command -v nginx >/dev/null || { log "nginx not installed"; return 1; }
	local dir=$TMP/nginx-$round # a fresh (cold) disk cache every round
	mkdir -p "$dir/cache"
	chmod -R 777 "$dir"
	sed -e "s|@TMP@|$dir|g" -e "s|@PORT@|$NGINX_PORT|g" -e "s|@ORIGIN@|127.0.0.1:$ORIGIN_PORT|g" \
		bench/compare/nginx.conf >"$dir/nginx.conf"
	start nginx 0 nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
	wait_port $NGINX_PORT "$LAST_PID"
}

start_varnish() {
	command -v varnishd >/dev/null || { log "varnishd not installed"; return 1; }
	local dir=$TMP/varnish-$round
	mkdir -p "$dir"
	chmod 777 "$dir"
	sed -e "s|@ORIGIN_HOST@|127.0.0.1|g" -e "s|@ORIGIN_PORT@|$ORIGIN_PORT|g" \
		bench/compare/default.vcl >"$dir/default.vcl"
	chmod 644 "$dir/default.vcl"
	# thread_pool_min=50 (default 100) per pool: fewer idle threads on the one
	# pinned core; the pools still grow to thread_pool_max under load.
	start varnish 0 varnishd -F -a "127.0.0.1:$VARNISH_PORT" -f "$dir/default.vcl" \
		-s malloc,1G -n "$dir/work" -p thread_pool_min=50
	wait_port $VARNISH_PORT "$LAST_PID"
}

CC=$(printf 'h.Cache-Control=%s' 'public%2C%20max-age%3D3600')
RAN=()
WRK_ROWS=()
for round in $(seq 1 "$ROUNDS"); do
for srv in $SERVERS; do
	case $srv in
	edgeshield) port=$EDGE_PORT ;;
	nginx) port=$NGINX_PORT ;;
	varnish) port=$VARNISH_PORT ;;
	*) echo "compare.sh: unknown server $srv" >&2; exit 2 ;;
	esac
	log "round $round/$ROUNDS: starting $srv on 127.0.0.1:$port"
	LAST_PID=
	if ! "start_$srv"; then
		log "$srv skipped: it did not come up (log below)"
		tail -n 20 "$TMP/$srv.log" >&2 2>/dev/null || true
		[ -z "$LAST_PID" ] || stop "$LAST_PID"
		continue
	fi
	base=http://127.0.0.1:$port
	srv_pid=$LAST_PID
	[ "$round" != 1 ] || RAN+=("$srv")
	r=r$round

	log "$srv: warming /bench objects"
	bench crowd --clients 2 --url "$base/bench/1k.bin" --url "$base/bench/64k.bin" --url "$base/bench/1m.bin" --quiet
	for size in 1k 64k 1m; do
		log "$srv: hit throughput $size ($CONNS connections, $DURATION)"
		bench steady --max-throughput --workers "$CONNS" --duration "$DURATION" --url "$base/bench/$size.bin" \
			--name "$srv hit-$size-max" --json "$OUT/runs/$srv-hit-$size-max-$r.json" --quiet
		# The wrk cross-check follows the 1 KiB run at once, on the same server state.
		[ $size = 1k ] || continue
		if [ "$WRK" != 0 ] && command -v wrk >/dev/null; then
			log "$srv: wrk cross-check of hit-1k-max"
			rps=$(pin 1 wrk -t1 -c"$CONNS" -d"$DURATION" "$base/bench/1k.bin" 2>&1 | awk '/^Requests\/sec/ {print $2}')
			WRK_ROWS+=("$srv hit-1k-max round $round: wrk ${rps:-failed} req/s")
		fi
	done
	log "$srv: 1k at $RATE req/s (open loop)"
	bench steady --rate "$RATE" --duration "$DURATION" --url "$base/bench/1k.bin" \
		--name "$srv hit-1k-$RATE/s" --json "$OUT/runs/$srv-hit-1k-rate-$r.json" --slo 'p99<250ms,errors=0' --quiet
	log "$srv: zipf mix over $ZIPF_OBJECTS objects at $ZIPF_RATE req/s"
	bench steady --rate "$ZIPF_RATE" --duration "$DURATION" --zipf "$ZIPF_OBJECTS" \
		--base "$base/dyn/zipf-$r-%d?size=4096&$CC" --origin-counts "$ORIGIN/__origin/counts" \
		--name "$srv zipf" --json "$OUT/runs/$srv-zipf-$r.json" --quiet
	log "$srv: flash crowd, $CLIENTS clients x $CROWD_OBJECTS new objects"
	urls=()
	for i in $(seq 1 "$CROWD_OBJECTS"); do urls+=(--url "$base/dyn/crowd-$srv-$r-$i?size=65536&$CC"); done
	bench crowd --clients "$CLIENTS" "${urls[@]}" --header "X-Origin-Delay: 200ms" --timeout 10s \
		--origin-counts "$ORIGIN/__origin/counts" --name "$srv crowd" --json "$OUT/runs/$srv-crowd-$r.json" --quiet
	log "stopping $srv"
	stop "$srv_pid"
done
done

if [ ${#RAN[@]} = 0 ]; then
	echo "compare.sh: no server could be benchmarked" >&2
	exit 1
fi
echo
echo "Comparison (servers on core 0, load generator on core 1; hit-*-max: closed loop, others open loop;"
echo "median of $ROUNDS round(s): by req/s for closed loop, by p99 for open loop)"
"$BIN" bench compare --median --title "Edgeshield vs nginx vs Varnish" --json "$OUT/report.json" --html "$OUT/report.html" \
	$(for case in hit-1k-max hit-64k-max hit-1m-max hit-1k-rate zipf crowd; do
		for srv in "${RAN[@]}"; do
			ls "$OUT/runs/$srv-$case"-r*.json 2>/dev/null
		done
	done)
if [ ${#WRK_ROWS[@]} -gt 0 ]; then
	echo
	echo "wrk cross-check (same connections and duration, closed loop, wrk's own client on core 1):"
	printf '  %s\n' "${WRK_ROWS[@]}"
fi
echo
echo "crowd rows: 'origin reqs' over $CROWD_OBJECTS objects (1 per object = fully coalesced)"
echo "report: $OUT/report.html  json: $OUT/report.json"
