#!/usr/bin/env bash
# rss.sh: the cache's memory bound (issue 2 "Speed and memory").
#
#   bash bench/wrk/rss.sh          # from the repository root
#
# Starts the demo origin and an edge with cache.max_bytes=$MAX (256MiB), then
# fills the cache with FILL_FACTOR (3) x MAX of distinct cacheable /dyn
# objects whose sizes are spread log-uniformly over 1 KiB .. 1 MiB (fetched
# by PAR (8) parallel curl processes, every object once, so each is a miss
# stored by the edge). The edge's memory is sampled every 0.5 s during the
# fill and for SETTLE (10) seconds after, and checked against the issue's
# bound:
#
#   memory <= 1.3 x max_bytes + 64 MiB      (256 MiB -> 396.8 MiB)
#
# memory = VmRSS (from /proc/PID/status) + the size of the memory files
# (memfd) the edge holds open: bodies of cache.offheap_min_size and more live
# in those, outside the Go heap, and are never mapped, so VmRSS alone would
# not count them. Their sizes are read from the files themselves
# (/proc/PID/fd), not from the edge's own figures. PASS needs the peak seen
# during and after the fill within the bound (VmHWM, the kernel's high-water
# mark of VmRSS, is printed too). The admin /stats body is printed at the
# end for the cache's own byte count.
#
# Environment: EDGE_BIN [bin/edgeshield, built when unset], MAX_MIB [256],
# FILL_FACTOR [3], PAR [8], SETTLE [10], ORIGIN_PORT [28281], EDGE_PORT
# [28280], ADMIN_PORT [29290], EXTRA_ENV [""] (e.g. "GOMEMLIMIT=300MiB" to
# try a runtime setting; it is printed with the result).
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD

MAX_MIB=${MAX_MIB:-256}
FILL_FACTOR=${FILL_FACTOR:-3}
PAR=${PAR:-8}
SETTLE=${SETTLE:-10}
ORIGIN_PORT=${ORIGIN_PORT:-28281}
EDGE_PORT=${EDGE_PORT:-28280}
ADMIN_PORT=${ADMIN_PORT:-29290}
EXTRA_ENV=${EXTRA_ENV:-}

# shellcheck source=bench/wrk/lib.sh
source "$ROOT/bench/wrk/lib.sh"

for p in $ORIGIN_PORT $EDGE_PORT $ADMIN_PORT; do
	port_free "$p"
done

"$EDGE_BIN" origin --listen "127.0.0.1:$ORIGIN_PORT" >"$TMP/origin.log" 2>&1 &
PIDS+=($!)
wait_port "$ORIGIN_PORT" $! origin

# shellcheck disable=SC2086 # EXTRA_ENV is a list of NAME=VALUE words
env $EXTRA_ENV EDGESHIELD_CACHE_MAX_BYTES="${MAX_MIB}MiB" EDGESHIELD_LOG_LEVEL=warn \
	"$EDGE_BIN" run --origin "http://127.0.0.1:$ORIGIN_PORT" \
	--listen "127.0.0.1:$EDGE_PORT" --admin "127.0.0.1:$ADMIN_PORT" >"$TMP/edge.log" 2>&1 &
EDGE_PID=$!
PIDS+=("$EDGE_PID")
wait_port "$EDGE_PORT" "$EDGE_PID" edge

status_kib() { awk -v k="$1:" '$1==k{print $2}' "/proc/$EDGE_PID/status"; }
# memfd_kib: total size of the memory files the edge holds open, in KiB
# (rounded up to 4 KiB pages, as the kernel allocates them).
memfd_kib() {
	find "/proc/$EDGE_PID/fd" -lname '/memfd:*' -exec stat -L -c %s {} + 2>/dev/null |
		awk '{k += int(($1 + 4095) / 4096) * 4} END{print k+0}'
}

# The object list: distinct paths, sizes log-uniform in [1 KiB, 1 MiB], until
# their sum reaches FILL_FACTOR x MAX (fixed seed: the same list every run).
TARGET=$((FILL_FACTOR * MAX_MIB * 1048576))
awk -v target="$TARGET" -v base="http://127.0.0.1:$EDGE_PORT" 'BEGIN{
	srand(42); sum = 0
	for (i = 0; sum < target && i < 1000000; i++) {
		size = int(1024 * exp(rand() * log(1024)))
		sum += size
		printf "%s/dyn/rss-%d?size=%d&h.Cache-Control=public%%2C%%20max-age%%3D3600\n", base, i, size
	}
	printf "%d objects, %.0f MiB in total\n", i, sum/1048576 > "/dev/stderr"
}' >"$TMP/urls" 2>"$TMP/urls.summary"
log "edge pid $EDGE_PID, cache.max_bytes=${MAX_MIB}MiB${EXTRA_ENV:+, $EXTRA_ENV}; fill: $(cat "$TMP/urls.summary"), $PAR clients"

# Sampler: VmRSS every 0.5 s until told to stop (bounded: 30 min).
: >"$TMP/samples"
(
	for _ in $(seq 1 3600); do
		[ -e "$TMP/stop" ] && break
		r=$(status_kib VmRSS)
		m=$(memfd_kib)
		echo "$(date +%s.%N) $((r + m)) $r $m" >>"$TMP/samples"
		sleep 0.5
	done
) &
SAMPLER=$!

t0=$(date +%s)
# PAR curl processes, each with its share of the list as a config file (one
# keep-alive connection per process; every body to /dev/null).
awk -v par="$PAR" -v dir="$TMP" '{ f = dir "/part." (NR % par); print "url = \"" $0 "\"\noutput = /dev/null" > f }' "$TMP/urls"
CURLS=()
for part in "$TMP"/part.*; do
	curl -s -K "$part" -w '%{http_code}\n' >"$part.codes" &
	CURLS+=($!)
done
for pid in "${CURLS[@]}"; do wait "$pid" || true; done
cat "$TMP"/part.*.codes >"$TMP/codes"
t1=$(date +%s)
log "fill done in $((t1 - t0)) s: status codes $(sort "$TMP/codes" | uniq -c | tr -s ' ' | paste -sd,)"
rss_fill=$(awk 'max<$2{max=$2} END{print max+0}' "$TMP/samples")
log "settling $SETTLE s"
sleep "$SETTLE"
touch "$TMP/stop"
wait "$SAMPLER"

rss_peak=$(awk 'max<$2{max=$2} END{print max+0}' "$TMP/samples")
# The split at the peak: VmRSS and memory files.
peak_split=$(awk 'max<$2{max=$2; r=$3; m=$4} END{printf "%.1f + %.1f", r/1024, m/1024}' "$TMP/samples")
rss_end=$(($(status_kib VmRSS) + $(memfd_kib)))
hwm=$(status_kib VmHWM)
stats=$(curl -s "http://127.0.0.1:$ADMIN_PORT/stats" || echo "(no /stats)")

bound_kib=$(awk -v m="$MAX_MIB" 'BEGIN{printf "%d", (1.3*m + 64) * 1024}')
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
verdict=PASS
[ "$rss_peak" -le "$bound_kib" ] || verdict=FAIL

echo "| cache.max_bytes | filled with | bound 1.3 x max + 64 MiB | peak memory during fill | peak memory incl. ${SETTLE}s after (VmRSS + memfd) | memory at end | VmHWM | result |"
echo "|---:|---|---:|---:|---:|---:|---:|---|"
printf '| %s MiB | %s | %s MiB | %s MiB | %s MiB (%s) | %s MiB | %s MiB | %s |\n' \
	"$MAX_MIB" "$(cat "$TMP/urls.summary")" "$(mib "$bound_kib")" "$(mib "$rss_fill")" \
	"$(mib "$rss_peak")" "$peak_split" "$(mib "$rss_end")" "$(mib "$hwm")" "$verdict"
echo
echo "Edge: env ${EXTRA_ENV:+$EXTRA_ENV }EDGESHIELD_CACHE_MAX_BYTES=${MAX_MIB}MiB $EDGE_BIN run --origin http://127.0.0.1:$ORIGIN_PORT --listen 127.0.0.1:$EDGE_PORT --admin 127.0.0.1:$ADMIN_PORT"
echo "Fill: $PAR parallel 'curl -s -K part.N' (each part: url = .../dyn/rss-N..., output = /dev/null; urls: /dyn/rss-N?size=S&h.Cache-Control=public, max-age=3600, S log-uniform 1 KiB..1 MiB, seed 42)"
echo
echo "Admin /stats after the fill:"
echo
echo '```'
echo "$stats"
echo '```'
[ $verdict = PASS ]
