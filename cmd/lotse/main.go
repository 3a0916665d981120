// Command lotse is the one binary of Lotse: the CLI, the management plane
// (`lotse up`), the manager, and the helpers it supervises.
package main

import (
	"os"

	"github.com/lotse/lotse/internal/cli"
)

func main() {
	os.Exit(cli.Execute())
}
