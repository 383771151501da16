package server

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/httpapi"
	"github.com/pier-oci/pier/httpapi/auth"
)

// apiOptions are the API's access control, limits and audit log from the
// http and log sections. close closes the audit log.
func apiOptions(cfg *configs.Config, log *slog.Logger) (opts []httpapi.Option, close func(), err error) {
	h := cfg.HTTP
	az, err := auth.New(h, log)
	if err != nil {
		return nil, nil, err
	}
	if az != nil {
		opts = append(opts, httpapi.WithAuthorizer(az))
	}
	opts = append(opts, httpapi.WithLimits(httpapi.Limits{
		MaxManifestSize:   h.Limits.MaxManifestSize,
		MaxUploadSessions: h.Limits.MaxUploadSessions,
		UploadIdleTimeout: h.Limits.UploadIdleTimeout,
		BodyIdleTimeout:   h.BodyIdleTimeout,
		MaxUploads:        h.MaxConcurrentUploads,
	}))
	if r := h.Ratelimit; r != nil {
		opts = append(opts, httpapi.WithRatelimit(r.Rate, r.Methods))
	}
	close = func() {}
	if cfg.Log.Audit != "" {
		f, err := os.OpenFile(cfg.Log.Audit, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("log.audit: %w", err)
		}
		// One JSON object a line: time, event, then who, from where, what.
		h := slog.NewJSONHandler(f, &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			switch a.Key {
			case slog.LevelKey:
				return slog.Attr{}
			case slog.MessageKey:
				a.Key = "event"
			}
			return a
		}})
		opts = append(opts, httpapi.WithAudit(slog.New(h)))
		close = func() { f.Close() }
	}
	return opts, close, nil
}
