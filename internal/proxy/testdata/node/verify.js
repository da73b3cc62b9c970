// LINE's Node.js SDK's webhook middleware as a receiver: it serves the
// middleware on a loopback port, posts the body read from standard input
// with the signature given (argv[3]) to itself, and prints "valid" when
// the middleware let the request through with the secret (argv[2]),
// "invalid" when it refused it.
"use strict";
const http = require("node:http");
const { middleware, SignatureValidationFailed } = require("@line/bot-sdk");

const [secret, signature] = process.argv.slice(2);
const mw = middleware({ channelSecret: secret });

const server = http.createServer((req, res) => {
  mw(req, res, (err) => {
    if (err) {
      res.statusCode = err instanceof SignatureValidationFailed ? 401 : 400;
      res.end();
      return;
    }
    res.statusCode = 200;
    res.end();
  });
});

const chunks = [];
process.stdin.on("data", (c) => chunks.push(c));
process.stdin.on("end", () => {
  const body = Buffer.concat(chunks);
  server.listen(0, "127.0.0.1", async () => {
    const { port } = server.address();
    const r = await fetch(`http://127.0.0.1:${port}/webhook`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-line-signature": signature },
      body,
    });
    console.log(r.status === 200 ? "valid" : "invalid");
    server.close();
  });
});
