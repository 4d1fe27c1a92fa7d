// Command ferretdb-local runs FerretDB 1.24 with its embedded SQLite backend.
//
// FerretDB's own cmd/ferretdb cannot be installed with `go install` (its build/version
// file is not part of the module and it panics at start), so the project embeds the
// library package instead, which skips that check.
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "address to listen on")
	dataDir := flag.String("data-dir", "", "existing directory for the SQLite databases (absolute)")
	flag.Parse()
	if *dataDir == "" {
		log.Fatal("--data-dir is required")
	}
	if err := os.MkdirAll(*dataDir, 0o755); err != nil {
		log.Fatal(err)
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Handler:   "sqlite",
		SQLiteURL: "file:" + *dataDir + "/",
	})
	if err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Printf("FerretDB (SQLite at %s) listening on %s", *dataDir, *listen)
	if err := f.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
