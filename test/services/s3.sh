# s3: a real S3 server, versitygw with its posix backend (a directory of
# files under test/results/services/s3), on 127.0.0.1:7070 with fixed test
# credentials and one bucket. Sourced by test/services.sh and test/setup.sh.
#
# Exports for the tests:
#   PIER_TEST_S3_ENDPOINT    http://127.0.0.1:7070
#   PIER_TEST_S3_BUCKET      the bucket (empty at the start of a run)
#   PIER_TEST_S3_ACCESS_KEY  PIER_TEST_S3_SECRET_KEY  its credentials
#   PIER_TEST_S3_REGION      the region the server answers for
#   PIER_TEST_S3_VERSITYGW   the server's binary: fault tests start their own
#                            on a free port, to stop and restart it at will

S3_VERSITYGW_VERSION=v1.8.0
S3_PORT=7070
S3_ACCESS_KEY=pier-test-access
S3_SECRET_KEY=pier-test-secret-key-not-secret
S3_BUCKET=pier-test
S3_REGION=us-east-1

# s3_install builds versitygw into bin/tools (about 75 s cold on two cores).
# The version is in the binary's name stamp, so a bump rebuilds it.
s3_install() {
	local bin="$PIER_TOOLS_DIR/versitygw" stamp="$PIER_TOOLS_DIR/.versitygw-version"
	if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$S3_VERSITYGW_VERSION" ]]; then
		return 0
	fi
	printf 'services: building versitygw %s into %s\n' "$S3_VERSITYGW_VERSION" "$PIER_TOOLS_DIR" >&2
	mkdir -p "$PIER_TOOLS_DIR"
	GOBIN="$PIER_TOOLS_DIR" CGO_ENABLED=0 "${GO:-go}" install "github.com/versity/versitygw/cmd/versitygw@$S3_VERSITYGW_VERSION"
	printf '%s\n' "$S3_VERSITYGW_VERSION" >"$stamp"
}

s3_start() {
	local dir="$PIER_SERVICES_DIR/s3"
	mkdir -p "$dir/data"
	"$PIER_TOOLS_DIR/versitygw" --access "$S3_ACCESS_KEY" --secret "$S3_SECRET_KEY" \
		--region "$S3_REGION" --port "127.0.0.1:$S3_PORT" --quiet \
		posix "$dir/data" >"$dir/log" 2>&1 &
	started $!
	wait_tcp 127.0.0.1 "$S3_PORT" 30
	# CreateBucket, signed by curl (SigV4 wants the payload's hash too).
	local empty=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 code
	code="$(curl -sS -o "$dir/create-bucket" -w '%{http_code}' -X PUT \
		--aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
		-H "x-amz-content-sha256: $empty" "http://127.0.0.1:$S3_PORT/$S3_BUCKET")"
	if [[ "$code" != 200 ]]; then
		log "s3: CreateBucket answered $code: $(cat "$dir/create-bucket")"
		return 1
	fi

	export PIER_TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
	export PIER_TEST_S3_BUCKET="$S3_BUCKET"
	export PIER_TEST_S3_ACCESS_KEY="$S3_ACCESS_KEY"
	export PIER_TEST_S3_SECRET_KEY="$S3_SECRET_KEY"
	export PIER_TEST_S3_REGION="$S3_REGION"
	export PIER_TEST_S3_VERSITYGW="$PIER_TOOLS_DIR/versitygw"
}
