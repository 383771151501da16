// Package layouts tests what an air-gapped site does with pier: several
// roots behind one API (subPaths), OCI layouts made by other tools dropped
// into a running pier, a layout that is still being copied, a read-only
// root, and the export/import round trip — all through the real binary and
// real clients.
package layouts

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
	"github.com/pier-oci/pier/test/internal/testimage"
	"github.com/pier-oci/pier/test/internal/tool"
)

var amd64 = testimage.Platform{OS: "linux", Architecture: "amd64"}

func runner() tool.Runner { return tool.Runner{} }

func pushContent(t *testing.T, c *ociclient.Client, repo, tag string, content testimage.Content) {
	t.Helper()
	all := content.All()
	// Children and blobs first, the top manifest last under its tag.
	for _, b := range all[1:] {
		if b.MediaType == testimage.MediaTypeManifest {
			continue
		}
		if _, err := c.PushBlob(repo, b.Data); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range all[1:] {
		if b.MediaType == testimage.MediaTypeManifest {
			if _, err := c.PutManifest(repo, b.Digest(), b.MediaType, b.Data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := c.PutManifest(repo, tag, content.Top().MediaType, content.Top().Data); err != nil {
		t.Fatal(err)
	}
}

// pullAll fetches ref's manifest and every blob it reaches, checking each
// against its digest; it returns the top manifest's digest.
func pullAll(t *testing.T, c *ociclient.Client, repo, ref string) (string, error) {
	t.Helper()
	body, d, err := c.GetManifest(repo, ref)
	if err != nil {
		return "", err
	}
	var m struct {
		Config    *testimage.Descriptor
		Layers    []testimage.Descriptor
		Manifests []testimage.Descriptor
	}
	json.Unmarshal(body, &m)
	var blobs []testimage.Descriptor
	if m.Config != nil {
		blobs = append(blobs, *m.Config)
	}
	blobs = append(blobs, m.Layers...)
	for _, b := range blobs {
		if _, err := c.GetBlob(repo, digestOf(b.Digest)); err != nil {
			return "", err
		}
	}
	for _, child := range m.Manifests {
		if _, err := pullAll(t, c, repo, child.Digest); err != nil {
			return "", err
		}
	}
	return d.String(), nil
}

// TestSubPaths routes repositories by longest prefix, keeps the full name
// under each root, lists every root in one sorted, paginated catalog, and
// mounts across roots.
func TestSubPaths(t *testing.T) {
	dir := t.TempDir()
	rootA, rootXY, def := filepath.Join(dir, "a"), filepath.Join(dir, "xy"), filepath.Join(dir, "default")
	srv := pierproc.Start(t, pierproc.Options{Root: def, Storage: map[string]any{"subPaths": map[string]any{
		"/a":   map[string]any{"rootDirectory": rootA, "dedupe": true},
		"/x/y": map[string]any{"rootDirectory": rootXY},
	}}})
	c := ociclient.New(srv.Addr)
	img := testimage.NewImage("subpaths", 1, amd64)
	for _, repo := range []string{"a/app", "a", "x/y/z", "x/y", "x/other", "b", "ab"} {
		pushContent(t, c, repo, "v1", img)
	}
	for repo, root := range map[string]string{"a/app": rootA, "a": rootA, "x/y/z": rootXY, "x/y": rootXY, "x/other": def, "b": def, "ab": def} {
		if _, err := os.Stat(filepath.Join(root, repo, "index.json")); err != nil {
			t.Errorf("%s is not in %s: %v", repo, root, err)
		}
	}
	var pages []string
	path := "/v2/_catalog?n=3"
	for path != "" {
		resp, err := c.Do("GET", path, nil, nil, 200)
		if err != nil {
			t.Fatal(err)
		}
		var cat struct{ Repositories []string }
		json.NewDecoder(resp.Body).Decode(&cat)
		resp.Body.Close()
		pages = append(pages, strings.Join(cat.Repositories, ","))
		path = ""
		if link := resp.Header.Get("Link"); link != "" {
			path = strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
		}
	}
	if got := strings.Join(pages, "|"); got != "a,a/app,ab|b,x/other,x/y|x/y/z" {
		t.Fatalf("catalog pages = %s", got)
	}
	// A mount from the default root into /a copies (another root) and is served.
	layer := img.Layers[0]
	if mounted, err := c.Mount("a/mounted", "b", digestOf(layer.Digest())); err != nil || !mounted {
		t.Fatalf("cross-root mount: %v %v", mounted, err)
	}
	if got, err := c.GetBlob("a/mounted", digestOf(layer.Digest())); err != nil || !bytes.Equal(got, layer.Data) {
		t.Fatalf("mounted blob: %v", err)
	}
}

func TestVerifyRejectsOverlappingRoots(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ subs, want string }{
		{`{"/a": {"rootDirectory": "` + dir + `/data/a"}}`, "storage.subPaths./a.rootDirectory"},
		{`{"/a": {"rootDirectory": "` + dir + `/s"}, "/b": {"rootDirectory": "` + dir + `/s"}}`, "storage.subPaths./b.rootDirectory"},
		{`{"/a/": {"rootDirectory": "` + dir + `/s"}}`, "storage.subPaths./a/"},
		{`{"/A": {"rootDirectory": "` + dir + `/s"}, "/a": {"rootDirectory": "` + dir + `/t"}}`, "storage.subPaths./a"},
	} {
		cfg := filepath.Join(t.TempDir(), "config.json")
		os.WriteFile(cfg, []byte(`{"storage": {"rootDirectory": "`+dir+`/data", "subPaths": `+tc.subs+`}}`), 0o644)
		out, err := exec.Command(pierproc.Binary(t), "verify", cfg).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("verify %s: %v\n%s", tc.subs, err, out)
		}
	}
}

// Layouts written by skopeo and oras, and a hand-made one tagged with a
// full reference, are dropped into a running pier's root and pulled by
// crane within seconds, without a restart.
func TestDroppedInLayouts(t *testing.T) {
	source := pierproc.Start(t, pierproc.Options{})
	sc := ociclient.New(source.Addr)
	img := testimage.NewImage("dropped", 2, amd64)
	multi := testimage.NewMultiArch("dropped-multi", 1, amd64, testimage.Platform{OS: "linux", Architecture: "arm64"})
	pushContent(t, sc, "src/app", "v1", img)
	pushContent(t, sc, "src/multi", "v1", multi)

	srv := pierproc.Start(t, pierproc.Options{})
	r := runner()
	staging := t.TempDir()
	skopeoDir := filepath.Join(staging, "skopeo")
	r.Run(t, "skopeo", "--insecure-policy", "copy", "--all", "--preserve-digests", "--src-tls-verify=false",
		"docker://"+source.Addr+"/src/multi:v1", "oci:"+skopeoDir+":v1")
	orasDir := filepath.Join(staging, "oras")
	r.Run(t, "oras", "cp", "--from-plain-http", "--to-oci-layout", source.Addr+"/src/app:v1", orasDir+":v1")
	handDir := filepath.Join(staging, "hand")
	if err := testimage.WriteLayout(handDir, map[string]testimage.Content{"example.com/app:v2": img}); err != nil {
		t.Fatal(err)
	}
	for name, from := range map[string]string{"site/skopeo": skopeoDir, "site/oras": orasDir, "site/hand": handDir} {
		if out, err := exec.Command("cp", "-r", from, filepath.Join(srv.Root, name)).CombinedOutput(); err != nil {
			// cp -r needs the parent; make it and retry once.
			os.MkdirAll(filepath.Join(srv.Root, "site"), 0o755)
			if out, err = exec.Command("cp", "-r", from, filepath.Join(srv.Root, name)).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
		}
	}
	want := map[string]string{"site/skopeo:v1": multi.Top().Digest(), "site/oras:v1": img.Top().Digest(), "site/hand:v2": img.Top().Digest()}
	for ref, digest := range want {
		deadline := time.Now().Add(10 * time.Second)
		for {
			out := r.Try(t, "crane", "digest", "--insecure", srv.Addr+"/"+ref)
			if out.Err == nil && strings.TrimSpace(string(out.Stdout)) == digest {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not served within 10 s: %s", ref, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		pull := filepath.Join(t.TempDir(), "pulled")
		r.Run(t, "crane", "pull", "--insecure", "--format", "oci", srv.Addr+"/"+ref, pull)
	}
	c := ociclient.New(srv.Addr)
	tags, err := c.Tags("site/hand")
	if err != nil || !slices.Equal(tags, []string{"v2"}) {
		t.Fatalf("tags of a layout tagged with a full reference: %v %v", tags, err)
	}

	// site/oras and site/hand hold the same image: once the copies have
	// settled, the running pier (dedupe on by default) has made each of
	// their blobs one file.
	shared, err := os.ReadDir(filepath.Join(srv.Root, "site/hand/blobs/sha256"))
	if err != nil || len(shared) == 0 {
		t.Fatalf("blobs of site/hand: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, e := range shared {
		a := filepath.Join(srv.Root, "site/hand/blobs/sha256", e.Name())
		b := filepath.Join(srv.Root, "site/oras/blobs/sha256", e.Name())
		if _, err := os.Stat(b); err != nil {
			continue // the hand-made layout's own index manifest
		}
		for !sameFile(a, b) {
			if time.Now().After(deadline) {
				t.Fatalf("blob %s of two dropped-in layouts is still two files after 15 s", e.Name())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

func sameFile(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// A layout copied blobs-last, slowly, with garbage collection running
// faster than the copy: its manifest is not served until every blob is
// whole, no half-written blob is served, and nothing of it is pruned.
func TestLayoutCopiedBlobsLast(t *testing.T) {
	srv := pierproc.Start(t, pierproc.Options{Storage: map[string]any{"gcDelay": "1s", "gcInterval": "1s"}})
	c := ociclient.New(srv.Addr)
	img := testimage.NewImage("blobs-last", 3, amd64)
	src := filepath.Join(t.TempDir(), "layout")
	if err := testimage.WriteLayout(src, map[string]testimage.Content{"v1": img}); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(srv.Root, "arriving")
	os.MkdirAll(filepath.Join(dst, "blobs", "sha256"), 0o755)
	for _, f := range []string{"oci-layout", "index.json"} {
		b, _ := os.ReadFile(filepath.Join(src, f))
		os.WriteFile(filepath.Join(dst, f), b, 0o644)
	}
	// Served means the manifest is handed out: a client that gets it
	// starts a pull, which must then be able to finish.
	served := func() bool {
		_, _, err := c.GetManifest("arriving", "v1")
		return err == nil
	}
	for i, b := range img.All() {
		if served() {
			t.Fatalf("served after %d of %d blobs", i, len(img.All()))
		}
		path := filepath.Join(dst, "blobs", "sha256", strings.TrimPrefix(b.Digest(), "sha256:"))
		half := len(b.Data) / 2
		f, _ := os.Create(path)
		f.Write(b.Data[:half])
		time.Sleep(600 * time.Millisecond) // the whole copy outlasts gcDelay
		if got, err := c.GetBlob("arriving", digestOf(b.Digest())); err == nil {
			t.Fatalf("half-written blob served: %d bytes", len(got))
		}
		f.Write(b.Data[half:])
		f.Close()
		time.Sleep(600 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // a collection pass with the layout complete
	d, err := pullAll(t, c, "arriving", "v1")
	if err != nil || d != img.Top().Digest() {
		t.Fatalf("complete layout: %v (%s)", err, d)
	}
}

// A root on a read-only filesystem (a bind mount remounted read-only) is
// served and left byte for byte unchanged; writes get spec errors.
func TestReadOnlyRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root (CI runs as root)")
	}
	seed := pierproc.Start(t, pierproc.Options{})
	img := testimage.NewImage("read-only", 2, amd64)
	pushContent(t, ociclient.New(seed.Addr), "ro/app", "v1", img)
	if code := seed.Stop(t); code != 0 {
		t.Fatalf("stop: %d", code)
	}
	ro := filepath.Join(t.TempDir(), "ro")
	os.MkdirAll(ro, 0o755)
	mustRun(t, "mount", "--bind", seed.Root, ro)
	t.Cleanup(func() { exec.Command("umount", ro).Run() })
	mustRun(t, "mount", "-o", "remount,bind,ro", ro)
	before := treeHash(t, seed.Root)

	srv := pierproc.Start(t, pierproc.Options{Root: ro, Storage: map[string]any{"gcDelay": "0s", "gcInterval": "1s"},
		Extra: map[string]any{"extensions": map[string]any{"scrub": map[string]any{"enable": true, "interval": "1s"}}}})
	c := ociclient.New(srv.Addr)
	if d, err := pullAll(t, c, "ro/app", "v1"); err != nil || d != img.Top().Digest() {
		t.Fatalf("pull from a read-only root: %v", err)
	}
	for _, tc := range []struct{ method, path string }{
		{"POST", "/v2/ro/app/blobs/uploads/"},
		{"PUT", "/v2/ro/app/manifests/v2"},
		{"DELETE", "/v2/ro/app/manifests/v1"},
		{"DELETE", "/v2/ro/app/blobs/" + img.Layers[0].Digest()},
	} {
		resp, err := c.Do(tc.method, tc.path, bytes.NewReader(img.Manifest.Data), http.Header{"Content-Type": {testimage.MediaTypeManifest}}, 403)
		if err != nil {
			t.Errorf("%s %s: %v", tc.method, tc.path, err)
			continue
		}
		var body struct{ Errors []struct{ Code string } }
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if len(body.Errors) != 1 || body.Errors[0].Code != "DENIED" {
			t.Errorf("%s %s: %+v", tc.method, tc.path, body)
		}
	}
	time.Sleep(2500 * time.Millisecond) // gc and scrub passes ran meanwhile
	srv.Stop(t)
	// Not asked for in the config: said as a warning, with the way out
	// for a root that a systemd unit's sandbox made read-only.
	if log := srv.Stderr(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "ReadWritePaths=") {
		t.Errorf("no warning that the root was found read-only:\n%s", log)
	}
	if after := treeHash(t, seed.Root); after != before {
		t.Fatal("pier changed a read-only root")
	}
}

// export → import preserves digests, through the binaries.
func TestExportImportRoundTrip(t *testing.T) {
	srv := pierproc.Start(t, pierproc.Options{})
	multi := testimage.NewMultiArch("export", 2, amd64, testimage.Platform{OS: "linux", Architecture: "arm"})
	pushContent(t, ociclient.New(srv.Addr), "factory/app", "v1", multi)
	usb := filepath.Join(t.TempDir(), "usb")
	// Export reads only: it runs beside the serving pier.
	out, err := exec.Command(pierproc.Binary(t), "export", srv.Config, "factory/app:v1", usb).CombinedOutput()
	if err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	dst := pierproc.Start(t, pierproc.Options{})
	dst.Stop(t)
	out, err = exec.Command(pierproc.Binary(t), "import", dst.Config, usb, "mirror/app").CombinedOutput()
	if err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	dst.Restart(t)
	if d, err := pullAll(t, ociclient.New(dst.Addr), "mirror/app", "v1"); err != nil || d != multi.Top().Digest() {
		t.Fatalf("after import: %s, %v; want %s", d, err, multi.Top().Digest())
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v %s", name, args, err, out)
	}
}

// treeHash hashes every path, mode and content below dir.
func treeHash(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		info, _ := d.Info()
		fmt.Fprintf(h, "%s %v %d\n", rel, info.Mode(), info.Size())
		if d.Type().IsRegular() {
			f, _ := os.Open(path)
			io.Copy(h, f)
			f.Close()
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}

func digestOf(s string) digest.Digest { return digest.Digest(s) }

// A layout from a USB stick must not make pier serve what lies outside
// its root (its TLS key), nor bytes under a digest they do not have.
func TestHostedLayoutCannotLeak(t *testing.T) {
	srv := pierproc.Start(t, pierproc.Options{})
	secret := filepath.Join(t.TempDir(), "tls.key")
	if err := os.WriteFile(secret, []byte("-----BEGIN PRIVATE KEY----- not for clients"), 0o600); err != nil {
		t.Fatal(err)
	}
	secretDigest := digest.FromString("-----BEGIN PRIVATE KEY----- not for clients")
	lie := []byte("bytes whose name lies")
	named := digest.FromString("the digest the file is named after")
	dir := filepath.Join(srv.Root, "stick")
	blobs := filepath.Join(dir, "blobs", "sha256")
	os.MkdirAll(blobs, 0o755)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	os.WriteFile(filepath.Join(dir, "index.json"), []byte(`{"schemaVersion":2,"manifests":[]}`), 0o644)
	os.Symlink(secret, filepath.Join(blobs, secretDigest.Encoded()))
	os.WriteFile(filepath.Join(blobs, named.Encoded()), lie, 0o644)

	c := ociclient.New(srv.Addr)
	for _, d := range []digest.Digest{secretDigest, named} {
		for _, method := range []string{"GET", "HEAD"} {
			resp, err := c.Do(method, "/v2/stick/blobs/"+d.String(), nil, nil, http.StatusOK, http.StatusNotFound)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if bytes.Contains(body, []byte("PRIVATE KEY")) || bytes.Contains(body, lie) {
				t.Errorf("%s %s served the bytes: %d %q", method, d, resp.StatusCode, body)
			}
			if resp.StatusCode != http.StatusNotFound && !(method == "HEAD" && d == named) {
				t.Errorf("%s %s = %d, want 404", method, d, resp.StatusCode)
			}
		}
	}
}
