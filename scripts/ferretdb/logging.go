package main

// FerretDB 1.24 derives a logger with the statement's attributes (slog.Logger.With) for every
// SQL statement it runs, and log/slog's default and text handlers format those attributes
// right away (quoting the whole SQL text), whether or not anything is ever logged with them:
// about 20% of FerretDB's CPU while inserting (go tool pprof, bench/ferretdb_insert.py).
// lazyHandler keeps the attributes and formats them only when a record is really written.

import (
	"context"
	"log/slog"
	"slices"
)

type lazyHandler struct {
	next  slog.Handler
	attrs []slog.Attr
}

func (h lazyHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h lazyHandler) Handle(ctx context.Context, r slog.Record) error {
	if len(h.attrs) == 0 {
		return h.next.Handle(ctx, r)
	}
	return h.next.WithAttrs(h.attrs).Handle(ctx, r)
}

func (h lazyHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return lazyHandler{next: h.next, attrs: append(slices.Clip(h.attrs), attrs...)}
}

func (h lazyHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	next := h.next
	if len(h.attrs) > 0 {
		next = next.WithAttrs(h.attrs)
	}
	return lazyHandler{next: next.WithGroup(name)}
}
