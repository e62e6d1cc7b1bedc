// Command docker2vm-guestenv prepares a converted Gondolin guest the way a
// container runtime prepares a container, then starts Gondolin's agent.
// See package guestenv.
package main

import (
	"os"

	"github.com/docker2vm/docker2vm/gondolin/guestenv"
)

func main() { os.Exit(guestenv.Main()) }
