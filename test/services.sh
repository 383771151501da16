#!/usr/bin/env bash
# services.sh runs a command with the real servers the tests talk to (Redis,
# an S3 server, DynamoDB's stand-in), each started once for the whole run on
# 127.0.0.1 and stopped by its pid when the command ends, however it ends:
#
#   test/services.sh make vet unit e2e
#
# Every file test/services/<name>.sh describes one service with two
# functions, so a new server is a new file and nothing else:
#   <name>_install  installs it (apt, npm, go build into bin/tools/); called
#                   by test/setup.sh, idempotent and fast when present
#   <name>_start    starts it in the background, calls `started PID` for
#                   each process, waits until it answers, and exports the
#                   PIER_TEST_* variables the tests read
# Tests that need a service read its variables; run outside this script
# they fail with a message naming the script, never pass silently.
#
# When PIER_TEST_SERVICES=up the servers are already running (a caller
# started them) and the command runs as it is.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
export PIER_SERVICES_DIR="$repo/test/results/services" # data and logs of the servers
export PIER_TOOLS_DIR="$repo/bin/tools"

if [[ "${PIER_TEST_SERVICES:-}" == up ]]; then
	exec "$@"
fi

log() { printf 'services: %s\n' "$*" >&2; }

pids=()
started() { pids+=("$1"); }

stop_all() {
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
}
trap stop_all EXIT

# wait_tcp HOST PORT SECONDS: until something accepts connections there.
wait_tcp() {
	local deadline=$((SECONDS + $3))
	until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
		((SECONDS < deadline)) || { log "nothing answers on $1:$2 after $3 s"; return 1; }
		sleep 0.2
	done
}

rm -rf "$PIER_SERVICES_DIR"
mkdir -p "$PIER_SERVICES_DIR"
shopt -s nullglob
for f in "$here"/services/*.sh; do
	# shellcheck source=/dev/null
	source "$f"
done
for f in "$here"/services/*.sh; do
	name="$(basename "$f" .sh)"
	log "starting $name"
	"${name}_start"
done
export PIER_TEST_SERVICES=up

status=0
"$@" || status=$?
exit "$status"
