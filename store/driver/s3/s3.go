// Package s3 is the driver for an S3 bucket (AWS S3, or any S3 server:
// MinIO, versitygw, SeaweedFS), with zot's keys, so a bucket zot wrote is
// read by pier and the reverse.
//
// # Objects
//
// A key is the object <prefix><key>; small objects are written whole with
// PutObject, which S3 makes visible atomically, and ReplaceFile is a
// conditional PutObject (If-Match, If-None-Match). A Version is the ETag.
// S3 has no directories: List shows the prefixes below a key as
// directories, and Prune has nothing to do.
//
// # Uploads
//
// An upload at key K is a small JSON record at K (its segments, its length
// and the state the caller saves with it) and its data in segment objects
// below the driver's private prefix .pier/s3/uploads/K/. A writer holds at
// most one chunk (chunksize) in memory and writes it as a segment when it
// fills; Close writes what is left, however small, and then the record, with
// If-Match on the record's ETag, so two writers on one upload (two replicas)
// cannot both win. Every segment but the last is at least S3's part minimum:
// a writer that resumes after a smaller last segment reads it back into its
// buffer (at most one chunk) and writes it again with what follows. So the
// segments are, in order, the parts of a multipart upload: Commit makes dst
// a multipart upload whose parts are copied server-side from the segments
// (UploadPartCopy, in parallel) and whose last part is the writer's buffer,
// and completing it makes dst appear whole. An upload that fits in one chunk
// never leaves memory before Commit and is written once, with PutObject. No
// key the caller names ever holds partial content.
//
// # Faults
//
// Every call to S3 has a deadline (Config.Timeout); a reader's body that
// stalls for that long is cut. Errors map to the contract's: a missing key
// is driver.ErrNotFound, a failed condition driver.ErrConflict, and a
// connection error, a timeout or a 5xx driver.ErrUnavailable.
package s3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/logging"
	smithymiddleware "github.com/aws/smithy-go/middleware"

	"github.com/pier-oci/pier/store/budget"
	"github.com/pier-oci/pier/store/driver"
)

// Limits of the S3 API and defaults, as zot (through distribution's s3-aws
// driver) has them, so a zot config means the same to pier.
const (
	// MinChunkSize is S3's smallest part but the last.
	MinChunkSize = 5 << 20
	// MaxChunkSize is S3's largest part.
	MaxChunkSize = 5 << 30
	// maxParts is S3's largest part number.
	maxParts = 10000

	DefaultChunkSize                   = 2 * MinChunkSize
	DefaultMultipartCopyChunkSize      = 32 << 20
	DefaultMultipartCopyMaxConcurrency = 100
	DefaultMultipartCopyThresholdSize  = 32 << 20
	// DefaultTimeout bounds every S3 call, and every stall of a body being
	// read: long enough for a chunk over a slow uplink, short enough that a
	// dead server is noticed well within a client's patience.
	DefaultTimeout = 30 * time.Second
)

// Config is how to reach a bucket, from zot's storageDriver keys (named in
// the comments); configs validates them.
type Config struct {
	Region         string // region
	Bucket         string // bucket
	Endpoint       string // regionendpoint: a URL, or host[:port] with Secure deciding the scheme
	ForcePathStyle bool   // forcepathstyle
	// Prefix is prepended to every key: "" or a path ending in "/". zot's
	// rootdirectory "/zot" is the prefix "zot/zot/" (configs.S3Config's
	// KeyPrefix says why).
	Prefix     string
	Secure     bool   // secure: https to an Endpoint given without a scheme
	SkipVerify bool   // skipverify
	AccessKey  string // accesskey; with SecretKey, else the AWS default chain
	SecretKey  string // secretkey
	// SessionToken goes with AccessKey and SecretKey (sessiontoken).
	SessionToken string

	ChunkSize                   int64 // chunksize
	MultipartCopyChunkSize      int64 // multipartcopychunksize
	MultipartCopyMaxConcurrency int   // multipartcopymaxconcurrency
	MultipartCopyThresholdSize  int64 // multipartcopythresholdsize

	StorageClass string // storageclass; "" or STANDARD sends none
	ObjectACL    string // objectacl; "" or private sends none
	Encrypt      bool   // encrypt: server-side encryption, AES256 or with KeyID aws:kms
	KeyID        string // keyid
	UserAgent    string // useragent, added to the SDK's
	Accelerate   bool   // accelerate
	DualStack    bool   // usedualstack
	LogLevel     string // loglevel: off, debug, debugwithsigning, debugwithhttpbody, debugwithrequestretries, debugwithrequesterrors

	// Buffers, when set, bounds the memory of the writers' chunk buffers
	// (a chunk, ChunkSize bytes, per upload being filled), across every
	// driver that shares it: a writer past it waits for another to write
	// its chunk. nil: each writer takes its own.
	Buffers *budget.Budget

	// Timeout bounds each call (pier's key requesttimeout); 0 is
	// DefaultTimeout.
	Timeout  time.Duration
	ReadOnly bool
	// Logger gets the SDK's log (LogLevel) and the clean-ups that failed
	// after an operation succeeded; nil discards them.
	Logger *slog.Logger
}

// Driver is a bucket (below a prefix) as a driver.Driver.
type Driver struct {
	s3     *s3.Client
	cfg    Config
	bucket string
	prefix string
	log    *slog.Logger
	// touchByCopy: the server keeps LastModified on a copy onto itself.
	touchByCopy atomic.Bool
	// free keeps chunk buffers for reuse, as many as the budget lets
	// writers hold at once: a chunk freed is the next one filled, not
	// garbage for the collector to find (at 10 MiB a chunk, the heap's
	// peak is mostly that garbage).
	free chan []byte
	// canStream: the endpoint is plain http, so a blob's body can be
	// spliced to a client (OpenStream).
	canStream bool
}

var (
	_ driver.Driver     = (*Driver)(nil)
	_ driver.Toucher    = (*Driver)(nil)
	_ driver.Redirector = (*Driver)(nil)
	_ driver.Streamer   = (*Driver)(nil)
)

// privateDir holds what the driver keeps for itself (upload segments); its
// keys are refused and List and Walk do not show it.
const privateDir = ".pier/s3"

// New makes a driver for the bucket. It does not call S3: a bucket that
// cannot be reached shows in the first call's error (ErrUnavailable), so a
// registry can start and say so.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3: no bucket")
	}
	if cfg.Prefix != "" && (!driver.ValidKey(strings.TrimSuffix(cfg.Prefix, "/")) || !strings.HasSuffix(cfg.Prefix, "/")) {
		return nil, fmt.Errorf("s3: prefix %q is not a clean relative path ending in /", cfg.Prefix)
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.MultipartCopyChunkSize == 0 {
		cfg.MultipartCopyChunkSize = DefaultMultipartCopyChunkSize
	}
	if cfg.MultipartCopyMaxConcurrency == 0 {
		cfg.MultipartCopyMaxConcurrency = DefaultMultipartCopyMaxConcurrency
	}
	if cfg.MultipartCopyThresholdSize == 0 {
		cfg.MultipartCopyThresholdSize = DefaultMultipartCopyThresholdSize
	}
	if cfg.ChunkSize < MinChunkSize || cfg.ChunkSize > MaxChunkSize {
		return nil, fmt.Errorf("s3: chunk size %d is not between %d and %d", cfg.ChunkSize, MinChunkSize, int64(MaxChunkSize))
	}
	if cfg.MultipartCopyChunkSize < MinChunkSize || cfg.MultipartCopyChunkSize > MaxChunkSize {
		return nil, fmt.Errorf("s3: multipart copy chunk size %d is not between %d and %d", cfg.MultipartCopyChunkSize, MinChunkSize, int64(MaxChunkSize))
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	region := cfg.Region
	if region == "" {
		region = "us-east-1" // S3 servers other than AWS take any
	}

	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(region),
		awsconfig.WithHTTPClient(httpClient(cfg)),
		// The SDK retries throttling, 5xx and connection errors with
		// backoff, within each call's deadline.
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 3 })
		}),
	}
	if cfg.AccessKey != "" || cfg.SecretKey != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)))
	}
	mode, err := logMode(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	if mode != 0 {
		opts = append(opts, awsconfig.WithClientLogMode(mode), awsconfig.WithLogger(sdkLogger{log}))
	}
	// The default chain (environment, shared files, IMDS) is read here but
	// not called until a request needs credentials.
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3: load AWS configuration: %w", err)
	}

	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(endpointURL(cfg.Endpoint, cfg.Secure))
		}
		o.UsePathStyle = cfg.ForcePathStyle
		o.UseAccelerate = cfg.Accelerate
		o.UseDualstack = cfg.DualStack //nolint:staticcheck // zot's usedualstack
		// No Expect: 100-continue: the body would wait a second for an
		// answer some proxies and servers never send.
		o.ContinueHeaderThresholdBytes = -1
		// The store hashes every byte with sha256 itself; the SDK's
		// checksums are computed only where S3 requires one.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		if cfg.UserAgent != "" {
			o.APIOptions = append(o.APIOptions, awsmiddleware.AddUserAgentKey(cfg.UserAgent))
		}
		// Bodies are not hashed with sha256 for the signature (a second
		// pass over every byte, on each side, next to the store's own):
		// each carries a CRC32 the server checks instead (withCRC), and
		// the store verifies the content's digest.
		o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware, unsignedFirst)
	})

	keep := 4
	if cfg.Buffers != nil {
		// As many as may be held at once, so that every buffer given back
		// is kept (a mapped one is never unmapped: see newBuffer).
		keep = max(1, int(cfg.Buffers.Limit()/cfg.ChunkSize)) + 1
	}
	return &Driver{s3: client, cfg: cfg, bucket: cfg.Bucket, prefix: cfg.Prefix, log: log, free: make(chan []byte, keep),
		canStream: cfg.Endpoint != "" && !cfg.Accelerate && strings.HasPrefix(endpointURL(cfg.Endpoint, cfg.Secure), "http://")}, nil
}

// unsignedFirst marks every payload unsigned before the SDK's checksum
// step runs. Over plain http that step otherwise hashes each body with
// sha256 next to its CRC32, and the request is signed with that hash
// (the swap above only applies where nothing set one): a pass over every
// byte on each side, a third of pier's CPU in a push.
func unsignedFirst(stack *smithymiddleware.Stack) error {
	return stack.Finalize.Add(smithymiddleware.FinalizeMiddlewareFunc("pier:UnsignedPayload",
		func(ctx context.Context, in smithymiddleware.FinalizeInput, next smithymiddleware.FinalizeHandler) (smithymiddleware.FinalizeOutput, smithymiddleware.Metadata, error) {
			return next.HandleFinalize(v4.SetPayloadHash(ctx, unsignedPayload), in)
		}), smithymiddleware.Before)
}

// unsignedPayload is SigV4's x-amz-content-sha256 for a body not signed.
const unsignedPayload = "UNSIGNED-PAYLOAD"

// httpClient bounds the connection set-up; each call bounds the rest (a
// response-header timeout would cut a body that socket buffers took at once
// and a slow link still drains). It is the SDK's buildable client, so that
// AWS_CA_BUNDLE still applies.
func httpClient(cfg Config) *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = 5 * time.Second; d.KeepAlive = 30 * time.Second }).
		WithTransportOptions(func(t *http.Transport) {
			t.TLSHandshakeTimeout = 10 * time.Second
			t.MaxIdleConnsPerHost = 64
			if cfg.SkipVerify {
				if t.TLSClientConfig == nil {
					t.TLSClientConfig = &tls.Config{}
				}
				t.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // the user's choice (skipverify)
			}
		})
}

// endpointURL gives an endpoint without a scheme the one secure says, as
// distribution's driver did.
func endpointURL(endpoint string, secure bool) string {
	if strings.Contains(endpoint, "://") {
		return endpoint
	}
	if secure {
		return "https://" + endpoint
	}
	return "http://" + endpoint
}

// logMode maps distribution's loglevel names onto the SDK's log modes.
func logMode(level string) (aws.ClientLogMode, error) {
	switch strings.ToLower(level) {
	case "", "off":
		return 0, nil
	case "debug":
		return aws.LogRequest | aws.LogResponse, nil
	case "debugwithsigning":
		return aws.LogRequest | aws.LogResponse | aws.LogSigning, nil
	case "debugwithhttpbody":
		return aws.LogRequestWithBody | aws.LogResponseWithBody, nil
	case "debugwithrequestretries":
		return aws.LogRequest | aws.LogResponse | aws.LogRetries, nil
	case "debugwithrequesterrors":
		return aws.LogRequest | aws.LogResponse | aws.LogRetries | aws.LogDeprecatedUsage, nil
	}
	return 0, fmt.Errorf("s3: log level %q is not off, debug, debugwithsigning, debugwithhttpbody, debugwithrequestretries or debugwithrequesterrors", level)
}

// sdkLogger sends the SDK's log to slog at debug.
type sdkLogger struct{ log *slog.Logger }

func (l sdkLogger) Logf(_ logging.Classification, format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...), "component", "s3")
}

// String names the bucket and prefix.
func (d *Driver) String() string { return "s3 " + d.bucket + "/" + d.prefix }

// ReadOnly reports whether writes are refused.
func (d *Driver) ReadOnly() bool { return d.cfg.ReadOnly }

// Close releases nothing: the client's idle connections close themselves.
func (d *Driver) Close() error { return nil }

// object validates key and returns its object key.
func (d *Driver) object(key string) (string, error) {
	if !driver.ValidKey(key) || key == privateDir || strings.HasPrefix(key, privateDir+"/") {
		return "", fmt.Errorf("%w: %q", driver.ErrInvalidKey, key)
	}
	return d.prefix + key, nil
}

// writable validates key for a write.
func (d *Driver) writable(key string) (string, error) {
	obj, err := d.object(key)
	if err != nil {
		return "", err
	}
	if d.cfg.ReadOnly {
		return "", fmt.Errorf("write %s: %w", key, driver.ErrReadOnly)
	}
	return obj, nil
}

// call bounds one S3 call by the driver's deadline.
func (d *Driver) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.cfg.Timeout)
}

// copyRate is the slowest a server is expected to copy on its side: a copy
// of n bytes has the deadline and n at this rate, since S3 says nothing
// until it is done.
const copyRate = 8 << 20

func (d *Driver) copyCall(ctx context.Context, n int64) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.cfg.Timeout+time.Duration(n*int64(time.Second)/copyRate))
}

// sendCall bounds a call that sends n bytes: the deadline, and the time
// they take at slowLink, so that a chunk gets through a slow uplink.
func (d *Driver) sendCall(ctx context.Context, n int) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.cfg.Timeout+time.Duration(int64(n)*int64(time.Second)/slowLink))
}

// slowLink is the slowest uplink a body is given time for.
const slowLink = 256 << 10

// The options every object the caller names is written with.
func (d *Driver) storageClass() types.StorageClass {
	// NONE is distribution's "send none", for servers that refuse the header.
	if c := strings.ToUpper(d.cfg.StorageClass); c == "" || c == "STANDARD" || c == "NONE" {
		return ""
	}
	return types.StorageClass(strings.ToUpper(d.cfg.StorageClass))
}

func (d *Driver) acl() types.ObjectCannedACL {
	if d.cfg.ObjectACL == "" || d.cfg.ObjectACL == "private" {
		return ""
	}
	return types.ObjectCannedACL(d.cfg.ObjectACL)
}

func (d *Driver) sse() (types.ServerSideEncryption, *string) {
	switch {
	case !d.cfg.Encrypt:
		return "", nil
	case d.cfg.KeyID != "":
		return types.ServerSideEncryptionAwsKms, aws.String(d.cfg.KeyID)
	default:
		return types.ServerSideEncryptionAes256, nil
	}
}

// Client is the SDK's client the driver uses, for tools and benchmarks
// that compare with it.
func (d *Driver) Client() *s3.Client { return d.s3 }
