// Command pier is an OCI registry for edge devices: one static binary that
// serves OCI Image Layouts over the Distribution Spec.
//
//	pier serve [CONFIG]   serve (no CONFIG: the embedded default config)
//	pier verify CONFIG    check a config; exit 1 naming the bad key
//	pier gc CONFIG        one garbage collection pass, offline
//	pier gc --dry-run CONFIG   what a pass would remove, and why
//	pier scrub CONFIG     one scrub pass, offline; exit 1 on damage
//	pier export CONFIG REPO[:TAG] DIR   write an OCI layout
//	pier import [CONFIG] DIR REPO       add an OCI layout to a repository
//	pier htpasswd FILE USER             add a user or set its password
//	pier version          print the version
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/pier-oci/pier/store/driver/local"
)

// version is stamped by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  pier serve [CONFIG]   serve the registry (no CONFIG: built-in default, 127.0.0.1:5000, ./data)
  pier verify CONFIG    check a configuration file
  pier gc CONFIG        run one garbage collection pass, retention included (pier must not be serving the root)
  pier gc --dry-run CONFIG
                        print what a pass would remove now, and retention's verdict on every tag; removes nothing
  pier scrub CONFIG     re-hash every blob once; exit 1 if anything is corrupt or missing
  pier export CONFIG REPO[:TAG|@DIGEST] DIR
                        write a repository (or one image) as an OCI layout, e.g. to a USB stick
  pier import [CONFIG] DIR REPO
                        add an OCI layout's content and tags to a repository (pier must not be serving the root)
  pier htpasswd FILE USER
                        add USER to an htpasswd file (bcrypt), or set its password; the password is asked for,
                        or read from standard input (echo "$PASSWORD" | pier htpasswd FILE USER)
  pier version          print the version
`

// run dispatches a subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		if len(rest) > 1 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		path := ""
		if len(rest) == 1 {
			path = rest[0]
		}
		return serve(path, stderr)
	case "verify":
		if len(rest) != 1 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		return verify(rest[0], stdout, stderr)
	case "gc", "scrub":
		if cmd == "gc" && len(rest) == 2 && rest[0] == "--dry-run" {
			return gcDryRun(rest[1], stdout, stderr)
		}
		if len(rest) != 1 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		if cmd == "gc" {
			return gcCommand(rest[0], stdout, stderr)
		}
		return scrubCommand(rest[0], stdout, stderr)
	case "export":
		if len(rest) != 3 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		return exportCommand(rest[0], rest[1], rest[2], stdout, stderr)
	case "import":
		switch len(rest) {
		case 2:
			return importCommand("", rest[0], rest[1], stdout, stderr)
		case 3:
			return importCommand(rest[0], rest[1], rest[2], stdout, stderr)
		}
		fmt.Fprint(stderr, usage)
		return 2
	case "htpasswd":
		if len(rest) != 2 {
			fmt.Fprint(stderr, usage)
			return 2
		}
		return htpasswdCommand(rest[0], rest[1], os.Stdin, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "pier: unknown command %q\n%s", cmd, usage)
		return 2
	}
}

func versionString() string {
	rev := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = " " + s.Value[:12]
			}
		}
	}
	v := fmt.Sprintf("pier %s%s %s %s/%s", version, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if local.SyncDisabled() {
		v += " (TEST BUILD pier_nosync: never fsyncs, loses acknowledged writes on power loss)"
	}
	return v
}
