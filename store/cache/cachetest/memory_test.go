package cachetest

import (
	"testing"

	"github.com/pier-oci/pier/store/cache"
)

func TestMemory(t *testing.T) {
	Run(t, Backend{
		New:   func(t *testing.T) cache.Cache { return NewMemory() },
		Empty: func(t *testing.T, c cache.Cache) { c.(*Memory).Empty() },
	})
}
