// Command sdkbot is a benchmark peer: a bot written with LINE's official Go
// SDK that replies inline. It verifies and parses each request with
// webhook.ParseRequest, replies to each message event through the SDK's
// Messaging API client, and then answers 200.
//
//	sdkbot -listen 127.0.0.1:0 -secret SECRET -token TOKEN -api URL
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

	"github.com/line/line-bot-sdk-go/v8/linebot/messaging_api"
	"github.com/line/line-bot-sdk-go/v8/linebot/webhook"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address")
	secret := flag.String("secret", "", "channel secret")
	token := flag.String("token", "", "channel access token")
	api := flag.String("api", "https://api.line.me", "Messaging API base URL")
	flag.Parse()
	bot, err := messaging_api.NewMessagingApiAPI(*token, messaging_api.WithEndpoint(*api))
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cb, err := webhook.ParseRequest(*secret, r)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		for _, ev := range cb.Events {
			e, ok := ev.(webhook.MessageEvent)
			if !ok || e.ReplyToken == "" {
				continue
			}
			text := "Thanks for your message!"
			if m, ok := e.Message.(webhook.TextMessageContent); ok {
				text = "You said: " + m.Text
			}
			if _, err := bot.ReplyMessage(&messaging_api.ReplyMessageRequest{ReplyToken: e.ReplyToken,
				Messages: []messaging_api.MessageInterface{messaging_api.TextMessage{Text: text}}}); err != nil {
				log.Printf("reply: %v", err)
			}
		}
		w.WriteHeader(http.StatusOK)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.Serve(ln))
}
