// Command sdkdurable is a benchmark peer: the webhook server a team would
// build from the LINE developer docs, with LINE's official Go SDK, that
// keeps what it is sent. It verifies and parses each request with
// webhook.ParseRequest, then inserts the body in SQLite (modernc.org/sqlite,
// WAL, synchronous=FULL), or with -postgres in PostgreSQL (pgx's
// database/sql driver, the server's default durability), one transaction
// per request, and answers 200 only after the commit.
//
//	sdkdurable -listen 127.0.0.1:0 -secret SECRET -db PATH
//	sdkdurable -listen 127.0.0.1:0 -secret SECRET -postgres DSN
//
// It prints "listening ADDR" on its first line of output.
package main

import (
	"bytes"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/line/line-bot-sdk-go/v8/linebot/webhook"
	_ "modernc.org/sqlite"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address")
	secret := flag.String("secret", "", "channel secret")
	path := flag.String("db", "webhooks.db", "SQLite database")
	dsn := flag.String("postgres", "", "PostgreSQL server (postgres://...) to insert into instead of SQLite")
	flag.Parse()
	var db *sql.DB
	var err error
	insert := `INSERT INTO webhooks (received_at, body) VALUES (?, ?)`
	if *dsn != "" {
		if db, err = sql.Open("pgx", *dsn); err != nil {
			log.Fatal(err)
		}
		// Concurrent transactions, as PostgreSQL allows: the pool's size
		// is the usual default of a small service.
		db.SetMaxOpenConns(16)
		if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS webhooks (id BIGSERIAL PRIMARY KEY, received_at BIGINT NOT NULL, body BYTEA NOT NULL)`); err != nil {
			log.Fatal(err)
		}
		insert = `INSERT INTO webhooks (received_at, body) VALUES ($1, $2)`
	} else {
		if db, err = sql.Open("sqlite", "file:"+*path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)"); err != nil {
			log.Fatal(err)
		}
		// SQLite has one writer at a time: one connection, the usual
		// setting for writing to SQLite from Go, so that requests wait in
		// the pool rather than in SQLite's busy handler.
		db.SetMaxOpenConns(1)
		if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS webhooks (id INTEGER PRIMARY KEY, received_at INTEGER NOT NULL, body BLOB NOT NULL)`); err != nil {
			log.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if _, err := webhook.ParseRequest(*secret, r); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		tx, err := db.BeginTx(r.Context(), nil)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if _, err := tx.Exec(insert, time.Now().UnixMilli(), body); err != nil {
			tx.Rollback()
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if err := tx.Commit(); err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.Serve(ln))
}
