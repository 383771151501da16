package bench

import (
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

const binaryTarget = 20 * MiB

// BenchmarkBinarySize checks the binary under test ($PIER_BIN, which
// `make build` builds with CGO_ENABLED=0 -trimpath -ldflags "-s -w"): its
// size against the 20 MiB target, and that it is static (no ELF
// interpreter, no shared libraries) and stripped, so it runs on any Linux
// of its architecture.
func BenchmarkBinarySize(b *testing.B) {
	bin := pierproc.Binary(b)
	var size int64
	for range b.N {
		fi, err := os.Stat(bin)
		if err != nil {
			b.Fatal(err)
		}
		size = fi.Size()
	}
	record(b, measure{
		name: "binary size", value: float64(size) / MiB, unit: "MiB",
		limit: binaryTarget / MiB, limitName: "target", metric: "x_target",
	}, ratioAtMost(1))

	facts, static, err := elfFacts(bin)
	if err != nil {
		b.Fatal(err)
	}
	note(b, "binary static", facts, static)
}

// elfFacts describes how bin was built and linked; ok is whether it is
// static, stripped and built without cgo.
func elfFacts(bin string) (string, bool, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	var facts []string
	ok := true
	fact := func(good bool, yes, no string) {
		if good {
			facts = append(facts, yes)
		} else {
			facts = append(facts, no)
			ok = false
		}
	}
	interp := false
	for _, p := range f.Progs {
		interp = interp || p.Type == elf.PT_INTERP
	}
	fact(!interp, "no PT_INTERP", "has PT_INTERP (dynamically linked)")
	libs, err := f.ImportedLibraries()
	if err != nil && err != elf.ErrNoSymbols {
		return "", false, err
	}
	fact(len(libs) == 0, "no DT_NEEDED", "needs "+strings.Join(libs, ","))
	fact(f.Section(".symtab") == nil, "stripped", "has .symtab (not stripped)")
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "", false, fmt.Errorf("build info of %s: %w", bin, err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	fact(settings["CGO_ENABLED"] == "0", "CGO_ENABLED=0", "CGO_ENABLED="+settings["CGO_ENABLED"])
	fact(settings["-trimpath"] == "true", "-trimpath", "no -trimpath")
	facts = append(facts, info.GoVersion, f.Machine.String())
	return strings.Join(facts, ", "), ok, nil
}
