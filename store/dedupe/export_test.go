package dedupe

import "time"

// LinkDuplicate exposes the pass's decision step to the package's
// external tests.
var LinkDuplicate = (*Deduper).linkDuplicate

// Timings the tests shorten; each returns what puts the old value back.
func SetWriteTimeout(d time.Duration) func() {
	old := writeTimeout
	writeTimeout = d
	return func() { writeTimeout = old }
}

func SetCompleteCheckInterval(d time.Duration) func() {
	old := completeCheckInterval
	completeCheckInterval = d
	return func() { completeCheckInterval = old }
}

const (
	LookupTimeout    = lookupTimeout
	CloseTimeout     = closeTimeout
	MaxQueuedChanges = maxQueuedChanges
)
