# dynalite (npm, Apache-2.0, in memory, no native build), DynamoDB's
# stand-in for the dedupe index's tests, on 127.0.0.1:4567:
#   PIER_TEST_DYNAMODB=http://127.0.0.1:4567
# It has no transactions and no TTL; pier's DynamoDB index uses neither.
# Installed under bin/tools/dynalite/, not globally. The AWS variables
# give the SDK credentials (dynalite checks none) and keep it from ever
# asking an EC2 metadata endpoint for some.

DYNALITE_VERSION=4.0.0

dynalite_install() {
	local dir="$PIER_TOOLS_DIR/dynalite"
	[[ -x "$dir/node_modules/.bin/dynalite" && -f "$dir/.version-$DYNALITE_VERSION" ]] && return 0
	command -v npm >/dev/null || { printf 'setup: npm is missing (apt-get install npm)\n' >&2; return 1; }
	printf 'setup: installing dynalite %s into %s\n' "$DYNALITE_VERSION" "$dir" >&2
	mkdir -p "$dir"
	(cd "$dir" && npm install --no-save --no-audit --no-fund --prefix "$dir" "dynalite@$DYNALITE_VERSION" >/dev/null)
	touch "$dir/.version-$DYNALITE_VERSION"
}

dynalite_start() {
	local bin="$PIER_TOOLS_DIR/dynalite/node_modules/.bin/dynalite"
	[[ -x "$bin" ]] || { log "dynalite is missing: run make deps"; return 1; }
	"$bin" --host 127.0.0.1 --port 4567 >"$PIER_SERVICES_DIR/dynalite.log" 2>&1 &
	started $!
	wait_tcp 127.0.0.1 4567 20
	export PIER_TEST_DYNAMODB=http://127.0.0.1:4567
	export AWS_ACCESS_KEY_ID=pier AWS_SECRET_ACCESS_KEY=pier AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
}
