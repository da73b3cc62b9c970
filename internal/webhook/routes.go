package webhook

import "net/http"

// Routes returns the handler of the webhook listener: the webhooks (POST
// /webhook/{channel}) beside the probes, health and ready (GET /healthz,
// GET /readyz), and, unless log is nil, the log's read side under GET
// /log/ (a public log). The admin listener serves the rest.
func (h *Handler) Routes(health, ready, log http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /webhook/{channel}", h)
	if h.byBot != nil {
		mux.Handle("POST /webhook", h)
	}
	mux.Handle("GET /healthz", health)
	mux.Handle("GET /readyz", ready)
	if log != nil {
		mux.Handle("GET /log/", http.StripPrefix("/log", log))
	}
	return mux
}
