// Package ociclient is a small Distribution Spec client for pier's
// end-to-end tests and benchmarks: it speaks the protocol directly, so a
// test controls exactly which requests are sent (monolithic or chunked,
// by tag or by digest) and sees every status.
package ociclient

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Client talks to one registry at Base (http://host:port).
type Client struct {
	Base string
	HTTP *http.Client
}

// New returns a client for the registry at addr (host:port).
func New(addr string) *Client {
	return &Client{
		Base: "http://" + addr,
		HTTP: &http.Client{
			Timeout:   5 * time.Minute,
			Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
		},
	}
}

// StatusError is a response with an unexpected status.
type StatusError struct {
	Method, URL string
	Status      int
	Body        string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: status %d: %s", e.Method, e.URL, e.Status, e.Body)
}

// Do sends a request and fails unless the status is one of want.
func (c *Client) Do(method, path string, body io.Reader, hdr http.Header, want ...int) (*http.Response, error) {
	u := path
	if len(path) > 0 && path[0] == '/' {
		u = c.Base + path
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if br, ok := body.(*bytes.Reader); ok {
		req.ContentLength = int64(br.Len())
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	for _, w := range want {
		if resp.StatusCode == w {
			return resp, nil
		}
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return nil, &StatusError{method, u, resp.StatusCode, string(b)}
}

func (c *Client) resolve(loc string) string {
	u, err := url.Parse(c.Base)
	if err != nil {
		return loc
	}
	ref, err := u.Parse(loc)
	if err != nil {
		return loc
	}
	return ref.String()
}

// PushBlob uploads data monolithically (POST ?digest=).
func (c *Client) PushBlob(repo string, data []byte) (digest.Digest, error) {
	d := digest.FromBytes(data)
	resp, err := c.Do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), bytes.NewReader(data), nil, http.StatusCreated)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return d, nil
}

// PushBlobStream uploads size bytes from r with POST then a single PUT,
// the way most clients push large layers. d must be the content's digest.
func (c *Client) PushBlobStream(repo string, d digest.Digest, r io.Reader, size int64) error {
	loc, err := c.startUpload(repo)
	if err != nil {
		return err
	}
	_, err = c.sendBody("PUT", withDigest(loc, d), r, size, http.StatusCreated)
	return err
}

// PushBlobChunked uploads data in chunks of chunk bytes with PATCH and
// Content-Range, then completes with an empty PUT.
func (c *Client) PushBlobChunked(repo string, data []byte, chunk int) (digest.Digest, error) {
	d := digest.FromBytes(data)
	loc, err := c.startUpload(repo)
	if err != nil {
		return "", err
	}
	for off := 0; off < len(data); off += chunk {
		end := min(off+chunk, len(data))
		hdr := http.Header{"Content-Range": {fmt.Sprintf("%d-%d", off, end-1)}, "Content-Type": {"application/octet-stream"}}
		resp, err := c.Do("PATCH", loc, bytes.NewReader(data[off:end]), hdr, http.StatusAccepted)
		if err != nil {
			return "", err
		}
		resp.Body.Close()
		loc = c.resolve(resp.Header.Get("Location"))
	}
	resp, err := c.Do("PUT", withDigest(loc, d), nil, nil, http.StatusCreated)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return d, nil
}

// PushBlobPatch uploads r (size bytes, digest d) as docker, crane and
// skopeo do: POST, the whole body in one PATCH, then an empty PUT with the
// digest.
func (c *Client) PushBlobPatch(repo string, d digest.Digest, r io.Reader, size int64) error {
	loc, err := c.startUpload(repo)
	if err != nil {
		return err
	}
	next, err := c.sendBody("PATCH", loc, r, size, http.StatusAccepted)
	if err != nil {
		return err
	}
	resp, err := c.Do("PUT", withDigest(next, d), nil, nil, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// startUpload opens an upload in repo and returns its location.
func (c *Client) startUpload(repo string) (string, error) {
	resp, err := c.Do("POST", "/v2/"+repo+"/blobs/uploads/", nil, nil, http.StatusAccepted)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return c.resolve(resp.Header.Get("Location")), nil
}

// sendBody sends size bytes of r to loc as a streamed body (Do takes
// bodies it can measure) and returns the Location of the answer, which
// must have status want.
func (c *Client) sendBody(method, loc string, r io.Reader, size int64, want int) (string, error) {
	req, err := http.NewRequest(method, loc, r)
	if err != nil {
		return "", err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(resp.Body)
		return "", &StatusError{method, loc, resp.StatusCode, string(b)}
	}
	io.Copy(io.Discard, resp.Body)
	return c.resolve(resp.Header.Get("Location")), nil
}

// withDigest is loc with the digest parameter that completes an upload.
func withDigest(loc string, d digest.Digest) string {
	u, _ := url.Parse(loc)
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	return u.String()
}

// Mount asks for blob d of from to be mounted into repo; it reports
// whether the registry mounted it (201) rather than opening an upload.
func (c *Client) Mount(repo, from string, d digest.Digest) (bool, error) {
	resp, err := c.Do("POST", "/v2/"+repo+"/blobs/uploads/?mount="+d.String()+"&from="+from, nil, nil, http.StatusCreated, http.StatusAccepted)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusAccepted {
		// Abandon the upload the registry opened instead.
		if r, err := c.Do("DELETE", c.resolve(resp.Header.Get("Location")), nil, nil, http.StatusNoContent, http.StatusNotFound); err == nil {
			r.Body.Close()
		}
		return false, nil
	}
	return true, nil
}

// GetBlob fetches a blob and checks it against its digest.
func (c *Client) GetBlob(repo string, d digest.Digest) ([]byte, error) {
	resp, err := c.Do("GET", "/v2/"+repo+"/blobs/"+d.String(), nil, nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if got := d.Algorithm().FromBytes(b); got != d {
		return nil, fmt.Errorf("blob %s in %s: served content is %s", d, repo, got)
	}
	return b, nil
}

// HeadBlob returns the size the registry reports for a blob.
func (c *Client) HeadBlob(repo string, d digest.Digest) (int64, error) {
	resp, err := c.Do("HEAD", "/v2/"+repo+"/blobs/"+d.String(), nil, nil, http.StatusOK)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64)
}

// PutManifest pushes a manifest under ref (tag or digest).
func (c *Client) PutManifest(repo, ref, mediaType string, body []byte) (digest.Digest, error) {
	hdr := http.Header{"Content-Type": {mediaType}}
	resp, err := c.Do("PUT", "/v2/"+repo+"/manifests/"+ref, bytes.NewReader(body), hdr, http.StatusCreated)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return digest.Digest(resp.Header.Get("Docker-Content-Digest")), nil
}

// GetManifest fetches a manifest by tag or digest, with its digest.
func (c *Client) GetManifest(repo, ref string) ([]byte, digest.Digest, error) {
	hdr := http.Header{"Accept": {ispec.MediaTypeImageManifest + "," + ispec.MediaTypeImageIndex}}
	resp, err := c.Do("GET", "/v2/"+repo+"/manifests/"+ref, nil, hdr, http.StatusOK)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	return b, digest.FromBytes(b), nil
}

// Delete deletes a manifest or tag (kind "manifests") or a blob ("blobs").
func (c *Client) Delete(repo, kind, ref string) error {
	resp, err := c.Do("DELETE", "/v2/"+repo+"/"+kind+"/"+ref, nil, nil, http.StatusAccepted)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Tags lists a repository's tags.
func (c *Client) Tags(repo string) ([]string, error) {
	var tl struct{ Tags []string }
	return tl.Tags, c.getJSON("/v2/"+repo+"/tags/list", &tl)
}

// Catalog lists the registry's repositories.
func (c *Client) Catalog() ([]string, error) {
	var cat struct{ Repositories []string }
	return cat.Repositories, c.getJSON("/v2/_catalog", &cat)
}

func (c *Client) getJSON(path string, v any) error {
	resp, err := c.Do("GET", path, nil, nil, http.StatusOK)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// Image is a small image: config and layers already pushed, and its
// manifest bytes.
type Image struct {
	Manifest []byte
	Digest   digest.Digest
	Blobs    map[digest.Digest][]byte
}

// PushImage pushes every blob of img and then its manifest under tag.
func (c *Client) PushImage(repo, tag string, img Image) error {
	for _, b := range img.Blobs {
		if _, err := c.PushBlob(repo, b); err != nil {
			return err
		}
	}
	_, err := c.PutManifest(repo, tag, ispec.MediaTypeImageManifest, img.Manifest)
	return err
}

// ImageManifest builds an OCI image manifest over a config and layers.
func ImageManifest(config []byte, layers ...[]byte) Image {
	img := Image{Blobs: map[digest.Digest][]byte{}}
	desc := func(mt string, b []byte) ispec.Descriptor {
		d := digest.FromBytes(b)
		img.Blobs[d] = b
		return ispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	m := ispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ispec.MediaTypeImageManifest,
		Config:    desc(ispec.MediaTypeImageConfig, config),
		Layers:    []ispec.Descriptor{},
	}
	for _, l := range layers {
		m.Layers = append(m.Layers, desc(ispec.MediaTypeImageLayerGzip, l))
	}
	img.Manifest, _ = json.Marshal(m)
	sum := sha256.Sum256(img.Manifest)
	img.Digest = digest.NewDigestFromBytes(digest.SHA256, sum[:])
	return img
}
