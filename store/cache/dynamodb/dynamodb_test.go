package dynamodb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/cachetest"
)

// client talks to endpoint (dynalite, from test/services/dynalite.sh).
func client(endpoint string) *dynamodb.Client {
	return dynamodb.New(dynamodb.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("pier", "pier", ""),
	})
}

func endpoint(t testing.TB) string {
	t.Helper()
	e := os.Getenv("PIER_TEST_DYNAMODB")
	if e == "" {
		t.Fatal("PIER_TEST_DYNAMODB is not set: run the tests under test/services.sh (make test does), which starts dynalite")
	}
	return e
}

func randomTable() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "pier-test-" + hex.EncodeToString(b)
}

func TestCacheSuite(t *testing.T) {
	e := endpoint(t)
	cachetest.Run(t, cachetest.Backend{
		New: func(t *testing.T) cache.Cache { return New(Options{Client: client(e), Table: randomTable()}) },
		Replica: func(t *testing.T, c cache.Cache) cache.Cache {
			return New(Options{Client: client(e), Table: c.(*Cache).table})
		},
		Empty: func(t *testing.T, c cache.Cache) {
			// A new table: what a lost or replaced table looks like.
			if _, err := client(e).DeleteTable(context.Background(), &dynamodb.DeleteTableInput{TableName: aws.String(c.(*Cache).table)}); err != nil {
				t.Fatal(err)
			}
		},
		Down: func(t *testing.T) cache.Cache {
			return New(Options{Client: client("http://127.0.0.1:1"), Table: "down"})
		},
	})
}

// The item is zot's: a table zot wrote is read, and what pier writes
// zot would read.
func TestZotItemShape(t *testing.T) {
	ctx := context.Background()
	c := New(Options{Client: client(endpoint(t)), Table: randomTable()})
	d := digest.FromString("zot wrote this")
	p := func(repo string) string { return "/zot/" + repo + "/blobs/sha256/" + d.Encoded() }
	if err := c.MarkComplete(ctx); err != nil { // creates the table
		t.Fatal(err)
	}
	_, err := c.c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(c.table), Item: map[string]types.AttributeValue{
		"Digest":            &types.AttributeValueMemberS{Value: d.String()},
		"OriginalBlobPath":  &types.AttributeValueMemberS{Value: p("b")},
		"DuplicateBlobPath": &types.AttributeValueMemberSS{Value: []string{p("a"), p("b")}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	s3 := New(Options{Client: c.c, Table: c.table, PathPrefix: "/zot/"})
	got, err := s3.Paths(ctx, d)
	if err != nil || len(got) != 2 || got[0] != "b/blobs/sha256/"+d.Encoded() {
		t.Fatalf("paths = %q, %v", got, err)
	}
	if err := s3.Apply(ctx, []cache.Op{{Digest: d, Path: "b/blobs/sha256/" + d.Encoded(), Remove: true}}); err != nil {
		t.Fatal(err)
	}
	out, err := c.c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(c.table), Key: key(d.String())})
	if err != nil {
		t.Fatal(err)
	}
	if it := parseItem(out.Item); it.original != p("a") || len(it.paths) != 1 {
		t.Fatalf("item after removing the original = %+v", it)
	}
}

func BenchmarkApply(b *testing.B) {
	c := New(Options{Client: client(endpoint(b)), Table: randomTable()})
	cachetest.BenchApply(b, c)
}

// A lookup on a table not created yet (a new deployment's first request;
// DynamoDB takes seconds to make a table active) answers at once that the
// index holds nothing, within the lookup's short deadline, and the table
// is created anyway for the writes that follow, however short the
// deadlines of the calls that found it missing.
func TestLookupBeforeTheTableExists(t *testing.T) {
	c := New(Options{Client: client(endpoint(t)), Table: randomTable()})
	d := digest.FromString("looked up first")
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		paths, err := c.Paths(ctx, d)
		done, cerr := c.Complete(ctx)
		cancel()
		if err != nil || cerr != nil || len(paths) != 0 || done {
			t.Fatalf("lookups on a missing table: %v, %v; %v, %v; want nothing and no error", paths, err, done, cerr)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Apply(ctx, []cache.Op{{Digest: d, Path: "/r/blobs/sha256/" + d.Encoded()}}); err != nil {
		t.Fatalf("a write after the lookups: %v", err)
	}
	if paths, err := c.Paths(ctx, d); err != nil || len(paths) != 1 {
		t.Fatalf("after the write: %v, %v", paths, err)
	}
}
