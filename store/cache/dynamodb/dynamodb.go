// Package dynamodb is the dedupe index in a DynamoDB table, in zot's item
// shape so that a zot deployment's table carries over:
//
//	{Digest: S (hash key), OriginalBlobPath: S, DuplicateBlobPath: SS}
//
// DuplicateBlobPath holds every path of the digest, the original
// included. pier's completeness mark is an item whose Digest,
// "pier:complete", no digest can be. The table is created, as zot creates
// it, on the first call that finds it missing.
//
// Paths are stored as PathPrefix followed by the relative path: zot's
// form for remote storage (the storage's rootDirectory first); empty
// for a local root.
//
// Several processes change one digest at once; zot's get-then-set is not
// atomic. Here a put is one UpdateItem that adds its path to the set and
// makes it the original only if there is none (if_not_exists). A removal
// deletes its path from the set, then settles the original with
// conditional updates (the original must still be what was read, the new
// one still in the set), reading again after each conditional-check
// failure, until the original is a member of the set (the first-sorting
// one when it had to change) or the item is gone. No transactions are
// needed (dynalite has none); changes of different digests run side by
// side, those of one digest in order.
package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
)

// Options configures New.
type Options struct {
	// Client is the DynamoDB client (configs builds it from endpoint and
	// region, with the SDK's usual credentials).
	Client *dynamodb.Client
	// Table is zot's cacheTablename.
	Table string
	// PathPrefix: see the package doc.
	PathPrefix string
}

// Cache is a DynamoDB dedupe index.
type Cache struct {
	c          *dynamodb.Client
	table      string
	pathPrefix string

	// life ends at Close: a table's creation under way stops with it.
	life context.Context
	stop context.CancelFunc

	mu         sync.Mutex
	creating   *tableCreation // the table's creation under way, if any
	failedAt   time.Time      // when the last creation failed
	lastFailed error
}

// tableCreation is the creation of a missing table, on its own deadline:
// DynamoDB takes seconds to make a table active, longer than a lookup may
// wait, and a lookup that gave up must not give the creation up too.
type tableCreation struct {
	done chan struct{} // closed when it ended
	err  error
}

// tableTimeout bounds a table's creation, waiting for it to be active
// included.
const tableTimeout = 5 * time.Minute

var _ cache.Cache = (*Cache)(nil)

const (
	attrDigest    = "Digest"
	attrOriginal  = "OriginalBlobPath"
	attrPaths     = "DuplicateBlobPath"
	completeKey   = "pier:complete"
	workers       = 8 // digests changed side by side in one Apply
	settleRetries = 32
)

// New returns the index opts names. It makes no call: an endpoint that
// is down is an error of the first call, not of New.
func New(opts Options) *Cache {
	life, stop := context.WithCancel(context.Background())
	return &Cache{c: opts.Client, table: opts.Table, pathPrefix: opts.PathPrefix, life: life, stop: stop}
}

func unavailable(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: dynamodb: %w", cache.ErrUnavailable, err)
}

func key(k string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{attrDigest: &types.AttributeValueMemberS{Value: k}}
}

// call runs fn, a write, creating the table first when fn finds it
// missing: it waits for the creation as long as ctx lets it. The caller
// wraps the error (unavailable).
func (c *Cache) call(ctx context.Context, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := fn()
	if missingTable(err) {
		cr := c.creation()
		select {
		case <-cr.done:
			if cr.err != nil {
				return cr.err
			}
		case <-ctx.Done():
			return fmt.Errorf("waiting for table %s to be created: %w", c.table, ctx.Err())
		}
		err = fn()
	}
	return err
}

func missingTable(err error) bool {
	var missing *types.ResourceNotFoundException
	return errors.As(err, &missing)
}

// creation starts creating the table, unless that is under way, and
// returns the creation. A creation that failed (no permission to create
// tables, say) is not tried again for createRetry: its error stands.
func (c *Cache) creation() *tableCreation {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.creating == nil && time.Since(c.failedAt) < createRetry {
		cr := &tableCreation{done: make(chan struct{}), err: c.lastFailed}
		close(cr.done)
		return cr
	}
	if c.creating == nil {
		cr := &tableCreation{done: make(chan struct{})}
		c.creating = cr
		go func() {
			ctx, cancel := context.WithTimeout(c.life, tableTimeout)
			cr.err = c.createTable(ctx)
			cancel()
			c.mu.Lock()
			c.creating = nil
			if cr.err != nil {
				c.failedAt, c.lastFailed = time.Now(), cr.err
			}
			c.mu.Unlock()
			close(cr.done)
		}()
	}
	return c.creating
}

// createRetry is how long a failed creation of the table stands before
// a call that finds the table missing tries again.
const createRetry = 30 * time.Second

// createTable creates the table as zot does (hash key Digest), unless
// another process did, and waits until it is active. A table still being
// deleted is waited for, then created.
func (c *Cache) createTable(ctx context.Context) error {
	for {
		_, err := c.c.CreateTable(ctx, &dynamodb.CreateTableInput{
			TableName:            aws.String(c.table),
			AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(attrDigest), AttributeType: types.ScalarAttributeTypeS}},
			KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(attrDigest), KeyType: types.KeyTypeHash}},
			ProvisionedThroughput: &types.ProvisionedThroughput{
				ReadCapacityUnits:  aws.Int64(10),
				WriteCapacityUnits: aws.Int64(5),
			},
		})
		var inUse *types.ResourceInUseException
		if err != nil && !errors.As(err, &inUse) {
			return fmt.Errorf("create table %s: %w", c.table, err)
		}
		out, err := c.c.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(c.table)})
		var missing *types.ResourceNotFoundException
		switch {
		case err == nil && out.Table.TableStatus == types.TableStatusActive:
			return nil
		case err != nil && !errors.As(err, &missing):
			return fmt.Errorf("describe table %s: %w", c.table, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// item is one digest's entry.
type item struct {
	exists   bool
	original string
	paths    []string
}

func parseItem(m map[string]types.AttributeValue) item {
	if m == nil {
		return item{}
	}
	it := item{exists: true}
	if v, ok := m[attrOriginal].(*types.AttributeValueMemberS); ok {
		it.original = v.Value
	}
	if v, ok := m[attrPaths].(*types.AttributeValueMemberSS); ok {
		it.paths = v.Value
	}
	return it
}

// get reads one item. A table that is not there (yet: creating one takes
// DynamoDB seconds) holds nothing: the read says so at once, and the
// table's creation is started for the writes to come.
func (c *Cache) get(ctx context.Context, k string) (item, error) {
	if err := ctx.Err(); err != nil {
		return item{}, unavailable(err)
	}
	out, err := c.c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(c.table), Key: key(k), ConsistentRead: aws.Bool(true)})
	if missingTable(err) {
		c.creation()
		return item{}, nil
	}
	if err != nil {
		return item{}, unavailable(err)
	}
	return parseItem(out.Item), nil
}

func (c *Cache) relative(p string) string {
	if rel, ok := strings.CutPrefix(p, c.pathPrefix); ok && c.pathPrefix != "" {
		return rel
	}
	return p
}

// Paths returns the paths recorded for d, the original first; an
// original not among the paths (a removal under way, or left by zot) is
// passed over for the first-sorting path, as a settle would.
func (c *Cache) Paths(ctx context.Context, d digest.Digest) ([]string, error) {
	it, err := c.get(ctx, d.String())
	if err != nil || len(it.paths) == 0 {
		return nil, err
	}
	ps := slices.Sorted(slices.Values(it.paths))
	first := ps[0]
	if slices.Contains(ps, it.original) {
		first = it.original
	}
	out := []string{c.relative(first)}
	for _, p := range ps {
		if p != first {
			out = append(out, c.relative(p))
		}
	}
	return out, nil
}

// Apply makes ops: in order for each digest, digests side by side. When
// one fails, the others may have been applied; the error is returned.
func (c *Cache) Apply(ctx context.Context, ops []cache.Op) error {
	if err := ctx.Err(); err != nil {
		return unavailable(err)
	}
	for _, op := range ops {
		if op.Path == "" {
			return fmt.Errorf("cache: an empty path for %s", op.Digest)
		}
	}
	return cache.ApplyByDigest(ops, workers, func(op cache.Op) error {
		if op.Remove {
			return c.remove(ctx, op.Digest, c.pathPrefix+op.Path)
		}
		return c.put(ctx, op.Digest, c.pathPrefix+op.Path)
	})
}

// put adds p and makes it the original when there is none, in one update.
func (c *Cache) put(ctx context.Context, d digest.Digest, p string) error {
	var out *dynamodb.UpdateItemOutput
	err := c.call(ctx, func() (err error) {
		out, err = c.c.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName:        aws.String(c.table),
			Key:              key(d.String()),
			UpdateExpression: aws.String("ADD #paths :p SET #orig = if_not_exists(#orig, :o)"),
			ExpressionAttributeNames: map[string]string{
				"#paths": attrPaths, "#orig": attrOriginal,
			},
			ExpressionAttributeValues: map[string]types.AttributeValue{
				":p": &types.AttributeValueMemberSS{Value: []string{p}},
				":o": &types.AttributeValueMemberS{Value: p},
			},
			ReturnValues: types.ReturnValueAllNew,
		})
		return err
	})
	if err != nil {
		return unavailable(err)
	}
	if it := parseItem(out.Attributes); !slices.Contains(it.paths, it.original) {
		return c.settle(ctx, d, it) // zot's stale original
	}
	return nil
}

// remove deletes p from the set, then settles the original.
func (c *Cache) remove(ctx context.Context, d digest.Digest, p string) error {
	var out *dynamodb.UpdateItemOutput
	err := c.call(ctx, func() (err error) {
		out, err = c.c.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName:                 aws.String(c.table),
			Key:                       key(d.String()),
			UpdateExpression:          aws.String("DELETE #paths :p"),
			ConditionExpression:       aws.String("attribute_exists(#digest)"),
			ExpressionAttributeNames:  map[string]string{"#paths": attrPaths, "#digest": attrDigest},
			ExpressionAttributeValues: map[string]types.AttributeValue{":p": &types.AttributeValueMemberSS{Value: []string{p}}},
			ReturnValues:              types.ReturnValueAllNew,
		})
		return err
	})
	var failed *types.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		return nil // no entry: nothing to forget
	}
	if err != nil {
		return unavailable(err)
	}
	return c.settle(ctx, d, parseItem(out.Attributes))
}

// settle makes d's original a member of its set, the first-sorting one
// when it must change, or deletes an item left with no path, each by a
// conditional write on what was read; a failed condition means another
// process changed the item, which is read again.
func (c *Cache) settle(ctx context.Context, d digest.Digest, it item) error {
	for range settleRetries {
		if !it.exists || (it.original != "" && slices.Contains(it.paths, it.original)) {
			return nil
		}
		var err error
		if len(it.paths) == 0 {
			err = c.call(ctx, func() error {
				_, err := c.c.DeleteItem(ctx, &dynamodb.DeleteItemInput{
					TableName:                 aws.String(c.table),
					Key:                       key(d.String()),
					ConditionExpression:       aws.String("attribute_not_exists(#paths) AND " + origIs(it.original)),
					ExpressionAttributeNames:  map[string]string{"#paths": attrPaths, "#orig": attrOriginal},
					ExpressionAttributeValues: origValue(it.original, nil),
				})
				return err
			})
		} else {
			next := slices.Min(it.paths)
			err = c.call(ctx, func() error {
				_, err := c.c.UpdateItem(ctx, &dynamodb.UpdateItemInput{
					TableName:                aws.String(c.table),
					Key:                      key(d.String()),
					UpdateExpression:         aws.String("SET #orig = :next"),
					ConditionExpression:      aws.String("contains(#paths, :next) AND " + origIs(it.original)),
					ExpressionAttributeNames: map[string]string{"#paths": attrPaths, "#orig": attrOriginal},
					ExpressionAttributeValues: origValue(it.original, map[string]types.AttributeValue{
						":next": &types.AttributeValueMemberS{Value: next},
					}),
				})
				return err
			})
		}
		var failed *types.ConditionalCheckFailedException
		if err != nil && !errors.As(err, &failed) {
			return unavailable(err)
		}
		if it, err = c.get(ctx, d.String()); err != nil {
			return err
		}
	}
	return fmt.Errorf("%w: dynamodb: the original of %s kept changing", cache.ErrUnavailable, d)
}

// origIs is the condition "the original is still what was read".
func origIs(original string) string {
	if original == "" {
		return "attribute_not_exists(#orig)"
	}
	return "#orig = :orig"
}

func origValue(original string, vals map[string]types.AttributeValue) map[string]types.AttributeValue {
	if original == "" {
		return vals
	}
	if vals == nil {
		vals = map[string]types.AttributeValue{}
	}
	vals[":orig"] = &types.AttributeValueMemberS{Value: original}
	return vals
}

// Complete reports whether the completeness item is there: a new table
// has none.
func (c *Cache) Complete(ctx context.Context) (bool, error) {
	it, err := c.get(ctx, completeKey)
	return it.exists, err
}

// MarkComplete writes the completeness item.
func (c *Cache) MarkComplete(ctx context.Context) error {
	return unavailable(c.call(ctx, func() error {
		_, err := c.c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(c.table), Item: key(completeKey)})
		return err
	}))
}

// Close stops a creation of the table under way; the SDK's client holds
// no connection open.
func (c *Cache) Close() error {
	c.stop()
	return nil
}
