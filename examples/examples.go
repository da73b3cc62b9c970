// Package examples holds the example configuration that `linegate serve`
// uses when it is given none.
package examples

import _ "embed"

// Config is examples/linegate.yaml.
//
//go:embed linegate.yaml
var Config []byte
