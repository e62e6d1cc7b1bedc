package app

import "github.com/docker2vm/docker2vm/internal/cli"

// The examples and environment of each command, for its man page.

// converterEnv are the variables both converters read.
var converterEnv = []cli.EnvVar{
	{Name: "GONDOLIN_GUEST_DIR", Meaning: "a Gondolin guest directory to take the base bundle from when --base is not given"},
	{Name: "GONDOLIN_IMAGE_STORE", Meaning: "Gondolin's image store: where the base is looked up and --tag imports (default $XDG_CACHE_HOME/gondolin/images, else ~/.cache/gondolin/images)"},
	{Name: "GONDOLIN_DEFAULT_IMAGE", Meaning: "the base looked up in the image store and downloaded (default alpine-base:latest)"},
	{Name: "GONDOLIN_IMAGE_REGISTRY_URL", Meaning: "Gondolin's image registry document, for base downloads"},
	{Name: "DOCKER_CONFIG", Meaning: "the directory of Docker's config.json: registry credentials and credential helpers"},
	{Name: "DOCKER2VM_STALL_TIMEOUT", Meaning: "the default of --stall-timeout"},
	{Name: "DOCKER2VM_PARALLEL_DOWNLOADS", Meaning: "the default of --parallel-downloads"},
	{Name: "DOCKER2VM_CACHE_MAX", Meaning: "the default of --cache-max"},
	{Name: "XDG_CACHE_HOME", Meaning: "where the cache directory is by default on Linux ($XDG_CACHE_HOME/docker2vm)"},
	{Name: "SOURCE_DATE_EPOCH", Meaning: "the time given to anything the image does not date itself: the same input converts to the same bytes"},
	{Name: "TMPDIR", Meaning: "where temporary files go (a download under --no-cache, a Dockerfile build's archive)"},
}

var ociExamples = []cli.Example{
	{What: "Convert an image from a registry into rootfs.ext4 and meta.json:", Command: "oci2gondolin --image alpine:3.20 --out ./out/alpine"},
	{What: "Write a whole Gondolin guest, import it under a tag, and boot it:", Command: "oci2gondolin --image python:3.12-slim --mode assets --tag py:1 --out ./out/py\ngondolin bash --image py:1"},
	{What: "Both architectures, from an OCI layout on disk:", Command: "oci2gondolin --oci-layout ./layout --platform linux/amd64,linux/arm64 --mode assets --out ./out/app"},
	{What: "Show what a run would do, without fetching or writing anything:", Command: "oci2gondolin --image nginx:1.27 --out ./out/nginx --dry-run"},
}

var dockerfileExamples = []cli.Example{
	{What: "Build the Dockerfile in the current directory and convert it:", Command: "dockerfile2gondolin -o ./out/app ."},
	{What: "A guest imported under a tag, with a build argument:", Command: "dockerfile2gondolin --mode assets -t app:1 -o ./out/app --build-arg VERSION=2 ."},
	{What: "Through a BuildKit daemon instead of docker buildx:", Command: "dockerfile2gondolin --builder buildctl --buildkit-addr unix:///run/buildkit/buildkitd.sock -o ./out/app ."},
}

var docker2vmExamples = []cli.Example{
	{What: "See what the cache holds, then trim it to 5 GB:", Command: "docker2vm cache du\ndocker2vm cache prune --keep-storage 5G"},
	{What: "Complete the commands' flags in bash:", Command: "source <(docker2vm completion bash)"},
}

var docker2vmEnv = []cli.EnvVar{
	{Name: "XDG_CACHE_HOME", Meaning: "where the cache directory is by default ($XDG_CACHE_HOME/docker2vm)"},
	{Name: "DOCKER2VM_CACHE_MAX", Meaning: "what cache prune keeps by default"},
}
