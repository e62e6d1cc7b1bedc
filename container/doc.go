// Package container holds docker2vm's container image: its Dockerfile,
// which `make image` (scripts/image.sh) builds for linux/amd64 and
// linux/arm64 into dist/image/docker2vm.oci.tar, and the test that builds
// it and runs it unprivileged under runc.
package container
