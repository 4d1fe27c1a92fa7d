// Command ferretdb-local runs FerretDB 1.24 with its embedded SQLite backend.
//
// FerretDB's own cmd/ferretdb cannot be installed with `go install` (its build/version
// file is not part of the module and it panics at start), so the project embeds the
// library package instead, which skips that check.
//
// Flags:
//
//	--listen-addr    address of the MongoDB wire protocol (127.0.0.1:27017)
//	--data-dir       directory of the SQLite databases (one file per database)
//	--sqlite-params  query parameters added to FerretDB's SQLite URL (see DefaultSQLiteParams)
//	--id-index       add the index FerretDB's _id lookups can use (idindex.go; default true)
//	--debug-addr     if set (or FERRETDB_DEBUG_ADDR), serve Go's pprof handlers there
//	                 (/debug/pprof/...), for `go tool pprof`; off by default
package main

import (
	"context"
	"flag"
	"log"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ handlers, served only with --debug-addr
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// DefaultSQLiteParams: FerretDB itself sets busy_timeout(10000), journal_mode(wal) and
// auto_vacuum(none) on every connection and leaves SQLite's synchronous=FULL (an fsync per
// transaction; FerretDB makes one per 100 inserted documents and one per update command).
// In WAL mode synchronous=NORMAL fsyncs only at checkpoints: a crash or kill of the process
// loses nothing, only a power or OS failure can lose the last transactions. For this local
// server (development, tests, benchmarks) that is the right trade: rollup upserts 2x faster
// (bench/ferretdb_insert.py). --sqlite-params="" restores FerretDB's defaults.
const DefaultSQLiteParams = "_pragma=synchronous(normal)"

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "address to listen on")
	dataDir := flag.String("data-dir", "", "existing directory for the SQLite databases (absolute)")
	params := flag.String("sqlite-params", DefaultSQLiteParams,
		"query parameters added to the SQLite URL, e.g. _pragma=synchronous(normal)")
	idIndex := flag.Bool("id-index", true,
		"index every collection on the _id expression FerretDB's queries use (idindex.go)")
	debugAddr := flag.String("debug-addr", os.Getenv("FERRETDB_DEBUG_ADDR"),
		"address for Go's pprof handlers (off when empty)")
	flag.Parse()
	if *dataDir == "" {
		log.Fatal("--data-dir is required")
	}
	if err := os.MkdirAll(*dataDir, 0o755); err != nil {
		log.Fatal(err)
	}

	if os.Getenv("GOGC") == "" {
		// FerretDB allocates a lot per document (BSON -> JSON); a collection every 4x growth of
		// the heap instead of 2x: less CPU in the garbage collector, a few MB more memory
		debug.SetGCPercent(400)
	}

	url := "file:" + *dataDir + "/"
	if *params != "" {
		url += "?" + *params
	}

	if *debugAddr != "" {
		go func() {
			log.Printf("pprof on http://%s/debug/pprof/", *debugAddr)
			log.Print(http.ListenAndServe(*debugAddr, nil))
		}()
	}

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Handler:   "sqlite",
		SQLiteURL: url,
		Logger:    slog.New(lazyHandler{next: slog.NewTextHandler(os.Stderr, nil)}),
	})
	if err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *idIndex {
		go keepIDIndexes(ctx, *dataDir, time.Second)
	}
	log.Printf("FerretDB (SQLite URL %s) listening on %s", url, *listen)
	if err := f.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
