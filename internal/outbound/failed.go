package outbound

import "fmt"

// FailedError is the error of a send or a chat call that LINE did not
// take (outcome Failed) and that is recorded: the record is durable, and
// names LINE's answers.
type FailedError struct {
	Endpoint string
	Reason   string
}

func (e *FailedError) Error() string { return fmt.Sprintf("%s failed: %s", e.Endpoint, e.Reason) }
