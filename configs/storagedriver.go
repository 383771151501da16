package configs

import (
	"math"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// S3Config is a store's storageDriver with name s3: zot's keys (the
// parameters of distribution's s3-aws driver, which zot uses), typed, checked
// and defaulted as that driver does, so a zot file means the same here.
//
// With s3 the store's rootDirectory is still a local directory: zot keeps
// its BoltDB dedupe cache (cache.db) there, and pier its own local state.
// The images are in the bucket, below KeyPrefix.
type S3Config struct {
	Region         string // region; required unless RegionEndpoint is set
	Bucket         string // bucket; required
	RegionEndpoint string // regionendpoint: an S3 server other than AWS, a URL or host:port
	// ForcePathStyle (forcepathstyle) addresses the bucket in the path, not
	// the host name. Default true with a RegionEndpoint (as zot sets it for
	// one), false without.
	ForcePathStyle bool
	// RootDirectory (rootdirectory) is the key prefix of the store in the
	// bucket, as written, e.g. "/zot"; see KeyPrefix.
	RootDirectory string
	Secure        bool   // secure: https to a RegionEndpoint without a scheme; default true
	SkipVerify    bool   // skipverify: do not check the server's certificate
	AccessKey     string // accesskey; with SecretKey, else the AWS default chain
	SecretKey     string // secretkey
	SessionToken  string // sessiontoken

	ChunkSize                   int64 // chunksize: the part size of uploads; default 10 MiB
	MultipartCopyChunkSize      int64 // multipartcopychunksize; default 32 MiB
	MultipartCopyMaxConcurrency int   // multipartcopymaxconcurrency; default 100
	MultipartCopyThresholdSize  int64 // multipartcopythresholdsize; default 32 MiB

	StorageClass string // storageclass, upper case; default STANDARD
	ObjectACL    string // objectacl, a canned ACL; default private
	Encrypt      bool   // encrypt: server-side encryption
	KeyID        string // keyid: the KMS key for Encrypt
	UserAgent    string // useragent, added to the SDK's
	Accelerate   bool   // accelerate: S3 Transfer Acceleration
	UseDualStack bool   // usedualstack
	LogLevel     string // loglevel of the S3 client, lower case; default off

	// RequestTimeout (requesttimeout, pier's key) bounds every call to the
	// bucket, and every stall of a transfer. Default 30s.
	RequestTimeout time.Duration
}

// KeyPrefix is where the store's repositories are in the bucket: "" or a
// path ending in "/". zot hands rootdirectory both to its s3 driver, which
// prefixes every key with it, and to its image store as the root of every
// path, so rootdirectory "/zot" keeps repository a at zot/zot/a/…; pier
// uses the same keys, so each reads a bucket the other wrote.
func (c *S3Config) KeyPrefix() string {
	root := strings.Trim(c.RootDirectory, "/")
	if root == "" {
		return ""
	}
	return root + "/" + root + "/"
}

// Limits and defaults of distribution's s3-aws driver.
const (
	s3MinChunk        = 5 << 20
	s3MaxChunk        = 5 << 30
	s3DefaultChunk    = 10 << 20
	s3DefaultCopy     = 32 << 20
	s3DefaultCopyConc = 100
	s3DefaultTimeout  = 30 * time.Second
)

var (
	s3StorageClasses = []string{"STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA",
		"INTELLIGENT_TIERING", "OUTPOSTS", "GLACIER_IR", "EXPRESS_ONEZONE", "NONE"}
	s3ObjectACLs = []string{"private", "public-read", "public-read-write", "authenticated-read",
		"aws-exec-read", "bucket-owner-read", "bucket-owner-full-control"}
	s3LogLevels = []string{"off", "debug", "debugwithsigning", "debugwithhttpbody",
		"debugwithrequestretries", "debugwithrequesterrors", "debugwitheventstreambody"}
)

// s3Keys are the keys of an s3 storageDriver, spelled as zot documents them.
var s3Keys = []string{"name", "region", "bucket", "regionendpoint", "forcepathstyle", "rootdirectory",
	"secure", "skipverify", "accesskey", "secretkey", "sessiontoken", "chunksize",
	"multipartcopychunksize", "multipartcopymaxconcurrency", "multipartcopythresholdsize",
	"storageclass", "objectacl", "encrypt", "keyid", "v4auth", "useragent", "accelerate",
	"usedualstack", "loglevel", "requesttimeout"}

// storageDriver reads the storageDriver of the store at key (e.g.
// "storage.subPaths./a"), reporting every problem with the key it is at.
func (v *validation) storageDriver(key string, m map[string]any) *S3Config {
	if m == nil {
		return nil
	}
	key += ".storageDriver"
	p := params{v: v, key: key, m: map[string]any{}}
	known := map[string]field{}
	for _, k := range s3Keys {
		known[k] = field{name: k}
	}
	for _, k := range sortedKeys(m) {
		lower := strings.ToLower(k)
		if _, dup := p.m[lower]; dup {
			v.fail(key+"."+k, "given twice (keys match case-insensitively)")
			continue
		}
		p.m[lower] = m[k]
		if _, ok := known[lower]; !ok && lower != "name" {
			v.fail(key+"."+k, "unknown key of the s3 driver%s", suggest(k, known))
		}
	}

	switch name := p.str("name"); {
	case p.m["name"] == nil:
		v.fail(key+".name", `required: the storage driver ("s3")`)
		return nil
	case strings.ToLower(name) != "s3":
		v.fail(key+".name", "%q is not a storage driver pier has (the only one is \"s3\")", name)
		return nil
	}

	c := &S3Config{
		Region:                      p.str("region"),
		Bucket:                      p.str("bucket"),
		RegionEndpoint:              p.str("regionendpoint"),
		RootDirectory:               p.str("rootdirectory"),
		Secure:                      p.boolean("secure", true),
		SkipVerify:                  p.boolean("skipverify", false),
		AccessKey:                   p.str("accesskey"),
		SecretKey:                   p.str("secretkey"),
		SessionToken:                p.str("sessiontoken"),
		ChunkSize:                   p.integer("chunksize", s3DefaultChunk, s3MinChunk, s3MaxChunk),
		MultipartCopyChunkSize:      p.integer("multipartcopychunksize", s3DefaultCopy, s3MinChunk, s3MaxChunk),
		MultipartCopyMaxConcurrency: int(p.integer("multipartcopymaxconcurrency", s3DefaultCopyConc, 1, 10000)),
		MultipartCopyThresholdSize:  p.integer("multipartcopythresholdsize", s3DefaultCopy, 0, s3MaxChunk),
		StorageClass:                strings.ToUpper(p.oneOf("storageclass", "STANDARD", s3StorageClasses)),
		ObjectACL:                   p.oneOf("objectacl", "private", s3ObjectACLs),
		Encrypt:                     p.boolean("encrypt", false),
		KeyID:                       p.str("keyid"),
		UserAgent:                   p.str("useragent"),
		Accelerate:                  p.boolean("accelerate", false),
		UseDualStack:                p.boolean("usedualstack", false),
		LogLevel:                    strings.ToLower(p.logLevel()),
		RequestTimeout:              p.duration("requesttimeout", s3DefaultTimeout),
	}
	// zot turns path-style addressing on for a custom endpoint unless told.
	c.ForcePathStyle = p.boolean("forcepathstyle", c.RegionEndpoint != "")

	switch {
	case c.Bucket == "":
		v.fail(key+".bucket", "required: the bucket the images are stored in")
	case len(c.Bucket) < 3 || len(c.Bucket) > 63 || strings.ContainsAny(c.Bucket, "/ \\") || strings.ToLower(c.Bucket) != c.Bucket:
		v.fail(key+".bucket", "%q is not a bucket name (3 to 63 lower-case letters, digits, dots and hyphens)", c.Bucket)
	}
	if c.Region == "" && c.RegionEndpoint == "" {
		v.fail(key+".region", "required: the AWS region of the bucket (or set regionendpoint for another S3 server)")
	}
	if e := c.RegionEndpoint; e != "" {
		u, err := url.Parse(e)
		if strings.Contains(e, "://") && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
			v.fail(key+".regionendpoint", "%q is not an http or https URL, nor a host:port", e)
		}
	}
	if root := strings.Trim(c.RootDirectory, "/"); root != "" && (path.Clean(root) != root || strings.HasPrefix(root, "..") || strings.ContainsAny(root, "\\\x00")) {
		v.fail(key+".rootdirectory", "%q is not a clean path in the bucket (like \"/zot\")", c.RootDirectory)
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		v.fail(key+".secretkey", "accesskey and secretkey go together: give both, or neither to use the AWS default credentials (environment, ~/.aws/credentials)")
	}
	if p.m["v4auth"] != nil && !p.boolean("v4auth", true) {
		v.fail(key+".v4auth", "pier signs requests with AWS Signature Version 4 only")
	}
	return c
}

// params reads the values of a storageDriver map, whose keys are
// lower-cased, failing on values of the wrong kind.
type params struct {
	v   *validation
	key string
	m   map[string]any
}

func (p params) fail(k, format string, args ...any) { p.v.fail(p.key+"."+k, format, args...) }

func (p params) str(k string) string {
	switch x := p.m[k].(type) {
	case nil:
		return ""
	case string:
		return x
	default:
		p.fail(k, "expected a string, got %v", x)
		return ""
	}
}

// boolean takes true/false, or the strings distribution's driver takes.
func (p params) boolean(k string, def bool) bool {
	switch x := p.m[k].(type) {
	case nil:
		return def
	case bool:
		return x
	case string:
		if b, err := strconv.ParseBool(x); err == nil {
			return b
		}
	}
	p.fail(k, "expected true or false, got %v", p.m[k])
	return def
}

// integer takes a whole number, or a string of one, within [lo, hi].
func (p params) integer(k string, def, lo, hi int64) int64 {
	var n int64
	switch x := p.m[k].(type) {
	case nil:
		return def
	case float64:
		if x != math.Trunc(x) || x < math.MinInt64 || x > math.MaxInt64 {
			p.fail(k, "expected a whole number, got %v", x)
			return def
		}
		n = int64(x)
	case string:
		var err error
		if n, err = strconv.ParseInt(x, 10, 64); err != nil {
			p.fail(k, "expected a whole number, got %q", x)
			return def
		}
	default:
		p.fail(k, "expected a whole number, got %v", x)
		return def
	}
	if n < lo || n > hi {
		p.fail(k, "%d is not between %d and %d", n, lo, hi)
		return def
	}
	return n
}

func (p params) oneOf(k, def string, allowed []string) string {
	s := p.str(k)
	if s == "" {
		return def
	}
	for _, a := range allowed {
		if strings.EqualFold(s, a) {
			return a
		}
	}
	p.fail(k, "%q is not one of %s", s, strings.Join(allowed, ", "))
	return def
}

// logLevel also takes false, which is how YAML wrote "off".
func (p params) logLevel() string {
	if b, ok := p.m["loglevel"].(bool); ok && !b {
		return "off"
	}
	return p.oneOf("loglevel", "off", s3LogLevels)
}

func (p params) duration(k string, def time.Duration) time.Duration {
	s := p.str(k)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		p.fail(k, "%q is not a positive duration %s", s, durationHint)
		return def
	}
	return d
}

// s3Roots checks that no two stores share keys in one bucket: the same
// prefix, or a prefix below another's, would have each list (and collect)
// the other's repositories.
func (v *validation) s3Roots(roots map[string]*S3Config) {
	keys := sortedKeys(roots)
	for i, a := range keys {
		for _, b := range keys[i+1:] {
			ra, rb := roots[a], roots[b]
			if ra.Bucket != rb.Bucket || !strings.EqualFold(ra.RegionEndpoint, rb.RegionEndpoint) {
				continue
			}
			pa, pb := ra.KeyPrefix(), rb.KeyPrefix()
			if strings.HasPrefix(pa, pb) || strings.HasPrefix(pb, pa) {
				v.fail(b+".storageDriver.rootdirectory", "shares bucket %s with %s, at keys %q and %q: one store would see the other's repositories",
					ra.Bucket, a+".storageDriver", pb, pa)
			}
		}
	}
}
