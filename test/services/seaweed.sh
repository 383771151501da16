# seaweed: a second real S3 server, SeaweedFS (`weed mini`: master, volume,
# filer and S3 gateway in one process, every port on 127.0.0.1), its S3 API
# on 127.0.0.1:8333 with the same test credentials and bucket as s3.sh.
# `make e2e-seaweed` runs the s3 driver's tests and the S3 suites again on
# it: versitygw (s3.sh) stores each object as a file, SeaweedFS as chunks
# in volumes behind a filer, as a site's S3 server does. What it does not
# do as S3 does, and what pier makes of it, is in the README (On S3).
#
# Exports for the tests:
#   PIER_TEST_SEAWEED_ENDPOINT  http://127.0.0.1:8333

SEAWEED_VERSION=v0.0.0-20261109003541-7506e5f91cd6
SEAWEED_PORT=8333
SEAWEED_ACCESS_KEY=pier-test-access
SEAWEED_SECRET_KEY=pier-test-secret-key-not-secret
SEAWEED_BUCKET=pier-test

# seaweed_install builds weed into bin/tools (several minutes cold on two
# cores). `go install module@version` refuses a module whose go.mod has
# replace directives, as SeaweedFS's has: it is built as the main module,
# from a copy of its source (the module cache is read-only).
seaweed_install() {
	local bin="$PIER_TOOLS_DIR/weed" stamp="$PIER_TOOLS_DIR/.weed-version" dir src
	if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$SEAWEED_VERSION" ]]; then
		return 0
	fi
	printf 'services: building SeaweedFS %s into %s\n' "$SEAWEED_VERSION" "$PIER_TOOLS_DIR" >&2
	mkdir -p "$PIER_TOOLS_DIR"
	dir="$(cd / && "${GO:-go}" mod download -json "github.com/seaweedfs/seaweedfs@$SEAWEED_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
	[[ -d "$dir" ]] || { printf 'services: no source of SeaweedFS %s\n' "$SEAWEED_VERSION" >&2; return 1; }
	src="$(mktemp -d)"
	cp -r "$dir/." "$src"
	chmod -R u+w "$src"
	(cd "$src" && "${GO:-go}" build -o "$bin" ./weed) || { rm -rf "$src"; return 1; }
	rm -rf "$src"
	printf '%s\n' "$SEAWEED_VERSION" >"$stamp"
}

seaweed_start() {
	local dir="$PIER_SERVICES_DIR/seaweed" deadline code
	mkdir -p "$dir/data"
	printf '{"identities":[{"name":"pier","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
		"$SEAWEED_ACCESS_KEY" "$SEAWEED_SECRET_KEY" >"$dir/s3.json"
	"$PIER_TOOLS_DIR/weed" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
		-s3.port="$SEAWEED_PORT" -s3.config="$dir/s3.json" -bucket="$SEAWEED_BUCKET" \
		-admin.ui=false >"$dir/log" 2>&1 &
	started $!
	wait_tcp 127.0.0.1 "$SEAWEED_PORT" 120
	# The bucket is made once the filer is up: wait until it answers.
	deadline=$((SECONDS + 60))
	until code="$(curl -sS -o /dev/null -w '%{http_code}' -I \
		--aws-sigv4 "aws:amz:us-east-1:s3" --user "$SEAWEED_ACCESS_KEY:$SEAWEED_SECRET_KEY" \
		-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "http://127.0.0.1:$SEAWEED_PORT/$SEAWEED_BUCKET")" && [[ "$code" == 200 ]]; do
		((SECONDS < deadline)) || { log "seaweed: the bucket answers ${code:-nothing} after 60 s; see $dir/log"; return 1; }
		sleep 0.5
	done
	export PIER_TEST_SEAWEED_ENDPOINT="http://127.0.0.1:$SEAWEED_PORT"
}
