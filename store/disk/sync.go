//go:build !pier_nosync

package disk

// skipSync is false in every real build; see nosync.go.
const skipSync = false
