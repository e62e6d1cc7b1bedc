#!/bin/sh
# A stand-in for the docker CLI with its buildx plugin: records each
# invocation's argv (one line, arguments separated by a tab) in
# $FAKE_DOCKER_LOG. Builders are files in $FAKE_DOCKER_BUILDERS: "buildx
# create --name N" makes one (and fails, as buildx does, when it exists),
# "buildx inspect N" and "buildx build --builder N" fail without it, and
# "buildx build" writes $FAKE_DOCKER_ARCHIVE to the --output dest.
# FAKE_DOCKER_FAIL picks a failure:
#   noplugin  docker has no buildx plugin
#   daemon    no Docker daemon (creating a builder, or building, fails)
#   create    creating the builder fails for another reason
#   race      another run creates the builder at the same moment
#   build     the build fails (a generic error)
#   run       a RUN step fails with exit code 7
# One write per call (O_APPEND), so that concurrent calls log whole lines.
line=$1
shift_first=1
for a in "$@"; do
  if [ $shift_first = 1 ]; then shift_first=0; continue; fi
  line=$(printf '%s\t%s' "$line" "$a")
done
printf '%s\n' "$line" >> "$FAKE_DOCKER_LOG"

if [ "$1" != buildx ]; then
  echo "fake docker: unexpected command $1" >&2
  exit 2
fi
if [ "$FAKE_DOCKER_FAIL" = noplugin ]; then
  printf "docker: unknown command: docker buildx\n\nRun 'docker --help' for more information\n" >&2
  exit 1
fi
daemon_down="Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
case "$2" in
  version)
    echo "github.com/docker/buildx 0.29.1 fake"
    exit 0 ;;
  inspect)
    if [ -e "$FAKE_DOCKER_BUILDERS/$3" ]; then
      printf 'Name:          %s\nDriver:        docker-container\n' "$3"
      exit 0
    fi
    echo "ERROR: no builder \"$3\" found" >&2
    exit 1 ;;
  create)
    name=
    prev=
    for a in "$@"; do
      [ "$prev" = --name ] && name=$a
      prev=$a
    done
    case "$FAKE_DOCKER_FAIL" in
      daemon) echo "ERROR: failed to initialize builder $name (${name}0): $daemon_down" >&2; exit 1 ;;
      create) echo "ERROR: failed to create builder: disk quota exceeded" >&2; exit 1 ;;
      race) : > "$FAKE_DOCKER_BUILDERS/$name" ;;
    esac
    # Created atomically (noclobber: O_EXCL), as buildx's store does
    # under its lock.
    if ! (set -C; : > "$FAKE_DOCKER_BUILDERS/$name") 2>/dev/null; then
      echo "ERROR: existing instance for \"$name\" but no append mode, specify the node name to make changes for existing instances" >&2
      exit 1
    fi
    echo "$name"
    exit 0 ;;
  build)
    builder=
    prev=
    for a in "$@"; do
      [ "$prev" = --builder ] && builder=$a
      prev=$a
    done
    if [ ! -e "$FAKE_DOCKER_BUILDERS/$builder" ]; then
      echo "ERROR: no builder \"$builder\" found" >&2
      exit 1
    fi
    case "$FAKE_DOCKER_FAIL" in
      build) echo "ERROR: failed to build: failed to solve: frontend grpc server closed unexpectedly" >&2; exit 1 ;;
      daemon) echo "ERROR: $daemon_down" >&2; exit 1 ;;
      run)
        cat >&2 <<'EOF'
#5 [2/2] RUN echo about-to-fail && exit 7
#5 0.108 about-to-fail
#5 ERROR: process "/bin/sh -c echo about-to-fail && exit 7" did not complete successfully: exit code: 7
------
 > [2/2] RUN echo about-to-fail && exit 7:
0.108 about-to-fail
------
Dockerfile:2
--------------------
   1 |     FROM busybox
   2 | >>> RUN echo about-to-fail && exit 7
   3 |
--------------------
ERROR: failed to build: failed to solve: process "/bin/sh -c echo about-to-fail && exit 7" did not complete successfully: exit code: 7
EOF
        exit 1 ;;
    esac
    for a in "$@"; do
      case "$a" in
        type=oci,dest=*) cp "$FAKE_DOCKER_ARCHIVE" "${a#type=oci,dest=}" ;;
      esac
    done
    echo "#1 building with fake docker" >&2
    exit 0 ;;
esac
echo "fake docker: unexpected command buildx $2" >&2
exit 2
