//go:build tools

// Package tools pins BuildKit's daemon and client for the integration tests:
// build.sh builds them from this module's graph (go install refuses
// buildkit's main packages because its go.mod has exclude directives).
package tools

import (
	_ "github.com/moby/buildkit/cmd/buildctl"
	_ "github.com/moby/buildkit/cmd/buildkitd"
)
