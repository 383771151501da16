package s3

import (
	"context"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/pier-oci/pier/store/driver"
)

// List returns the objects and prefixes directly below dir, sorted by key
// (S3 sorts a prefix "a/" after "a-b"; a directory listing does not).
func (d *Driver) List(ctx context.Context, dir string) ([]driver.Info, error) {
	prefix := d.prefix
	if dir != "" {
		obj, err := d.object(dir)
		if err != nil {
			return nil, err
		}
		prefix = obj + "/"
	}
	objs, prefixes, err := d.listPrefix(ctx, prefix, "/")
	if err != nil {
		return nil, fail(ctx, "list", dir, err)
	}
	entries := make([]driver.Info, 0, len(objs)+len(prefixes))
	for _, o := range objs {
		key := strings.TrimPrefix(aws.ToString(o.Key), d.prefix)
		if strings.HasSuffix(key, "/") {
			continue // a "directory" object some tools make
		}
		entries = append(entries, info(key, aws.ToInt64(o.Size), o.LastModified, o.ETag))
	}
	for _, p := range prefixes {
		key := strings.TrimSuffix(strings.TrimPrefix(p, d.prefix), "/")
		if key == privateDir {
			continue
		}
		entries = append(entries, driver.Info{Key: key, IsDir: true})
	}
	slices.SortFunc(entries, func(a, b driver.Info) int { return strings.Compare(a.Key, b.Key) })
	return entries, nil
}

// listPrefix lists every object (and, with a delimiter, prefix) below prefix.
func (d *Driver) listPrefix(ctx context.Context, prefix, delimiter string) ([]types.Object, []string, error) {
	in := &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: aws.String(prefix)}
	if delimiter != "" {
		in.Delimiter = aws.String(delimiter)
	}
	var (
		objs     []types.Object
		prefixes []string
	)
	pages := s3.NewListObjectsV2Paginator(d.s3, in)
	for pages.HasMorePages() {
		cctx, cancel := d.call(ctx)
		out, err := pages.NextPage(cctx)
		cancel()
		if err != nil {
			return nil, nil, fail(ctx, "list", strings.TrimPrefix(prefix, d.prefix), err)
		}
		objs = append(objs, out.Contents...)
		for _, p := range out.CommonPrefixes {
			prefixes = append(prefixes, aws.ToString(p.Prefix))
		}
	}
	return objs, prefixes, nil
}

// Walk lists dir and each directory below it in turn (driver.WalkList).
func (d *Driver) Walk(ctx context.Context, dir string, fn func(driver.Info) error) error {
	return driver.WalkList(ctx, d.List, dir, fn)
}

// Prune has nothing to do: S3 has no directories.
func (d *Driver) Prune(ctx context.Context, dir string) error {
	_, err := d.writable(dir)
	return err
}
