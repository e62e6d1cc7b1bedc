#!/bin/sh
# A stand-in for buildctl: "build" writes $FAKE_BUILDCTL_ARCHIVE to the
# --output dest. With --progress tty its stderr must be a terminal, as
# BuildKit's live view needs; it reports what its stdout and stderr are.
# FAKE_BUILDCTL_FAIL=run makes a RUN step fail with exit code 7.
progress=
prev=
for a in "$@"; do
  [ "$prev" = --progress ] && progress=$a
  prev=$a
done
if [ "$progress" = tty ] && ! [ -t 2 ]; then
  echo "error: failed to get console: provided file is not a console" >&2
  exit 1
fi
[ -t 1 ] && echo "stdout is a terminal"
[ -t 2 ] && echo "stderr is a terminal" >&2
if [ "$FAKE_BUILDCTL_FAIL" = run ]; then
  printf '\033[31m => ERROR [2/2] RUN make\033[0m\n------\n > [2/2] RUN make:\n0.101 cc -o app app.c\n0.230 app.c:1: error: expected ;\n------\nDockerfile:4\n--------------------\n   4 | >>> RUN make\n--------------------\nerror: failed to solve: process "/bin/sh -c make" did not complete successfully: exit code: 2\n' >&2
  exit 1
fi
for a in "$@"; do
  case "$a" in
    type=oci,dest=*) cp "$FAKE_BUILDCTL_ARCHIVE" "${a#type=oci,dest=}" ;;
  esac
done
printf '\033[34m => exporting to oci image format\033[0m\n' >&2
exit 0
