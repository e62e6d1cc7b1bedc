// Package apptest holds the project's application images and runs them
// the two ways a user would: under runc, set up as Docker sets up a
// container, and converted by docker2vm and booted by the real Gondolin
// host. Each image is built with BuildKit from Debian packages
// (testdata/NAME/Dockerfile), started through its own ENTRYPOINT and CMD,
// and observed with the same probes (probe/, copied into every image) both
// ways; the test fails on any difference docs/gondolin-contract.md does
// not list with its reason.
package apptest

import "github.com/docker2vm/docker2vm/internal/testenv"

// Probe is where every test image holds d2v-probe (package probe).
const Probe = "/usr/local/bin/d2v-probe"

// App is one application image.
type App struct {
	// Name is its directory under testdata.
	Name string
	// Arches are the architectures it is tested on.
	Arches []string
	// Env is what the user passes when starting it (docker run -e, the env
	// of vm.exec).
	Env []string
	// Process is the command name (comm) of the service's main process,
	// whose credentials, directory, limits and environment are compared.
	Process string
	// Checks talk to the running service.
	Checks []Check
	// Log must be in the service's output once the checks ran: its logs
	// reach where the image sends them.
	Log string
}

// Check is one command run next to the service (as root, as `docker exec`
// and vm.exec run it), whose output must hold Want both ways.
type Check struct {
	Name string
	Argv []string
	Want string
}

func probe(args ...string) []string { return append([]string{Probe}, args...) }

// retry runs a client of the image's own until it succeeds: the service
// takes a while to start (initdb under TCG).
func retry(args ...string) []string { return probe(append([]string{"retry", "180"}, args...)...) }

// Apps are the application images, each tested on amd64 and a few on
// arm64 (emulated builds and boots are slow).
var Apps = []App{
	{
		Name: "web", Arches: []string{testenv.AMD64}, Process: "nginx",
		Checks: []Check{
			{"http 127.0.0.1", probe("http", "http://127.0.0.1/", "Welcome to the app"), `status 200, body has "Welcome to the app": true`},
			{"http localhost", probe("http", "http://localhost/", "Welcome to the app"), `status 200, body has "Welcome to the app": true`},
			{"http ::1", probe("http", "http://[::1]/", "Welcome to the app"), `status 200, body has "Welcome to the app": true`},
		},
		Log: `"GET / HTTP/1.1" 200`,
	},
	{
		Name: "db", Arches: []string{testenv.AMD64}, Process: "postgres", Env: []string{"POSTGRES_PASSWORD=s3cret"},
		Checks: []Check{
			{"sql 127.0.0.1", retry("env", "PGPASSWORD=s3cret", "psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "app", "-tAc", "select 41 + 1"), "42\n"},
			{"sql localhost", retry("env", "PGPASSWORD=s3cret", "psql", "-h", "localhost", "-U", "postgres", "-d", "app", "-tAc", "select current_user"), "postgres\n"},
			{"data directory", probe("fs", "/var/lib/postgresql/data/PG_VERSION"), "/var/lib/postgresql/data/PG_VERSION file\n"},
		},
		Log: "database system is ready to accept connections",
	},
	{
		Name: "kv", Arches: []string{testenv.AMD64, testenv.ARM64}, Process: "redis-server",
		Checks: []Check{
			{"ping 127.0.0.1", retry("redis-cli", "-h", "127.0.0.1", "ping"), "PONG\n"},
			{"set localhost", retry("redis-cli", "-h", "localhost", "set", "greeting", "hi"), "OK\n"},
			{"get ::1", retry("redis-cli", "-h", "::1", "get", "greeting"), "hi\n"},
		},
		Log: "Ready to accept connections",
	},
	{
		Name: "python", Arches: []string{testenv.AMD64}, Process: "python3",
		Checks: []Check{
			{"http localhost", probe("http", "http://localhost:8000/", "served by python"), `status 200, body has "served by python": true`},
		},
		Log: `"GET / HTTP/1.1" 200`,
	},
	{
		Name: "node", Arches: []string{testenv.AMD64}, Process: "node", Env: []string{"GREETING=hello from the caller"},
		Checks: []Check{
			{"http localhost", probe("http", "http://localhost:3000/", "hello from the caller (uid 65534, home /nonexistent)"),
				`status 200, body has "hello from the caller (uid 65534, home /nonexistent)": true`},
		},
		Log: "GET /",
	},
	{
		Name: "musl", Arches: []string{testenv.AMD64, testenv.ARM64}, Process: "server",
		Checks: []Check{
			{"http localhost", probe("http", "http://localhost:8081/", "hello from musl (uid 1000)"), `status 200, body has "hello from musl (uid 1000)": true`},
			{"http 127.0.0.1", probe("http", "http://127.0.0.1:8081/", "hello from musl"), `status 200, body has "hello from musl": true`},
		},
		Log: "request 1\n",
	},
}

// CommonChecks run against every app: what the runtime gives a container
// whatever it runs.
func CommonChecks(app App) []Check {
	return []Check{
		{"localhost", probe("resolve", "localhost"), "127.0.0.1 ::1\n"},
		{"hostname", probe("hostname"), ""},
		{"/dev links", probe("links", "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr"),
			"/dev/fd -> /proc/self/fd\n/dev/stdin -> /proc/self/fd/0\n/dev/stdout -> /proc/self/fd/1\n/dev/stderr -> /proc/self/fd/2\n"},
		{"/dev", probe("fs", "/dev/null", "/dev/ptmx", "/dev/shm", "/dev/pts/ptmx"), "/dev/shm directory\n"},
		{"/dev mounts", probe("mounts", "/dev/shm", "/dev/mqueue", "/dev/pts"), "/dev/shm tmpfs\n/dev/mqueue mqueue\n/dev/pts devpts\n"},
		{"service", probe("proc", app.Process), "cwd "},
	}
}

// Observation is what running an app showed: each check's exit status and
// output, by check name, and the service's output (stdout and stderr).
type Observation struct {
	Checks map[string]Result
	Log    string
}

// Result is one check's outcome.
type Result struct {
	Code   int
	Output string // stdout
	Stderr string
}
