package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/pier-oci/pier/store/driver"
)

// fail maps an error of the SDK to the contract's, wrapped with what was
// being done: op and the key. ctx is the caller's: when it ended, its error
// is what the caller gets; when only the driver's own deadline passed, the
// backend is unavailable.
func fail(ctx context.Context, op, key string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s %s: %w", op, key, ctx.Err())
	}
	if kind := kindOf(err); kind != nil {
		return fmt.Errorf("%s %s: %w (%v)", op, key, kind, err)
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}

// kindOf classifies err, nil when it is none of the contract's kinds.
func kindOf(err error) error {
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NoSuchKey", "NotFound", "NoSuchUpload":
			return driver.ErrNotFound
		case "PreconditionFailed", "ConditionalRequestConflict":
			return driver.ErrConflict
		case "NoSuchBucket":
			// A bucket that is not there (yet) is a backend that is not
			// ready, not a missing object.
			return driver.ErrUnavailable
		case "QuotaExceeded", "NoSpaceLeftOnDevice", "XMinioStorageFull", "StorageFull":
			return driver.ErrNoSpace
		case "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed":
			return driver.ErrUnavailable
		}
	}
	var resp *awshttp.ResponseError
	if errors.As(err, &resp) {
		switch code := resp.HTTPStatusCode(); {
		case code == 404:
			return driver.ErrNotFound
		case code == 412 || code == 409:
			return driver.ErrConflict
		case code == 507:
			return driver.ErrNoSpace
		case code >= 500:
			return driver.ErrUnavailable
		}
	}
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// The driver's own deadline (the caller's was checked first), or a
		// stalled body cut by the watchdog.
		return driver.ErrUnavailable
	case errors.As(err, &netErr), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, syscall.EPIPE):
		return driver.ErrUnavailable
	}
	// A request that could not be sent (no response at all).
	var send *smithyhttp.RequestSendError
	if errors.As(err, &send) {
		return driver.ErrUnavailable
	}
	return nil
}
