package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/pier-oci/pier/cmd/internal/server"
	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/store/driver/local"
)

// serve runs the registry until SIGTERM or SIGINT; it returns the exit
// code. The serving itself is package server's; this is the process: the
// config, the log, the signals.
func serve(path string, stderr io.Writer) int {
	cfg, warnings, err := configs.LoadPath(path)
	if err != nil {
		fmt.Fprintf(stderr, "pier: %v\n", err)
		return 1
	}
	if refusals := cfg.Refusals(); len(refusals) > 0 {
		for _, r := range refusals {
			fmt.Fprintf(stderr, "pier: %s\n", r)
		}
		return 1
	}
	level := new(slog.LevelVar)
	log, closeLog, err := newLogger(cfg.Log, level, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "pier: %v\n", err)
		return 1
	}
	defer closeLog()
	for _, w := range warnings {
		log.Warn("config: "+w.Message, "key", w.Key)
	}
	if local.SyncDisabled() {
		log.Error("TEST BUILD (pier_nosync): writes are never fsynced; acknowledged data is lost on power loss")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP is caught from the start: its default action would kill a
	// pier that a reload reaches while it is still opening its stores.
	// One that arrives then is acted on once serving.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	err = server.Run(ctx, server.Options{Path: path, Config: cfg, Log: log, Level: level, Hup: hup, Version: version})
	switch {
	case errors.Is(err, server.ErrStoppedStarting):
		log.Warn("stopped before start-up finished; exiting")
	case err != nil:
		log.Error("pier stopped", "err", err)
		return 1
	}
	return 0
}

// newLogger builds the process logger from the log section: text lines to
// stderr (the journal under systemd) or appended to log.output.
func newLogger(c configs.LogConfig, level *slog.LevelVar, stderr io.Writer) (*slog.Logger, func(), error) {
	level.Set(c.SlogLevel())
	out, closeOut := stderr, func() {}
	if c.Output != "" {
		f, err := os.OpenFile(c.Output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("log.output: %w", err)
		}
		out, closeOut = f, func() { f.Close() }
	}
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level})), closeOut, nil
}
