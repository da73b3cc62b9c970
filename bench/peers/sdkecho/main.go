// Command sdkecho is a benchmark peer: the webhook server a team would
// write with LINE's official Go SDK. It verifies and parses each request
// with webhook.ParseRequest and answers 200; it persists nothing.
//
//	sdkecho -listen 127.0.0.1:0 -secret SECRET
//
// It prints "listening ADDR" on its first line of output.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/line/line-bot-sdk-go/v8/linebot/webhook"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address")
	secret := flag.String("secret", "", "channel secret")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := webhook.ParseRequest(*secret, r); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.Serve(ln))
}
