package configs

import (
	"strings"
	"testing"
	"time"
)

func s3Store(driver string) string {
	return `{"storage": {"rootDirectory": "/r", "storageDriver": ` + driver + `}}`
}

// Every key of zot's table, as a zot file spells them (lower case), read.
func TestS3AllKeys(t *testing.T) {
	cfg, _ := mustParse(t, s3Store(`{
		"name": "s3", "region": "eu-west-1", "bucket": "pier-images", "regionendpoint": "minio.local:9000",
		"forcepathstyle": false, "rootdirectory": "/zot", "secure": "false", "skipverify": true,
		"accesskey": "AK", "secretkey": "SK", "sessiontoken": "ST", "chunksize": 16777216,
		"multipartcopychunksize": "67108864", "multipartcopymaxconcurrency": 8, "multipartcopythresholdsize": 0,
		"storageclass": "standard_ia", "objectacl": "bucket-owner-full-control", "encrypt": true, "keyid": "kms-1",
		"v4auth": true, "useragent": "pier-test", "accelerate": false, "usedualstack": true,
		"loglevel": "DebugWithHTTPBody", "requesttimeout": "45s"}`))
	want := S3Config{
		Region: "eu-west-1", Bucket: "pier-images", RegionEndpoint: "minio.local:9000", ForcePathStyle: false,
		RootDirectory: "/zot", Secure: false, SkipVerify: true, AccessKey: "AK", SecretKey: "SK", SessionToken: "ST",
		ChunkSize: 16 << 20, MultipartCopyChunkSize: 64 << 20, MultipartCopyMaxConcurrency: 8, MultipartCopyThresholdSize: 0,
		StorageClass: "STANDARD_IA", ObjectACL: "bucket-owner-full-control", Encrypt: true, KeyID: "kms-1",
		UserAgent: "pier-test", UseDualStack: true, LogLevel: "debugwithhttpbody", RequestTimeout: 45 * time.Second,
	}
	if got := cfg.Storage.S3; got == nil || *got != want {
		t.Fatalf("S3 = %+v,\nwant %+v", got, want)
	}
	if p := cfg.Storage.S3.KeyPrefix(); p != "zot/zot/" {
		t.Errorf("KeyPrefix() = %q, want zot/zot/ (zot's keys)", p)
	}
}

// The defaults are distribution's s3-aws driver's, as zot has them.
func TestS3Defaults(t *testing.T) {
	cfg, _ := mustParse(t, s3Store(`{"name": "S3", "region": "us-east-2", "bucket": "zot-storage"}`))
	want := S3Config{
		Region: "us-east-2", Bucket: "zot-storage", Secure: true,
		ChunkSize: 10 << 20, MultipartCopyChunkSize: 32 << 20, MultipartCopyMaxConcurrency: 100, MultipartCopyThresholdSize: 32 << 20,
		StorageClass: "STANDARD", ObjectACL: "private", LogLevel: "off", RequestTimeout: 30 * time.Second,
	}
	if got := cfg.Storage.S3; got == nil || *got != want {
		t.Fatalf("S3 = %+v,\nwant %+v", got, want)
	}
	if cfg.Storage.S3.KeyPrefix() != "" {
		t.Errorf("KeyPrefix() = %q without a rootdirectory, want the bucket's root", cfg.Storage.S3.KeyPrefix())
	}
	// zot turns on path-style addressing for an endpoint of its own.
	cfg, _ = mustParse(t, s3Store(`{"name": "s3", "bucket": "b-1", "regionendpoint": "http://127.0.0.1:7070"}`))
	if !cfg.Storage.S3.ForcePathStyle || cfg.Storage.S3.Region != "" {
		t.Errorf("with a regionendpoint: ForcePathStyle %v, Region %q; want true and none", cfg.Storage.S3.ForcePathStyle, cfg.Storage.S3.Region)
	}
	// A local store has none.
	cfg, _ = mustParse(t, `{"storage": {"rootDirectory": "/r", "subPaths": {"/a": {"rootDirectory": "/a",
		"storageDriver": {"name": "s3", "bucket": "sub-bucket", "region": "r"}}}}}`)
	if cfg.Storage.S3 != nil || cfg.Storage.SubPaths["/a"].S3 == nil || cfg.Storage.SubPaths["/a"].S3.Bucket != "sub-bucket" {
		t.Errorf("S3 = %+v, subpath's %+v; want nil and the subpath's bucket", cfg.Storage.S3, cfg.Storage.SubPaths["/a"].S3)
	}
}

// A bad value is an error naming its key, and every one is reported.
func TestS3Errors(t *testing.T) {
	const key = "storage.storageDriver."
	tests := []struct {
		driver string
		want   []string
	}{
		{`{}`, []string{key + "name: required"}},
		{`{"name": "gcs", "bucket": "b-1"}`, []string{key + `name: "gcs" is not a storage driver pier has`}},
		{`{"name": "s3", "region": "r"}`, []string{key + "bucket: required"}},
		{`{"name": "s3", "bucket": "b-1"}`, []string{key + "region: required"}},
		{`{"name": "s3", "region": "r", "bucket": "My_Bucket/x"}`, []string{key + `bucket: "My_Bucket/x" is not a bucket name`}},
		{`{"name": "s3", "region": "r", "bukcet": "b-1"}`, []string{key + `bukcet: unknown key of the s3 driver (did you mean "bucket"?)`, key + "bucket: required"}},
		{`{"name": "s3", "region": "r", "bucket": "b-1", "chunksize": 1048576}`, []string{key + "chunksize: 1048576 is not between 5242880 and 5368709120"}},
		{`{"name": "s3", "region": "r", "bucket": "b-1", "chunksize": 5242880.5}`, []string{key + "chunksize: expected a whole number, got 5.2428805e+06"}},
		{`{"name": "s3", "region": "r", "bucket": "b-1", "multipartcopychunksize": "big"}`, []string{key + `multipartcopychunksize: expected a whole number, got "big"`}},
		{`{"name": "s3", "region": "r", "bucket": "b-1", "multipartcopymaxconcurrency": 0}`, []string{key + "multipartcopymaxconcurrency: 0 is not between 1 and 10000"}},
		{`{"name": "s3", "region": "r", "bucket": "b-1", "secure": "yes please"}`, []string{key + "secure: expected true or false"}},
		{`{"name": "s3", "region": "r", "bucket": "b-1", "storageclass": "GLACIER"}`, []string{key + `storageclass: "GLACIER" is not one of STANDARD,`}},
		{`{"name": "s3", "region": "r", "bucket": "b-1", "objectacl": "everyone"}`, []string{key + `objectacl: "everyone" is not one of private,`}},
		{`{"name": "s3", "region": "r", "bucket": "b-1", "loglevel": "loud"}`, []string{key + `loglevel: "loud" is not one of off,`}},
		{`{"name": "s3", "region": "r", "bucket": "b-1", "accesskey": "AK"}`, []string{key + "secretkey: accesskey and secretkey go together"}},
		{`{"name": "s3", "region": "r", "bucket": "b-1", "v4auth": false}`, []string{key + "v4auth: pier signs requests with AWS Signature Version 4 only"}},
		{`{"name": "s3", "region": "r", "bucket": "b-1", "rootdirectory": "/a/../../x"}`, []string{key + `rootdirectory: "/a/../../x" is not a clean path`}},
		{`{"name": "s3", "region": "r", "bucket": "b-1", "regionendpoint": "ftp://host"}`, []string{key + `regionendpoint: "ftp://host" is not an http or https URL`}},
		{`{"name": "s3", "region": "r", "bucket": "b-1", "requesttimeout": "-1s"}`, []string{key + `requesttimeout: "-1s" is not a positive duration`}},
		{`{"name": "s3", "region": "r", "bucket": "b-1", "Bucket": "b-2"}`, []string{"bucket: given twice"}},
	}
	for _, tt := range tests {
		_, _, err := Parse([]byte(s3Store(tt.driver)))
		if err == nil {
			t.Errorf("%s: parsed; want an error", tt.driver)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error\n%v\ndoes not say %q", tt.driver, err, w)
			}
		}
	}
}

// Two stores in one bucket must not see each other's keys; zot's doubled
// prefix keeps /zot and /zot-a (and even /zot/a) apart, the bucket's root
// does not.
func TestS3SharedBucket(t *testing.T) {
	store := func(root string) string {
		return `"storageDriver": {"name": "s3", "bucket": "shared", "region": "r"` + root + `}`
	}
	ok := []string{
		`{"storage": {"rootDirectory": "/r", ` + store(`, "rootdirectory": "/zot"`) + `, "subPaths": {"/a": {"rootDirectory": "/a", ` + store(`, "rootdirectory": "/zot-a"`) + `}}}}`,
		`{"storage": {"rootDirectory": "/r", ` + store(`, "rootdirectory": "/zot"`) + `, "subPaths": {"/a": {"rootDirectory": "/a", ` + store(`, "rootdirectory": "/zot/a"`) + `}}}}`,
		`{"storage": {"rootDirectory": "/r", ` + store(``) + `, "subPaths": {"/a": {"rootDirectory": "/a", "storageDriver": {"name": "s3", "bucket": "other", "region": "r"}}}}}`,
	}
	for _, data := range ok {
		mustParse(t, data)
	}
	bad := map[string]string{
		`{"storage": {"rootDirectory": "/r", ` + store(``) + `, "subPaths": {"/a": {"rootDirectory": "/a", ` + store(`, "rootdirectory": "/a"`) + `}}}}`:                        "storage.subPaths./a.storageDriver.rootdirectory: shares bucket shared with storage.storageDriver",
		`{"storage": {"rootDirectory": "/r", ` + store(`, "rootdirectory": "/x/"`) + `, "subPaths": {"/a": {"rootDirectory": "/a", ` + store(`, "rootdirectory": "x"`) + `}}}}`: "storage.subPaths./a.storageDriver.rootdirectory: shares bucket shared",
	}
	for data, want := range bad {
		_, _, err := Parse([]byte(data))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", data, err, want)
		}
	}
}

// A storageDriver is served: nothing refuses it.
func TestS3Served(t *testing.T) {
	cfg, _ := mustParse(t, s3Store(`{"name": "s3", "bucket": "b-1", "region": "r"}`))
	if r := cfg.Refusals(); len(r) != 0 {
		t.Fatalf("refusals = %v, want none", r)
	}
}
