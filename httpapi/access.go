package httpapi

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// Action is what a request does to a repository, in zot's access-control
// terms.
type Action string

// The actions a request may need. Two are pier's own: List (see a
// repository in the catalog; Read for users of a policy) and Use (call
// /v2/ itself, which with Repo "" asks whether the client needs to log
// in). Can("", List) is whether the client may ask for the catalog at all.
const (
	Read   Action = "read"
	Create Action = "create"
	Update Action = "update" // move an existing tag to other content
	Delete Action = "delete"
	List   Action = "list"
	Use    Action = "use"
)

// Principal is the client of one request, as an Authorizer identified it.
type Principal interface {
	// Name is the user name, "" for a client without credentials. It is
	// logged and audited.
	Name() string
	// Can reports whether the client may do a to repository repo.
	Can(repo string, a Action) bool
}

// Authorizer identifies the client of each request. The API asks it once
// per request, then asks the Principal for every access the request needs
// (the repository it names, a mount's source, a tag it moves).
type Authorizer interface {
	// Authenticate identifies r's client by its credentials (a password,
	// a token, a client certificate), or as anonymous when it gives none.
	// Credentials given but wrong are a *Refusal.
	Authenticate(r *http.Request) (Principal, error)
	// Challenge is the WWW-Authenticate value that asks for credentials
	// allowing a on repo, "" when there is no way to log in.
	Challenge(repo string, a Action) string
}

// Refusal stops a request before it is served: 401 with a challenge, or
// 429 with the time to wait.
type Refusal struct {
	Status     int
	Code       string // the spec's error code (UNAUTHORIZED, TOOMANYREQUESTS, ...)
	Message    string
	Challenge  string        // WWW-Authenticate, for a 401
	RetryAfter time.Duration // Retry-After, for a 429
}

func (r *Refusal) Error() string { return r.Code + ": " + r.Message }

// everyone is the principal when no Authorizer is configured.
type everyone struct{}

func (everyone) Name() string            { return "" }
func (everyone) Can(string, Action) bool { return true }

// need is the action a request's route and method ask for.
func need(kind routeKind, method string) Action {
	switch kind {
	case routeBase:
		return Use
	case routeCatalog:
		return List
	case routeUploadNew, routeUpload:
		return Create
	}
	switch method {
	case http.MethodGet, http.MethodHead:
		return Read
	case http.MethodDelete:
		return Delete
	}
	return Create
}

// authorize identifies the client of r and checks the access its route
// needs, writing the refusal when there is one. It returns the client
// and whether to go on.
func (a *API) authorize(w http.ResponseWriter, r *http.Request, req request) (Principal, bool) {
	if a.auth == nil {
		return everyone{}, true
	}
	p, err := a.auth.Authenticate(r)
	if err != nil {
		var ref *Refusal
		if !errors.As(err, &ref) {
			ref = &Refusal{Status: http.StatusInternalServerError, Code: "UNKNOWN", Message: err.Error()}
		}
		if ref.Status == http.StatusUnauthorized && ref.Challenge == "" {
			// Wrong credentials: ask again, for what this request needs.
			ref.Challenge = a.auth.Challenge(req.repo, need(req.kind, r.Method))
		}
		writeRefusal(w, ref)
		return nil, false
	}
	act := need(req.kind, r.Method)
	if p.Can(req.repo, act) {
		return p, true
	}
	a.deny(w, r, p, req.repo, act)
	return nil, false
}

// deny refuses access a to repo: a client without credentials is asked
// for them (401), one with credentials is told no (403 DENIED).
func (a *API) deny(w http.ResponseWriter, r *http.Request, p Principal, repo string, act Action) {
	if act != Read && act != List && act != Use {
		a.audit(r, p, "denied", slog.String("repo", repo), slog.String("action", string(act)))
	}
	if p.Name() == "" {
		if c := a.auth.Challenge(repo, act); c != "" {
			writeRefusal(w, &Refusal{Status: http.StatusUnauthorized, Code: "UNAUTHORIZED",
				Message: "authentication required", Challenge: c})
			return
		}
	}
	detail := "no " + string(act) + " access"
	if repo != "" {
		detail += " to " + repo
	}
	writeError(w, errDenied(detail))
}

func writeRefusal(w http.ResponseWriter, r *Refusal) {
	if r.Challenge != "" {
		w.Header().Set("WWW-Authenticate", r.Challenge)
	}
	if r.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((r.RetryAfter+time.Second-1)/time.Second)))
	}
	writeError(w, &apiError{r.Status, r.Code, r.Message, nil})
}

// audit writes one line to the audit log: who (user and address) did
// what (event and attrs).
func (a *API) audit(r *http.Request, p Principal, event string, attrs ...slog.Attr) {
	if a.auditLog == nil {
		return
	}
	user := p.Name()
	if user == "" {
		user = "anonymous"
	}
	attrs = append([]slog.Attr{slog.String("user", user), slog.String("remote", r.RemoteAddr)}, attrs...)
	a.auditLog.LogAttrs(r.Context(), slog.LevelInfo, event, attrs...)
}
