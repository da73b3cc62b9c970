// A tool built on LINE's Node.js SDK, unchanged, pointed at linegate's
// Messaging API proxy through the SDK's baseURL. It pushes to TO, replies
// with REPLY_TOKEN (when set) and multicasts to MULTICAST (comma-separated,
// when set), and prints one JSON line per call: the call, the status and
// LINE's x-line-request-id (or the linegate header that held it back).
"use strict";
const { messagingApi, HTTPFetchError } = require("@line/bot-sdk");

const client = new messagingApi.MessagingApiClient({
  channelAccessToken: process.env.PROXY_TOKEN,
  baseURL: process.env.PROXY_URL,
});

function header(h, name) {
  if (!h) return "";
  if (typeof h.get === "function") return h.get(name) || "";
  return h[name.toLowerCase()] || "";
}

async function call(name, f) {
  try {
    const r = await f();
    console.log(JSON.stringify({ call: name, status: r.httpResponse.status,
      request_id: header(r.httpResponse.headers, "x-line-request-id") }));
  } catch (e) {
    if (!(e instanceof HTTPFetchError)) throw e;
    console.log(JSON.stringify({ call: name, status: e.status,
      request_id: header(e.headers, "x-line-request-id"),
      held: header(e.headers, "x-linegate-held") }));
  }
}

(async () => {
  const text = (t) => [{ type: "text", text: t }];
  await call("push", () => client.pushMessageWithHttpInfo({ to: process.env.TO, messages: text("from the node tool") }));
  if (process.env.REPLY_TOKEN) {
    await call("reply", () => client.replyMessageWithHttpInfo({ replyToken: process.env.REPLY_TOKEN, messages: text("node reply") }));
  }
  if (process.env.MULTICAST) {
    await call("multicast", () => client.multicastWithHttpInfo({ to: process.env.MULTICAST.split(","), messages: text("node news") }));
  }
})().catch((e) => { console.error(String(e)); process.exit(2); });
