package auth

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// htpasswd holds the users of an htpasswd file: one "user:hash" a line,
// bcrypt hashes only (what `htpasswd -B` and `pier htpasswd` write). Other
// hashes (MD5 apr1, SHA1, crypt, SHA-crypt, plain text) are refused by
// line: they are weak or, for SHA-crypt, not in pier's dependencies.
type users map[string][]byte

// parseHtpasswd reads an htpasswd file. Blank lines and lines starting
// with # are skipped.
func parseHtpasswd(data []byte) (users, error) {
	out := users{}
	lines := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("line %d: not user:hash", n)
		}
		if err := checkUser(user); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if first, dup := lines[user]; dup {
			return nil, fmt.Errorf("line %d: user %q is on line %d already", n, user, first)
		}
		if kind := hashKind(hash); kind != "" {
			return nil, fmt.Errorf("line %d: user %q has %s hash; pier accepts bcrypt only (`pier htpasswd FILE %s`, or htpasswd -B)", n, user, kind, user)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("line %d: user %q: not a valid bcrypt hash: %v", n, user, err)
		}
		out[user], lines[user] = []byte(hash), n
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// hashKind names a non-bcrypt hash, "" for bcrypt (or a malformed hash).
func hashKind(hash string) string {
	switch {
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		return ""
	case strings.HasPrefix(hash, "$apr1$"):
		return "an MD5 (apr1)"
	case strings.HasPrefix(hash, "{SHA}"):
		return "a SHA-1"
	case strings.HasPrefix(hash, "$5$"), strings.HasPrefix(hash, "$6$"):
		return "a SHA-crypt"
	case strings.HasPrefix(hash, "$1$"):
		return "an MD5-crypt"
	case len(hash) == 13 && !strings.HasPrefix(hash, "$"):
		return "a DES crypt"
	case !strings.HasPrefix(hash, "$"):
		return "a plain-text (or unknown)"
	}
	return "an unsupported"
}

// checkUser accepts the user names an htpasswd line can hold and a client
// can send in HTTP Basic credentials.
func checkUser(user string) error {
	if user == "" || len(user) > 255 {
		return errors.New("a user name is 1 to 255 bytes")
	}
	for _, r := range user {
		if r == ':' || r <= ' ' || r == 0x7f {
			return fmt.Errorf("user name %q: no ':', spaces or control characters", user)
		}
	}
	return nil
}

// passwords checks passwords against an htpasswd file, re-read when it
// changes. bcrypt is slow on purpose (tens to hundreds of milliseconds on
// a Pi), and clients send the password with every request of a push, so a
// password that checked out is remembered for a few minutes as an HMAC
// under a key that lives only in this process. At most one bcrypt check
// per CPU runs at a time, so a flood of guesses cannot take every core.
type passwords struct {
	file *reloader[users]
	key  []byte
	sem  chan struct{}

	mu   sync.Mutex
	good map[string]goodPassword // by user
	now  func() time.Time
}

type goodPassword struct {
	mac     []byte
	hash    []byte // the hash it was checked against: a changed entry forgets it
	expires time.Time
}

// rememberFor is how long a checked password is taken without bcrypt.
const rememberFor = 5 * time.Minute

func newPasswords(path string, onError func(error)) (*passwords, error) {
	file, err := newReloader(func() (users, error) {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		u, err := parseHtpasswd(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return u, nil
	}, onError, path)
	if err != nil {
		return nil, fmt.Errorf("http.auth.htpasswd.path: %w", err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	return &passwords{file: file, key: key, sem: make(chan struct{}, runtime.NumCPU()),
		good: map[string]goodPassword{}, now: time.Now}, nil
}

// dummyHashes are checked for unknown users, so that they take as long as
// known ones and a client cannot probe for user names: one per bcrypt
// cost, the highest of the file's ("htpasswd -B" writes cost 5, pier 10,
// and a fixed cost would tell the two kinds of names apart).
var dummyHashes sync.Map // cost -> []byte

func dummyHash(u users) []byte {
	cost := bcrypt.MinCost
	for _, h := range u {
		if c, err := bcrypt.Cost(h); err == nil && c > cost {
			cost = c
		}
	}
	if h, ok := dummyHashes.Load(cost); ok {
		return h.([]byte)
	}
	h, _ := bcrypt.GenerateFromPassword([]byte("pier: no such user"), cost)
	dummyHashes.Store(cost, h)
	return h
}

// check reports whether password is user's.
func (p *passwords) check(user, password string) bool {
	all := p.file.get()
	hash, known := all[user]
	mac := hmac.New(sha256.New, p.key)
	mac.Write([]byte(user + "\x00" + password))
	sum := mac.Sum(nil)

	p.mu.Lock()
	g, ok := p.good[user]
	p.mu.Unlock()
	if known && ok && p.now().Before(g.expires) && bytes.Equal(g.hash, hash) && hmac.Equal(g.mac, sum) {
		return true
	}

	p.sem <- struct{}{}
	if !known {
		hash = dummyHash(all)
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	<-p.sem
	if err != nil || !known {
		return false
	}
	p.mu.Lock()
	p.good[user] = goodPassword{mac: sum, hash: hash, expires: p.now().Add(rememberFor)}
	p.mu.Unlock()
	return true
}

// SetPassword adds user to the htpasswd file at path, or replaces the
// user's password, with a bcrypt hash. The file is replaced whole (a
// temporary file, fsynced, renamed over it, the directory fsynced), so a
// reader or a power cut sees the old file or the new one. A new file is
// readable by its owner only; an existing one keeps its mode and owner.
func SetPassword(path, user, password string) error {
	if err := checkUser(user); err != nil {
		return err
	}
	if password == "" {
		return errors.New("the password is empty")
	}
	if len(password) > 72 {
		return errors.New("bcrypt takes passwords of at most 72 bytes")
	}
	old, err := os.ReadFile(path)
	mode, uid, gid := os.FileMode(0o600), -1, -1
	switch {
	case err == nil:
		if _, err := parseHtpasswd(old); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode().Perm()
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				uid, gid = int(st.Uid), int(st.Gid)
			}
		}
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	replaced := false
	for _, line := range strings.SplitAfter(string(old), "\n") {
		if line == "" {
			continue
		}
		if u, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ":"); u == user {
			line, replaced = user+":"+string(hash)+"\n", true
		} else if !strings.HasSuffix(line, "\n") {
			line += "\n"
		}
		out.WriteString(line)
	}
	if !replaced {
		out.WriteString(user + ":" + string(hash) + "\n")
	}
	return replaceFile(path, out.Bytes(), mode, uid, gid)
}

// replaceFile writes data to path atomically and durably.
func replaceFile(path string, data []byte, mode os.FileMode, uid, gid int) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing to remove
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if uid >= 0 {
		tmp.Chown(uid, gid) // keep the owner where we may; a user's own file needs none
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
