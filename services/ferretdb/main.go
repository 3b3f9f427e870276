// Command aegis-ferretdb runs FerretDB (a MongoDB wire-protocol server) for Aegis's tests.
//
// Why a program of our own: `go install github.com/FerretDB/FerretDB/cmd/ferretdb` builds a binary that
// panics at start (its generated build/version/version.txt is not part of the module, upstream #2982).
// The embeddable package github.com/FerretDB/FerretDB/ferretdb needs no generated files, so we start
// FerretDB through it, always with the SQLite backend (no PostgreSQL to run) and telemetry off (the
// embeddable package never reports; it also marks telemetry disabled so no start-up warning appears).
//
// Usage: aegis-ferretdb -dir DATA_DIR [-listen 127.0.0.1:0] [-log FILE] [-uri-file FILE]
//
// With port 0 the kernel picks a free port, so parallel runs never race for one; the actual
// mongodb:// URI is written to -uri-file once the listener accepts connections, which is the
// readiness signal that services/start waits for. SIGINT/SIGTERM stop it cleanly.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	dir := flag.String("dir", "", "existing directory for the SQLite databases (required)")
	listen := flag.String("listen", "127.0.0.1:0", "TCP address to listen on; port 0 picks a free port")
	logPath := flag.String("log", "", "log file (default: stderr)")
	uriFile := flag.String("uri-file", "", "write the mongodb:// URI here once listening")
	debug := flag.Bool("debug", false, "log at debug level")
	flag.Parse()

	if err := run(*dir, *listen, *logPath, *uriFile, *debug); err != nil {
		fmt.Fprintln(os.Stderr, "aegis-ferretdb:", err)
		os.Exit(1)
	}
}

func run(dir, listen, logPath, uriFile string, debug bool) error {
	if dir == "" {
		return fmt.Errorf("-dir is required")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if st, err := os.Stat(abs); err != nil || !st.IsDir() {
		return fmt.Errorf("-dir %q must be an existing directory", dir)
	}

	var out io.Writer = os.Stderr
	if logPath != "" {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))

	// The SQLite handler wants a file: URI naming a directory, with the trailing slash.
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + abs + "/",
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()

	// New() has already bound the listener, so the URI (with the real port) is known now.
	uri := f.MongoDBURI()
	logger.Info("aegis-ferretdb ready", "uri", uri, "dir", abs)
	if uriFile != "" {
		// Write then rename, so a reader never sees a half-written file.
		tmp := uriFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(uri+"\n"), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, uriFile); err != nil {
			return err
		}
	}

	err = <-done
	logger.Info("aegis-ferretdb stopped")
	return err
}
