package store

import "testing"

func TestTagOf(t *testing.T) {
	for ref, want := range map[string]string{
		"v1":                       "v1",
		"example.com/app:v1":       "v1",
		"example.com:5000/app:1.0": "1.0",
		"example.com:5000/app":     "",
		"not a tag":                "",
	} {
		got, ok := tagOf(descWithRef(ref))
		if got != want || ok != (want != "") {
			t.Errorf("tagOf(%q) = %q,%v want %q", ref, got, ok, want)
		}
	}
}
