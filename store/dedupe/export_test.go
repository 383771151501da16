package dedupe

// LinkDuplicate exposes the pass's decision step to the package's
// external tests.
var LinkDuplicate = (*Deduper).linkDuplicate
