package buildkit

import (
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"

	"github.com/docker2vm/docker2vm/hint"
	"github.com/docker2vm/docker2vm/internal/shell"
)

// Failures are explained by their cause, read from the builder's own
// output: a missing tool or plugin, an unreachable daemon, a Dockerfile
// that does not parse, a RUN step that fails. Hints are given where they
// apply.

func missingTool(b Builder) error {
	if b == Buildctl {
		return &hint.Error{Msg: "buildctl not found on PATH",
			Fixes: []string{"Install BuildKit's buildctl (https://github.com/moby/buildkit/releases) and put it on PATH, or use --builder docker-buildx."}}
	}
	return &hint.Error{Msg: "docker not found on PATH",
		Fixes: []string{"Install Docker's CLI (with its buildx plugin), or use --builder buildctl with a BuildKit daemon."}}
}

// buildxUnusable explains a failed `docker buildx version`.
func buildxUnusable(out string, err error) error {
	low := strings.ToLower(out)
	if strings.Contains(low, "unknown command") || strings.Contains(low, "not a docker command") || strings.Contains(low, "unknown flag") {
		return &hint.Error{Msg: "the docker buildx plugin is not installed",
			Fixes: []string{"Install docker-buildx (Debian/Ubuntu: apt-get install docker-buildx; Docker's packages: docker-buildx-plugin; Docker Desktop has it), or use --builder buildctl with a BuildKit daemon."}}
	}
	msg := "docker buildx does not work: `docker buildx version` failed"
	if l := firstLine(out); l != "" {
		msg += ": " + l
	}
	return &hint.Error{Msg: msg, Err: exitErr(err),
		Fixes: []string{"Reinstall the buildx plugin (docker-buildx), or use --builder buildctl with a BuildKit daemon."}}
}

// noSuchBuilder reports whether `docker buildx inspect NAME` failed because
// there is no builder of that name.
func noSuchBuilder(out string) bool {
	low := strings.ToLower(out)
	return strings.Contains(low, "no builder") && strings.Contains(low, "found")
}

func daemonDown(low string) bool {
	return strings.Contains(low, "cannot connect to the docker daemon") || strings.Contains(low, "is the docker daemon running")
}

var noEngineFix = "Or build without a Docker engine: --builder buildctl --buildkit-addr ADDR, or a buildx builder with the remote driver " +
	"(docker buildx create --name NAME --driver remote ADDR, then --buildx-builder NAME)."

// createError explains a failed `docker buildx create`.
func createError(o Options, s Step, err error, out string) error {
	name := o.buildxBuilder()
	if daemonDown(strings.ToLower(out)) {
		return &hint.Error{Msg: fmt.Sprintf("cannot reach the Docker daemon to create the buildx builder %s (docker-container driver)", name),
			Fixes: []string{"Start Docker (or point DOCKER_HOST or `docker context use` at a running engine).", noEngineFix}}
	}
	msg := fmt.Sprintf("creating the buildx builder %s failed", name)
	if l := lastErrorLine(out); l != "" {
		msg += ": " + l
	} else if l := firstLine(out); l != "" {
		msg += ": " + l
	}
	return &hint.Error{Msg: msg, Err: exitErr(err),
		Fixes: []string{"Run " + shell.Join(s.Argv) + " to see why.",
			"Or build with another builder: --buildx-builder NAME (docker buildx ls lists them), or --builder buildctl."}}
}

var (
	reExitCode   = regexp.MustCompile(`did not complete successfully: exit code: (\d+)`)
	reParseError = regexp.MustCompile(`dockerfile parse error on line (\d+): (.*)`)
	reNotFound   = regexp.MustCompile(`failed to calculate checksum of ref \S+: "([^"]*)": not found`)
	reBaseImage  = regexp.MustCompile(`failed to resolve source metadata for (\S+?):? (.*)`)
	reNoSecret   = regexp.MustCompile(`secret (\S+): not found`)
	reSourceLine = regexp.MustCompile(`^(\S+):(\d+)$`)
	reLogStamp   = regexp.MustCompile(`^\d+\.\d+ `)
	reANSI       = regexp.MustCompile("\x1b\\[[0-9;?]*[ -/]*[@-~]|\x1b\\][^\x07\x1b]*(\x07|\x1b\\\\)|\x1b[()][0-9A-Za-z]")
)

// stepError explains a failed step from the end of its output.
//
// Long: one case per way a step's failure shows in BuildKit's output (an
// exit code, a missing COPY source, a Dockerfile that does not parse, a
// pull or secret failure), tried in order.
func stepError(o Options, s Step, err error, out string) error {
	out = cleanLog(out)
	low := strings.ToLower(out)
	name := o.buildxBuilder()
	var ee *exec.ExitError
	status := ""
	if errors.As(err, &ee) {
		status = fmt.Sprintf(" (exit status %d)", ee.ExitCode())
	}
	cause := lastErrorLine(out)
	logShown := o.ResolvedProgress() != ProgressQuiet
	switch {
	case o.Builder == Buildctl && (strings.Contains(low, "connection refused") || strings.Contains(low, "no such file or directory") && strings.Contains(low, "sock") ||
		strings.Contains(low, "failed to dial") || strings.Contains(low, "connection error")) && !strings.Contains(low, "failed to solve"):
		msg := "cannot reach the BuildKit daemon"
		if o.Addr != "" {
			msg += " at " + o.Addr
		}
		return &hint.Error{Msg: withCause(msg, cause),
			Fixes: []string{"Start buildkitd, or point --buildkit-addr (or BUILDKIT_HOST) at a running one, e.g. unix:///run/buildkit/buildkitd.sock or tcp://HOST:1234."}}
	case o.Builder == DockerBuildx && daemonDown(low):
		return &hint.Error{Msg: fmt.Sprintf("cannot reach the Docker daemon (the buildx builder %s runs in it)", name),
			Fixes: []string{"Start Docker (or point DOCKER_HOST or `docker context use` at a running engine).", noEngineFix}}
	case o.Builder == DockerBuildx && s.Role == RoleBuild && !strings.Contains(low, "failed to solve") &&
		(strings.Contains(low, "waiting for connection") || strings.Contains(low, "connection refused") || strings.Contains(low, "failed to dial")):
		return &hint.Error{Msg: withCause(fmt.Sprintf("cannot reach the BuildKit daemon of the buildx builder %s", name), cause),
			Fixes: []string{fmt.Sprintf("See its state with docker buildx inspect --bootstrap %s; a builder with the remote driver needs its buildkitd running.", name),
				fmt.Sprintf("Or remove it (docker buildx rm %s) and pick another one with --buildx-builder NAME, or use --builder buildctl.", name)}}
	case reParseError.MatchString(out):
		m := reParseError.FindStringSubmatch(out)
		return &hint.Error{Msg: fmt.Sprintf("the Dockerfile %s does not parse: line %s: %s", o.Dockerfile, m[1], strings.TrimSpace(m[2])),
			Fixes: []string{fmt.Sprintf("Fix line %s of %s.", m[1], o.Dockerfile)}}
	case strings.Contains(low, "exec format error"):
		// A RUN step for an architecture the build host cannot execute.
		return &hint.Error{Msg: withCause("a RUN step of the "+o.Platform+" build cannot run on this host (exec format error)", cause),
			Fixes: []string{"Building for another architecture runs its RUN steps under emulation: install qemu-user-static " +
				"and register it with binfmt_misc (Debian/Ubuntu: apt-get install qemu-user-static binfmt-support; with Docker: " +
				"docker run --privileged --rm tonistiigi/binfmt --install all), on the machine that runs BuildKit.",
				"Or build only for this host's architecture with --platform."}}
	case reExitCode.MatchString(out):
		code := reExitCode.FindAllStringSubmatch(out, -1)
		step, lines := failedStep(out)
		msg := "a RUN step failed with exit code " + code[len(code)-1][1]
		if step != "" {
			msg += ": " + step
		}
		where := o.Dockerfile
		if line := sourceLine(out); line > 0 {
			where += ":" + strconv.Itoa(line)
		}
		if len(lines) > 0 {
			msg += "\nits last output lines:\n  " + strings.Join(lines, "\n  ")
		} else {
			msg += " (it printed nothing)"
		}
		return &hint.Error{Msg: msg, Fixes: []string{"Fix the step at " + where + " and build again; the steps before it come from BuildKit's cache."}}
	case reNotFound.MatchString(out):
		m := reNotFound.FindStringSubmatch(out)
		where := o.Dockerfile
		if line := sourceLine(out); line > 0 {
			where += ":" + strconv.Itoa(line)
		}
		return &hint.Error{Msg: fmt.Sprintf("%s: %s is not in the build context %s", where, m[1], o.Context),
			Fixes: []string{"Add it to the build context, or fix the path in the COPY or ADD step; a .dockerignore may also exclude it."}}
	case reNoSecret.MatchString(out):
		id := reNoSecret.FindStringSubmatch(out)[1]
		return &hint.Error{Msg: fmt.Sprintf("the build needs the secret %s, and no --secret id=%s was given", id, id),
			Fixes: []string{fmt.Sprintf("Pass --secret id=%s,src=PATH (a file) or --secret id=%s,env=VARIABLE.", id, id)}}
	case reBaseImage.MatchString(out):
		m := reBaseImage.FindStringSubmatch(out)
		return &hint.Error{Msg: fmt.Sprintf("the image %s cannot be pulled: %s", m[1], strings.TrimSpace(m[2])),
			Fixes: []string{"Check the image name in FROM (or in --build-context); the builder pulls it itself, with its own credentials and registry settings."}}
	}
	msg := stepName(s) + " failed" + status
	if cause != "" {
		msg += ": " + cause
	}
	var hints []string
	if logShown {
		hints = []string{"Read the build log above for the cause."}
	} else {
		hints = []string{"Run again without --quiet (or with --progress plain) to see the build log."}
	}
	return &hint.Error{Msg: msg, Fixes: hints}
}

func withCause(msg, cause string) string {
	if cause != "" {
		return msg + ": " + cause
	}
	return msg
}

func exitErr(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil // the output says more than "exit status 1"
	}
	return err
}

// stepName is the command and subcommand of a step, for messages:
// "buildctl build", "docker buildx build".
func stepName(s Step) string {
	if len(s.Argv) > 0 && s.Argv[0] == "buildctl" {
		for _, a := range s.Argv[1:] {
			if a == "build" {
				return "buildctl build"
			}
		}
	}
	return strings.Join(s.Argv[:min(3, len(s.Argv))], " ")
}

// cleanLog drops terminal control sequences and carriage returns from a
// builder's output (its live view on a terminal).
func cleanLog(s string) string {
	s = reANSI.ReplaceAllString(s, "")
	return strings.ReplaceAll(s, "\r", "")
}

func firstLine(s string) string {
	for _, l := range strings.Split(cleanLog(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return shorten(l)
		}
	}
	return ""
}

func shorten(l string) string {
	if len(l) > 400 {
		return l[:400] + "..."
	}
	return l
}

// lastErrorLine returns the last "error: ..." (buildctl) or "ERROR: ..."
// (buildx) line of a build log without its prefixes, shortened.
func lastErrorLine(log string) string {
	lines := strings.Split(cleanLog(log), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if len(l) > len("error:") && strings.EqualFold(l[:len("error:")], "error:") {
			l = strings.TrimSpace(l[len("error:"):])
			l = strings.TrimPrefix(l, "failed to build: ")
			return shorten(l)
		}
	}
	return ""
}

// failedStep reads BuildKit's summary of the failed step, printed after
// the progress in every mode:
//
//	------
//	 > [2/2] RUN make:
//	0.108 last lines of its output
//	------
//
// and returns the step's name and its last lines (without timestamps).
func failedStep(log string) (string, []string) {
	lines := strings.Split(log, "\n")
	var name string
	var body []string
	for i := 0; i+1 < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "------" || !strings.HasPrefix(lines[i+1], " > ") || !strings.HasSuffix(lines[i+1], ":") {
			continue
		}
		n := strings.TrimSuffix(strings.TrimPrefix(lines[i+1], " > "), ":")
		var b []string
		j := i + 2
		for ; j < len(lines) && strings.TrimSpace(lines[j]) != "------"; j++ {
			b = append(b, shorten(reLogStamp.ReplaceAllString(lines[j], "")))
		}
		if len(b) > 10 {
			b = b[len(b)-10:]
		}
		name, body = n, b
		i = j
	}
	return name, body
}

// sourceLine returns the line number of BuildKit's excerpt of the
// Dockerfile at the failing step ("Dockerfile:12" above a dashed rule), or
// 0.
func sourceLine(log string) int {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 2; i >= 0; i-- {
		m := reSourceLine.FindStringSubmatch(strings.TrimSpace(lines[i]))
		if m != nil && strings.HasPrefix(strings.TrimSpace(lines[i+1]), "-----") {
			n, _ := strconv.Atoi(m[2])
			return n
		}
	}
	return 0
}
