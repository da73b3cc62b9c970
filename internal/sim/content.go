package sim

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
)

// Content is a message's content as the fake data API serves it.
type Content struct {
	Type string `json:"type"` // image, video, audio, file
	Size int    `json:"size"`
	// Transcoding is how many status polls of a video or audio answer
	// "processing" before "succeeded" (default 1); -1 answers "failed".
	Transcoding int `json:"transcoding,omitempty"`
}

// contentTypes are the Content-Type headers of the fake content, by
// message type.
var contentTypes = map[string]string{
	"image": "image/jpeg",
	"video": "video/mp4",
	"audio": "audio/x-m4a",
	"file":  "application/octet-stream",
}

// contentState is a registered message's content and its transcoding
// polls so far.
type contentState struct {
	Content
	polls int
}

// AddContent registers the content of message id, so that the data API
// serves it: deterministic bytes of c.Size (ContentBytes), with the
// message type's Content-Type. Unregistered ids answer 404.
func (a *API) AddContent(id string, c Content) {
	if c.Transcoding == 0 {
		c.Transcoding = 1
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.contents == nil {
		a.contents = map[string]*contentState{}
	}
	a.contents[id] = &contentState{Content: c}
}

// ContentBytes returns the content the fake data API serves for message
// id: a header of its type, then bytes derived from the id, size in all.
func ContentBytes(id, msgType string, size int) []byte {
	b := make([]byte, 0, size+32)
	switch msgType {
	case "image":
		b = append(b, 0xFF, 0xD8, 0xFF, 0xE0) // JPEG
	case "video", "audio":
		b = append(b, 0, 0, 0, 0x18, 'f', 't', 'y', 'p') // ISO media
	}
	seed := sha256.Sum256([]byte("linegate-sim-content:" + id))
	for n := uint64(0); len(b) < size; n++ {
		var ctr [8]byte
		binary.BigEndian.PutUint64(ctr[:], n)
		block := sha256.Sum256(append(seed[:], ctr[:]...))
		b = append(b, block[:]...)
	}
	return b[:size]
}

// routeContent adds the data API's content endpoints (LINE serves them on
// api-data.line.me; the simulator on its one address), and the
// registration of content.
func (a *API) routeContent() {
	a.route("GET /v2/bot/message/{messageId}/content", a.content)
	a.route("GET /v2/bot/message/{messageId}/content/transcoding", a.transcoding)
	a.mux.HandleFunc("PUT /_sim/content/{messageId}", func(w http.ResponseWriter, r *http.Request) {
		var c Content
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<12)).Decode(&c); err != nil || contentTypes[c.Type] == "" || c.Size < 0 || c.Size > 256<<20 {
			writeJSON(w, http.StatusBadRequest, errorBody{Message: "want {\"type\": image|video|audio|file, \"size\": bytes}"})
			return
		}
		a.AddContent(r.PathValue("messageId"), c)
		w.WriteHeader(http.StatusNoContent)
	})
}

func (a *API) lookupContent(id string) *contentState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.contents[id]
}

// content serves GET /v2/bot/message/{messageId}/content: 404 for an
// unknown id, 202 for a video or audio still transcoding, the bytes
// otherwise.
func (a *API) content(c *call) {
	id := c.r.PathValue("messageId")
	cs := a.lookupContent(id)
	if cs == nil {
		c.fail(http.StatusNotFound, "Not found")
		return
	}
	a.mu.Lock()
	ready := cs.Transcoding >= 0 && cs.polls >= cs.Transcoding || cs.Type == "image" || cs.Type == "file"
	a.mu.Unlock()
	if !ready {
		c.status = http.StatusAccepted
		c.w.WriteHeader(http.StatusAccepted)
		return
	}
	body := ContentBytes(id, cs.Type, cs.Size)
	c.w.Header().Set("Content-Type", contentTypes[cs.Type])
	c.w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	c.status = http.StatusOK
	c.w.WriteHeader(http.StatusOK)
	c.w.Write(body)
}

// transcoding serves GET .../content/transcoding: "processing" for the
// first polls of a video or audio, then "succeeded" (or "failed").
func (a *API) transcoding(c *call) {
	cs := a.lookupContent(c.r.PathValue("messageId"))
	if cs == nil {
		c.fail(http.StatusNotFound, "Not found")
		return
	}
	a.mu.Lock()
	status := "succeeded"
	switch {
	case cs.Transcoding < 0:
		status = "failed"
	case cs.polls < cs.Transcoding && (cs.Type == "video" || cs.Type == "audio"):
		status = "processing"
	}
	cs.polls++
	a.mu.Unlock()
	c.reply(http.StatusOK, map[string]string{"status": status})
}
