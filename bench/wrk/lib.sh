# lib.sh: shared helpers of the bench/wrk scripts (sourced, not run).
# Expects ROOT (the repository root). Sets EDGE_BIN (built when unset), TMP
# (a temp dir removed on exit) and PIDS (processes stopped on exit: TERM,
# then KILL after 5 s).
# shellcheck shell=bash

SCRIPT=$(basename "$0")

if [ -z "${EDGE_BIN:-}" ]; then
	make -s -C "$ROOT" build >&2
	EDGE_BIN=$ROOT/bin/edgeshield
fi

TMP=$(mktemp -d "/tmp/edgeshield-${SCRIPT%.sh}.XXXXXX")
PIDS=()
cleanup() {
	local pid i
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do
		for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '# %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# port_free PORT: fails (with a message) when 127.0.0.1:PORT is in use.
port_free() {
	if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
		echo "$SCRIPT: 127.0.0.1:$1 is already in use" >&2
		return 1
	fi
}

# wait_port PORT PID NAME: until 127.0.0.1:PORT accepts (10 s) or PID exits;
# then exits with NAME's log ($TMP/NAME.log).
wait_port() {
	local port=$1 pid=$2 name=$3 i
	for i in $(seq 1 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
		if ! kill -0 "$pid" 2>/dev/null; then break; fi
		sleep 0.1
	done
	echo "$SCRIPT: $name did not listen on $port; its log:" >&2
	cat "$TMP/$name.log" >&2 || true
	exit 1
}

# start NAME CORE CMD...: CMD must exec the server (nice, taskset and env
# do), so that $! is the server's own pid. Runs under $PRIO, but the origin.
start() {
	local name=$1 core=$2 prio=$PRIO
	shift 2
	[ "$name" != origin ] || prio=""
	$prio taskset -c "$core" "$@" >"$TMP/$name.log" 2>&1 &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}

# make_cert: one self-signed ECDSA P-256 certificate for every server, in
# $TMP/cert.pem and $TMP/key.pem.
make_cert() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-keyout "$TMP/key.pem" -out "$TMP/cert.pem" -subj /CN=bench.edgeshield.test \
		-addext "subjectAltName=DNS:bench.edgeshield.test,IP:127.0.0.1" 2>/dev/null
}

# fill TEMPLATE DIR PORT TLS_PORT: a config template with its placeholders
# filled in (FLOOR_BODY, ADMIN_PORT, ORIGIN_PORT from the caller).
fill() {
	sed -e "s|@DIR@|$2|g" -e "s|@PORT@|$3|g" -e "s|@TLS_PORT@|$4|g" \
		-e "s|@ADMIN_PORT@|$ADMIN_PORT|g" -e "s|@ORIGIN@|127.0.0.1:$ORIGIN_PORT|g" \
		-e "s|@CERT@|$TMP/cert.pem|g" -e "s|@KEY@|$TMP/key.pem|g" -e "s|@FLOOR_BODY@|${FLOOR_BODY:-x}|g" "$1"
}
