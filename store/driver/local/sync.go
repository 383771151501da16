//go:build !pier_nosync

package local

// skipSync is false in every real build; see nosync.go.
const skipSync = false

// SyncDisabled reports a test build (pier_nosync) that never fsyncs.
func SyncDisabled() bool { return skipSync }
