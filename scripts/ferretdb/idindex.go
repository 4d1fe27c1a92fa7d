package main

// FerretDB 1.24's SQLite backend finds a document by _id (find/update/delete with an _id
// filter, and every upsert) with `WHERE _ferretdb_sjson->'$._id' = ?`, but creates its _id
// index on the expression `_ferretdb_sjson->"_id"`. SQLite uses an expression index only for
// the same expression, so every _id lookup is a full table scan that parses the JSON of every
// document (EXPLAIN QUERY PLAN: "SCAN"). keepIDIndexes adds, next to FerretDB's own index, an
// index on the expression its queries use ("SEARCH ... USING INDEX"), to every collection's
// table, checking the data directory every interval. FerretDB's metadata does not list it;
// dropping the collection drops it with the table.

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the database/sql driver FerretDB uses (registered once)
)

// idIndexSuffix names the added index: "<table>" + idIndexSuffix.
const idIndexSuffix = "_ferretdb_local_id_path"

type fileState struct {
	mtime time.Time // newest of the database file and its WAL at the last complete pass
}

// keepIDIndexes runs until ctx ends.
func keepIDIndexes(ctx context.Context, dir string, every time.Duration) {
	seen := map[string]fileState{}
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		files, _ := filepath.Glob(filepath.Join(dir, "*.sqlite"))
		for _, file := range files {
			m := newestMtime(file, file+"-wal")
			if s, ok := seen[file]; ok && !m.After(s.mtime) {
				continue
			}
			if err := indexFile(ctx, file); err != nil {
				log.Printf("id index: %s: %v (retrying)", filepath.Base(file), err)
				continue
			}
			seen[file] = fileState{mtime: m}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func newestMtime(paths ...string) time.Time {
	var newest time.Time
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.ModTime().After(newest) {
			newest = fi.ModTime()
		}
	}
	return newest
}

// indexFile creates the missing _id path indexes of one database file.
func indexFile(ctx context.Context, file string) error {
	db, err := sql.Open("sqlite", "file:"+file+"?mode=rw&_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)

	rows, err := db.QueryContext(ctx, `SELECT c.table_name FROM _ferretdb_collections c
		WHERE NOT EXISTS (SELECT 1 FROM sqlite_master m
		                  WHERE m.type = 'index' AND m.name = c.table_name || ?)`, idIndexSuffix)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") { // a database being created
			return nil
		}
		return err
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, t := range tables {
		started := time.Now()
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`,
			t+idIndexSuffix, t)
		if _, err := db.ExecContext(ctx, q); err != nil {
			if strings.Contains(err.Error(), "no such table") { // dropped meanwhile
				continue
			}
			return err
		}
		if d := time.Since(started); d > time.Second {
			log.Printf("id index: %s.%s indexed in %s", filepath.Base(file), t, d.Round(time.Millisecond))
		}
	}
	return nil
}
