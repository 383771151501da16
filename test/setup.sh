#!/usr/bin/env bash
# setup.sh installs what the end-to-end suites under test/ drive pier with:
# Debian packages (skopeo, and for test/cross and test/packaging:
# qemu-user-static, systemd's systemd-analyze, strace; for test/powercut:
# qemu-system-x86 and friends), the pinned Go tools (crane, oras, the OCI
# conformance suite, nfpm) built into bin/tools/ of the repo, and the Debian
# kernel test/powercut boots, extracted into bin/powercut/kernel/.
#
# Idempotent and fast when everything is present: packages are installed only
# when dpkg lacks them, and the Go tools are rebuilt only when
# test/tools/go.mod, test/tools/go.sum or the Go version changed.
#
# The tool versions live in one place: the `tool` directives and requirements
# of test/tools/go.mod. To bump one:
#   cd test/tools && go get -tool MODULE/PATH@VERSION && go mod tidy
set -euo pipefail

# Debian packages the suites need. Add one by adding its name. podman:
# test/auth logs in and pushes with it (as root, vfs storage, no daemon).
# qemu-system-x86 … kmod: test/powercut's VM (see fetch_kernel for its kernel).
# qemu-user-static … strace: test/cross runs the ARM builds with
# qemu-*-static by name (no binfmt needed); test/packaging uses systemd's
# systemd-analyze and systemd-sysusers, and strace against the unit's
# syscall filter; test/systemd uses iproute2 for a network namespace.
APT_PACKAGES=(skopeo podman qemu-system-x86 qemu-utils busybox-static e2fsprogs cpio kmod
	qemu-user-static systemd strace iproute2)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
kernel_dir="$repo/bin/powercut/kernel"
tools_mod="$here/tools"
tools_bin="$repo/bin/tools"
GO="${GO:-go}"

log() { printf 'setup: %s\n' "$*" >&2; }

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

install_packages() {
	local missing=() pkg
	for pkg in "${APT_PACKAGES[@]}"; do
		installed "$pkg" || missing+=("$pkg")
	done
	((${#missing[@]} == 0)) && return 0

	local sudo=()
	if ((EUID != 0)); then
		if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
			sudo=(sudo -n)
		else
			log "missing Debian packages: ${missing[*]}"
			log "install them as root: apt-get install -y --no-install-recommends ${missing[*]}"
			exit 1
		fi
	fi
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# A fresh machine has no package lists; update once, only when installing.
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	for pkg in "${missing[@]}"; do
		installed "$pkg" || { log "$pkg did not install"; exit 1; }
	done
}

# build_tools builds every `tool` of test/tools/go.mod into bin/tools/, named
# after the last element of its package path (crane, oras, conformance).
build_tools() {
	local stamp_file="$tools_bin/.stamp" stamp want=()
	stamp="$(cat "$tools_mod/go.mod" "$tools_mod/go.sum" | sha256sum | cut -d' ' -f1) $("$GO" env GOVERSION)"
	mapfile -t want < <(cd "$tools_mod" && "$GO" list -f '{{.ImportPath}}' tool)
	((${#want[@]} > 0)) || { log "no tool directives in $tools_mod/go.mod"; exit 1; }

	local fresh=1 pkg
	[[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]] || fresh=0
	for pkg in "${want[@]}"; do
		[[ -x "$tools_bin/${pkg##*/}" ]] || fresh=0
	done
	((fresh)) && return 0

	log "building ${want[*]##*/} into $tools_bin"
	mkdir -p "$tools_bin"
	# -mod=readonly: a go.mod/go.sum out of step is an error, not a silent
	# change of the pinned versions.
	(cd "$tools_mod" && CGO_ENABLED=0 "$GO" build -mod=readonly -trimpath -o "$tools_bin/" "${want[@]}")
	printf '%s\n' "$stamp" >"$stamp_file"
}

# fetch_kernel extracts the Debian kernel test/powercut boots into
# bin/powercut/kernel/<package>/ (boot/vmlinuz-*, lib/modules/*): the
# package linux-image-amd64 depends on, asked of apt each time rather than
# written here, so a kernel update is picked up. Nothing is installed.
fetch_kernel() {
	local pkg
	pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ && !n++ {print $2}' || true)"
	if [[ -z "$pkg" ]]; then
		# No package lists yet (a fresh machine whose packages were all there).
		"${sudo[@]}" apt-get update -qq
		pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ && !n++ {print $2}')"
	fi
	[[ -n "$pkg" ]] || { log "apt-cache names no kernel for linux-image-amd64"; exit 1; }
	[[ -n "$(compgen -G "$kernel_dir/$pkg/boot/vmlinuz-*")" ]] && return 0

	log "fetching $pkg for test/powercut into $kernel_dir"
	local tmp
	tmp="$(mktemp -d)"
	# apt-get download, run as root, writes as the _apt user.
	chmod 777 "$tmp"
	if ! (cd "$tmp" && apt-get download -qq "$pkg" 2>/dev/null); then
		"${sudo[@]}" apt-get update -qq # stale lists: the mirror moved on
		(cd "$tmp" && apt-get download -qq "$pkg")
	fi
	rm -rf "$kernel_dir"
	mkdir -p "$kernel_dir"
	dpkg-deb -x "$tmp"/"$pkg"_*.deb "$kernel_dir/$pkg.partial"
	mv "$kernel_dir/$pkg.partial" "$kernel_dir/$pkg"
	rm -rf "$tmp"
}

sudo=()
if ((EUID != 0)) && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
	sudo=(sudo -n)
fi

install_packages
build_tools
fetch_kernel

# The real servers of test/services/ install themselves (test/services.sh).
PIER_TOOLS_DIR="$tools_bin"
shopt -s nullglob
for f in "$here"/services/*.sh; do
	# shellcheck source=/dev/null
	source "$f"
	"$(basename "$f" .sh)_install"
done
