package main

import (
	"fmt"
	"io"

	"github.com/pier-oci/pier/configs"
)

// verify checks a config file: exit 0 with its warnings, or exit 1 with the
// reason naming the key. A config that serve would refuse (it asks for a
// feature pier cannot honour safely yet) fails too: verify answers "will
// pier serve this?".
func verify(path string, stdout, stderr io.Writer) int {
	cfg, warnings, err := configs.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "pier: %v\n", err)
		return 1
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if refusals := cfg.Refusals(); len(refusals) > 0 {
		for _, r := range refusals {
			fmt.Fprintf(stderr, "pier: %s\n", r)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: valid\n", path)
	return 0
}
