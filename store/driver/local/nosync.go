//go:build pier_nosync

package local

// skipSync is set by the pier_nosync build tag, for the power-cut harness
// only: a pier built with it acknowledges writes it never forced to the
// disk, and the harness must catch it losing them. Never ship it.
const skipSync = true

// SyncDisabled reports a test build (pier_nosync) that never fsyncs.
func SyncDisabled() bool { return skipSync }
