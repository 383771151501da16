package main

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
		opts = append(opts, httpapi.WithAudit(slog.New(slog.NewJSONHandler(f, nil))))
		close = func() { f.Close() }
	}
	return opts, close, nil
}
