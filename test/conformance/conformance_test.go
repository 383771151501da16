// Package conformance runs the OCI Distribution Spec conformance suite
// (opencontainers/distribution-spec/conformance, pinned in test/tools/go.mod)
// against a real pier process.
package conformance

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/bucket"
	"github.com/pier-oci/pier/test/internal/pierproc"
	"github.com/pier-oci/pier/test/internal/tool"
)

// apiEnv turns on every API workflow the suite knows, including those that
// are off by default in 1.1 (upload cancel, tag parameters, digest headers):
// pier supports them all, so a disabled test would hide a regression.
//
// The data sets keep the suite's defaults, which leave "sparse" off: pier
// rejects a manifest whose blobs it lacks (MANIFEST_BLOB_UNKNOWN), as the
// spec allows.
var apiEnv = []string{
	"OCI_API_PULL=true",
	"OCI_API_PUSH=true",
	"OCI_API_BLOBS_ATOMIC=true",
	"OCI_API_BLOBS_DELETE=true",
	"OCI_API_BLOBS_DIGEST_HEADER=true",
	"OCI_API_BLOBS_MOUNT_ANONYMOUS=true",
	"OCI_API_BLOBS_UPLOAD_CANCEL=true",
	"OCI_API_MANIFESTS_ATOMIC=true",
	"OCI_API_MANIFESTS_DELETE=true",
	"OCI_API_MANIFESTS_DIGEST_HEADER=true",
	"OCI_API_MANIFESTS_TAG_PARAM=true",
	"OCI_API_TAGS_ATOMIC=true",
	"OCI_API_TAGS_DELETE=true",
	"OCI_API_TAGS_LIST=true",
	"OCI_API_REFERRER=true",
}

// suiteEnv is the suite's whole configuration: the tool environment without
// any OCI_* variable a developer may have exported, plus ours.
func suiteEnv(t *testing.T, registry, version, results string) []string {
	var env []string
	for _, kv := range tool.Env(t) {
		if !strings.HasPrefix(kv, "OCI_") {
			env = append(env, kv)
		}
	}
	env = append(env, apiEnv...)
	return append(env,
		"OCI_REGISTRY="+registry,
		"OCI_TLS=disabled",
		"OCI_VERSION="+version,
		"OCI_RESULTS_DIR="+results,
		"OCI_LOG=warn",
	)
}

func TestConformance(t *testing.T) {
	tool.Path(t, "conformance") // fail at once, before starting servers
	for _, version := range []string{"1.1", "dev"} {
		t.Run(version, func(t *testing.T) { conformance(t, version, pierproc.Options{}) })
	}
}

// TestConformanceS3 runs the suite against pier on the S3 server of
// test/services.sh, with placeholders deduped through a Redis index (the
// replicas' setup), and through DynamoDB's: the registry is the same
// whatever holds its bytes.
func TestConformanceS3(t *testing.T) {
	tool.Path(t, "conformance")
	redis, dynamo := os.Getenv("PIER_TEST_REDIS"), os.Getenv("PIER_TEST_DYNAMODB")
	if redis == "" || dynamo == "" {
		t.Fatal("PIER_TEST_REDIS or PIER_TEST_DYNAMODB is not set: run the tests under test/services.sh (make test does)")
	}
	indexes := map[string]func(prefix string) map[string]any{
		"redis": func(prefix string) map[string]any {
			return map[string]any{"name": "redis", "url": "redis://" + redis + "/0", "keyprefix": prefix}
		},
		"dynamodb": func(prefix string) map[string]any {
			return map[string]any{"name": "dynamodb", "endpoint": dynamo, "region": "us-east-1", "cacheTablename": prefix}
		},
	}
	// A local root with the shared Redis index (a site whose replicas
	// share the index but not yet a bucket).
	t.Run("local-redis/1.1", func(t *testing.T) {
		prefix := fmt.Sprintf("conformance-local-%d", time.Now().UnixNano())
		conformance(t, "1.1", pierproc.Options{Storage: map[string]any{"dedupe": true, "remoteCache": true,
			"cacheDriver": indexes["redis"](prefix)}})
	})
	// Not with redirectBlobURL: the suite follows the 307 and then wants
	// Docker-Content-Digest on the bucket's answer, which S3 never sends
	// (test/s3's TestRedirectBlobURL covers the redirect).
	for _, run := range []string{"redis/1.1", "redis/dev", "dynamodb/1.1"} {
		index, version, _ := strings.Cut(run, "/")
		{
			t.Run(run, func(t *testing.T) {
				b := bucket.New(t)
				storage := b.Storage(map[string]any{"dedupe": true, "remoteCache": true,
					"cacheDriver": indexes[index](strings.TrimPrefix(b.Root, "/"))})
				conformance(t, version, pierproc.Options{Storage: storage})
			})
		}
	}
}

func conformance(t *testing.T, version string, opts pierproc.Options) {
	{
		{
			srv := pierproc.Start(t, opts)
			results := t.TempDir()
			// Dir is the results dir so that no oci-conformance.yaml of
			// the working directory changes the configuration.
			run := tool.Runner{
				Env:     suiteEnv(t, srv.Addr, version, results),
				Dir:     results,
				Timeout: 10 * time.Minute,
			}
			res := run.Try(t, "conformance")

			sum, err := readJUnit(filepath.Join(results, "junit.xml"))
			if err != nil {
				// No report: the suite did not run (a config error exits 0
				// without one), so its exit code alone proves nothing.
				t.Fatalf("conformance %s wrote no report: %v\n%s", version, err, res)
			}
			t.Logf("conformance %s: %d passed, %d failed, %d errors, %d skipped, %d disabled (total %d) in %v",
				version, sum.Passed, sum.Failed, sum.Errors, sum.Skipped, sum.Disabled, sum.Total,
				res.Duration.Round(time.Millisecond))

			ok := sum.Passed > 0 && sum.Failed == 0 && sum.Errors == 0 && sum.Skipped == 0 &&
				sum.Disabled == 0 && sum.Passed == sum.Total && res.Err == nil
			if ok {
				return
			}
			t.Errorf("conformance %s: want every test to pass, none skipped or disabled; exit: %v", version, res.Err)
			for _, c := range sum.NotPassed {
				t.Errorf("  %s: %s\n%s", c.Status, c.Name, indent(c.Detail))
			}
			if dst, err := keepReport(results, version); err != nil {
				t.Errorf("keep report: %v", err)
			} else {
				t.Errorf("full report: %s", dst)
			}
			t.Logf("pier stderr:\n%s", srv.Stderr())
		}
	}
}

// keepReport copies the suite's report.html, results.yaml and junit.xml to
// test/results/conformance-VERSION/ (gitignored), where a developer or a CI
// log reader can open them after the temp dir is gone.
func keepReport(results, version string) (string, error) {
	dst, err := filepath.Abs(filepath.Join("..", "results", "conformance-"+version))
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", err
	}
	for _, name := range []string{"report.html", "results.yaml", "junit.xml"} {
		data, err := os.ReadFile(filepath.Join(results, name))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o644); err != nil {
			return "", err
		}
	}
	return filepath.Join(dst, "report.html"), nil
}

func indent(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	return fmt.Sprintf("      %s", strings.ReplaceAll(s, "\n", "\n      "))
}
