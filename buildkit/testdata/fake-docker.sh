#!/bin/sh
# A stand-in for the docker CLI: records each invocation's argv (one line,
# arguments separated by a tab) in $FAKE_DOCKER_LOG and, for "buildx build",
# writes $FAKE_DOCKER_ARCHIVE to the --output dest. FAKE_DOCKER_FAIL=build
# makes the build fail; FAKE_DOCKER_FAIL=daemon fails like a stopped daemon.
printf '%s' "$1" >> "$FAKE_DOCKER_LOG"
shift_first=1
for a in "$@"; do
  if [ $shift_first = 1 ]; then shift_first=0; continue; fi
  printf '\t%s' "$a" >> "$FAKE_DOCKER_LOG"
done
printf '\n' >> "$FAKE_DOCKER_LOG"
if [ "$1" = buildx ] && [ "$2" = build ]; then
  case "$FAKE_DOCKER_FAIL" in
    build) echo "ERROR: failed to solve: process \"/bin/sh -c false\" did not complete successfully: exit code: 1" >&2; exit 1 ;;
    daemon) echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2; exit 1 ;;
  esac
  for a in "$@"; do
    case "$a" in
      type=oci,dest=*) cp "$FAKE_DOCKER_ARCHIVE" "${a#type=oci,dest=}" ;;
    esac
  done
  echo "#1 building with fake docker" >&2
fi
exit 0
