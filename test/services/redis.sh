# Redis for the dedupe index's tests (store/cache/redis, test/remotecache):
# Debian's redis-server, on 127.0.0.1 only, no persistence, as
#   one server         6379         PIER_TEST_REDIS=127.0.0.1:6379
#   a 3-node cluster   7001-7003    PIER_TEST_REDIS_CLUSTER=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
#   a sentinel         26379, watching a master on 6380, named "pier"
#                                   PIER_TEST_REDIS_SENTINEL=pier@127.0.0.1:26379
# and PIER_TEST_REDIS_SERVER, the redis-server binary, for tests that run
# (and kill) a server of their own.

redis_install() {
	local missing=() pkg
	for pkg in redis-server redis-tools; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
	done
	((${#missing[@]} == 0)) && return 0
	local sudo=()
	((EUID == 0)) || sudo=(sudo -n)
	printf 'setup: installing %s\n' "${missing[*]}" >&2
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		{ "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

# redis_node PORT DIR [ARGS...]: one redis-server in the background.
redis_node() {
	local port="$1" dir="$2"
	shift 2
	mkdir -p "$dir"
	redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
		--protected-mode no --logfile "$dir/redis.log" "$@" &
	started $!
	wait_tcp 127.0.0.1 "$port" 20
}

redis_start() {
	command -v redis-server >/dev/null || { log "redis-server is missing: run make deps"; return 1; }
	local base="$PIER_SERVICES_DIR/redis" port
	redis_node 6379 "$base/single"

	for port in 7001 7002 7003; do
		redis_node "$port" "$base/cluster-$port" --cluster-enabled yes --cluster-config-file "nodes-$port.conf" --cluster-node-timeout 5000
	done
	redis-cli --cluster create 127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003 --cluster-replicas 0 --cluster-yes >"$base/cluster-create.log" 2>&1 ||
		{ log "redis cluster create failed: $(tail -3 "$base/cluster-create.log")"; return 1; }
	local deadline=$((SECONDS + 20))
	until redis-cli -p 7001 cluster info 2>/dev/null | grep -q 'cluster_state:ok'; do
		((SECONDS < deadline)) || { log "the redis cluster is not ok after 20 s"; return 1; }
		sleep 0.2
	done

	redis_node 6380 "$base/sentinel-master"
	mkdir -p "$base/sentinel"
	printf '%s\n' 'port 26379' 'bind 127.0.0.1' 'protected-mode no' "dir $base/sentinel" \
		'sentinel monitor pier 127.0.0.1 6380 1' 'sentinel down-after-milliseconds pier 5000' >"$base/sentinel/sentinel.conf"
	redis-server "$base/sentinel/sentinel.conf" --sentinel --logfile "$base/sentinel/redis.log" &
	started $!
	wait_tcp 127.0.0.1 26379 20

	export PIER_TEST_REDIS=127.0.0.1:6379
	export PIER_TEST_REDIS_CLUSTER=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
	export PIER_TEST_REDIS_SENTINEL=pier@127.0.0.1:26379
	PIER_TEST_REDIS_SERVER="$(command -v redis-server)"
	export PIER_TEST_REDIS_SERVER
}
