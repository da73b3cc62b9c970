package sim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestContent: the data API serves registered content by message id
// (deterministic bytes, the type's Content-Type), 404 for an unknown id,
// 202 for a video until its transcoding status has said succeeded, and
// "failed" when registered so; only with a channel access token.
func TestContent(t *testing.T) {
	a := NewAPI(Options{Channels: []Channel{{ID: "c", AccessToken: "tok"}}})
	srv := httptest.NewServer(a)
	defer srv.Close()
	get := func(path, token string) (int, http.Header, []byte) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	put := func(id, body string) int {
		req, _ := http.NewRequest("PUT", srv.URL+"/_sim/content/"+id, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put("1", `{"type":"image","size":1000}`); code != 204 {
		t.Fatalf("register = %d", code)
	}
	if code := put("2", `{"type":"video","size":5000,"transcoding":2}`); code != 204 {
		t.Fatalf("register = %d", code)
	}
	if code := put("3", `{"type":"audio","size":10,"transcoding":-1}`); code != 204 {
		t.Fatalf("register = %d", code)
	}
	if code := put("4", `{"type":"sticker","size":10}`); code != 400 {
		t.Errorf("register of a sticker = %d, want 400", code)
	}
	if code, _, _ := get("/v2/bot/message/1/content", ""); code != 401 {
		t.Errorf("without a token = %d, want 401", code)
	}
	code, h, b := get("/v2/bot/message/1/content", "tok")
	if code != 200 || h.Get("Content-Type") != "image/jpeg" || !bytes.Equal(b, ContentBytes("1", "image", 1000)) || len(b) != 1000 {
		t.Errorf("image = %d %s, %d bytes", code, h.Get("Content-Type"), len(b))
	}
	if !bytes.HasPrefix(b, []byte{0xFF, 0xD8}) || bytes.Equal(ContentBytes("1", "image", 1000), ContentBytes("9", "image", 1000)) {
		t.Error("image bytes are not a JPEG header and bytes of the id")
	}
	if code, _, _ := get("/v2/bot/message/404/content", "tok"); code != 404 {
		t.Errorf("unknown id = %d, want 404", code)
	}
	status := func(id string) string {
		code, _, b := get("/v2/bot/message/"+id+"/content/transcoding", "tok")
		var s struct{ Status string }
		if code != 200 || json.Unmarshal(b, &s) != nil {
			t.Fatalf("transcoding = %d %s", code, b)
		}
		return s.Status
	}
	if code, _, _ := get("/v2/bot/message/2/content", "tok"); code != 202 {
		t.Errorf("video before transcoding = %d, want 202", code)
	}
	for i, want := range []string{"processing", "processing", "succeeded"} {
		if got := status("2"); got != want {
			t.Errorf("poll %d: %s, want %s", i, got, want)
		}
	}
	if code, h, b := get("/v2/bot/message/2/content", "tok"); code != 200 || h.Get("Content-Type") != "video/mp4" || len(b) != 5000 {
		t.Errorf("video after transcoding = %d %s %d bytes", code, h.Get("Content-Type"), len(b))
	}
	if got := status("3"); got != "failed" {
		t.Errorf("failed transcoding: %s", got)
	}
}
