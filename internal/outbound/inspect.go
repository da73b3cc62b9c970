package outbound

// InspectSends has f see every send's exact request body before the
// switches decide on it, with the request that made it (the canary's leak
// check). Call it before the first Send; f must be cheap and must never
// log the body.
func (s *Sender) InspectSends(f func(r Request, body []byte)) { s.inspect = f }
