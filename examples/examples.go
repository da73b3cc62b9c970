// Package examples holds the example configuration and the example shop
// rules that `linegate serve` uses when it is given no config.
package examples

import (
	"embed"
	"strings"
)

// Config is examples/linegate.yaml.
//
//go:embed linegate.yaml
var Config []byte

//go:embed shop
var files embed.FS

// ReadFile reads a file of this directory by its path from the repository
// root ("examples/shop/rules.yaml"), for the built-in config.
func ReadFile(path string) ([]byte, error) {
	return files.ReadFile(strings.TrimPrefix(path, "examples/"))
}
