#!/bin/sh
# /usr/bin/docker2vm-entrypoint, written by docker2vm: runs the image's
# ENTRYPOINT and CMD the way `docker run IMAGE [ARGS...]` would (arguments
# replace CMD), with the image's ENV, in its WORKDIR, as its USER. The
# image's settings are at the end of this file. It needs nothing but a
# POSIX shell's builtins and, for a USER other than root, docker2vm-setuser.
# Names starting with d2v_ are this script's own.
set -e

# d2v_die STATUS MESSAGE: prints MESSAGE on stderr and exits with STATUS.
d2v_die() {
	printf 'docker2vm-entrypoint: %s\n' "$2" >&2
	exit "$1"
}

# d2v_number STRING: whether STRING is a decimal number; if it is, d2v_n
# is set to it without leading zeros.
d2v_number() {
	case $1 in
	'' | *[!0-9]*) return 1 ;;
	esac
	d2v_n=$1
	while :; do
		case $d2v_n in
		0?*) d2v_n=${d2v_n#0} ;;
		*) return 0 ;;
		esac
	done
}

# d2v_in_range NUMBER: whether NUMBER (without leading zeros) may be used
# as an id that no passwd or group entry names: 0 to 2147483647, as in runc.
d2v_in_range() {
	[ "${#1}" -lt 10 ] || { [ "${#1}" -eq 10 ] && [ "$1" -le 2147483647 ]; }
}

# d2v_resolve_user resolves d2v_user and d2v_group (the image's USER split
# at its first colon; either may be a name or a number) with the image's
# passwd and group files, as Docker does when it starts a container
# (runc's GetExecUser). It sets d2v_uid, d2v_gid, d2v_home and d2v_groups,
# the supplementary groups: when USER names no group, the gids of the
# groups that list the user's name as a member; else none (as runc).
d2v_resolve_user() {
	d2v_uid=0 d2v_gid=0 d2v_home=/ d2v_name='' d2v_extra='' d2v_found=''
	# An empty user name means uid 0.
	d2v_want=${d2v_user:-0} d2v_want_id=''
	if d2v_number "$d2v_want"; then
		d2v_want_id=$d2v_n
	fi
	if [ -r "$d2v_passwd_file" ]; then
		while IFS=: read -r d2v_f1 _ d2v_f3 d2v_f4 _ d2v_f6 _ || [ -n "$d2v_f1" ]; do
			if [ -n "$d2v_want_id" ]; then
				if ! d2v_number "$d2v_f3" || [ "$d2v_n" != "$d2v_want_id" ]; then
					continue
				fi
			else
				[ "$d2v_f1" = "$d2v_want" ] || continue
			fi
			d2v_number "$d2v_f3" || d2v_die 125 "user $d2v_f1 has an invalid uid in $d2v_passwd_file: $d2v_f3"
			d2v_uid=$d2v_n
			d2v_number "$d2v_f4" || d2v_die 125 "user $d2v_f1 has an invalid gid in $d2v_passwd_file: $d2v_f4"
			d2v_gid=$d2v_n d2v_home=$d2v_f6 d2v_name=$d2v_f1 d2v_found=1
			break
		done <"$d2v_passwd_file"
	fi
	if [ -z "$d2v_found" ]; then
		# Only a number may name a user that has no passwd entry.
		[ -n "$d2v_want_id" ] || d2v_die 125 "unable to find user $d2v_want: no matching entries in passwd file"
		d2v_in_range "$d2v_want_id" || d2v_die 125 "unable to find user $d2v_want: uids and gids must be in range 0-2147483647"
		d2v_uid=$d2v_want_id
	fi

	if [ -n "$d2v_group" ] || [ -n "$d2v_name" ]; then
		d2v_want_id='' d2v_found=''
		if d2v_number "$d2v_group"; then
			d2v_want_id=$d2v_n
		fi
		if [ -r "$d2v_group_file" ]; then
			while IFS=: read -r d2v_f1 _ d2v_f3 d2v_f4 || [ -n "$d2v_f1" ]; do
				if [ -z "$d2v_group" ]; then
					# No group in USER: the user's supplementary groups.
					case ,$d2v_f4, in
					*,"$d2v_name",*) ;;
					*) continue ;;
					esac
					d2v_number "$d2v_f3" || d2v_die 125 "group $d2v_f1 has an invalid gid in $d2v_group_file: $d2v_f3"
					d2v_extra=$d2v_extra,$d2v_n
					continue
				fi
				if [ -n "$d2v_want_id" ]; then
					if ! d2v_number "$d2v_f3" || [ "$d2v_n" != "$d2v_want_id" ]; then
						continue
					fi
				else
					[ "$d2v_f1" = "$d2v_group" ] || continue
					d2v_number "$d2v_f3" || d2v_die 125 "group $d2v_f1 has an invalid gid in $d2v_group_file: $d2v_f3"
				fi
				d2v_gid=$d2v_n d2v_found=1
				break
			done <"$d2v_group_file"
		fi
		if [ -n "$d2v_group" ] && [ -z "$d2v_found" ]; then
			# Only a number may name a group that has no entry.
			[ -n "$d2v_want_id" ] || d2v_die 125 "unable to find group $d2v_group: no matching entries in group file"
			d2v_in_range "$d2v_want_id" || d2v_die 125 "unable to find group $d2v_group: uids and gids must be in range 0-2147483647"
			d2v_gid=$d2v_want_id
		fi
	fi
	d2v_groups=${d2v_extra#,}
	if [ -z "$d2v_home" ]; then
		d2v_home=/
	fi
}

# d2v_lookpath NAME sets d2v_path to the file NAME runs as a command: NAME
# itself when it has a slash, else the first executable file NAME in a
# PATH directory (an empty entry is the current directory), as Docker
# resolves a container's command. Not `command -v`, which answers a bare
# name for the shell's builtins (echo, printf, true...).
d2v_lookpath() {
	case $1 in
	*/*)
		d2v_path=$1
		return 0
		;;
	'') return 1 ;;
	esac
	d2v_rest=${PATH-}
	[ -n "$d2v_rest" ] || return 1
	while :; do
		d2v_dir=${d2v_rest%%:*}
		d2v_path=${d2v_dir:-.}/$1
		if [ -f "$d2v_path" ] && [ -x "$d2v_path" ]; then
			return 0
		fi
		case $d2v_rest in
		*:*) d2v_rest=${d2v_rest#*:} ;;
		*) return 1 ;;
		esac
	done
}

# d2v_is_agent_var NAME: whether NAME holds what every command started by
# Gondolin's agent inherits (the value AgentEnvPath recorded at boot),
# rather than a value the caller passed with this command.
d2v_is_agent_var() {
	d2v_set='' d2v_cur='' d2v_had='' d2v_was=''
	eval "d2v_set=\${$1+1} d2v_cur=\${$1-} d2v_had=\${d2v_agent_$1+1} d2v_was=\${d2v_agent_$1-}"
	[ -n "$d2v_set" ] && [ -n "$d2v_had" ] && [ "$d2v_cur" = "$d2v_was" ]
}

# d2v_default NAME VALUE exports NAME=VALUE unless NAME is set.
d2v_default() {
	eval "d2v_set=\${$1+1}"
	[ -n "$d2v_set" ] || export "$1=$2"
}

# d2v_environment makes the environment `docker run -e ...` gives: the
# image's ENV, then the caller's variables over it. What every command
# inherits from Gondolin's init and agent (HOME=/root, TMPDIR, XDG_*...)
# is dropped unless the caller passed another value, except Gondolin's CA
# variables (d2v_keep), which its network mediation needs. Then PATH,
# HOSTNAME and HOME as Docker and runc set them when nothing else did.
d2v_environment() {
	d2v_agent_vars=''
	if [ -r "$d2v_agent_env_file" ]; then
		# shellcheck source=/dev/null
		. "$d2v_agent_env_file"
	fi
	for d2v_v in $d2v_agent_vars; do
		case " $d2v_keep " in
		*" $d2v_v "*) continue ;;
		esac
		if d2v_is_agent_var "$d2v_v"; then
			unset "$d2v_v" 2>/dev/null || :
		fi
	done
	d2v_image_env
	d2v_default PATH /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
	# bash and busybox sh set HOSTNAME themselves, unexported, to the
	# kernel's host name: the value Docker gives too.
	if [ -z "${HOSTNAME+1}" ]; then
		d2v_h=''
		if [ -r /proc/sys/kernel/hostname ]; then
			read -r d2v_h </proc/sys/kernel/hostname || :
		fi
		HOSTNAME=$d2v_h
	fi
	export HOSTNAME
}

# d2v_main COMMAND [ARG...] runs the command with the image's settings.
d2v_main() {
	d2v_environment
	if ! cd "$d2v_workdir" 2>/dev/null; then
		# As runc does, make a missing working directory.
		mkdir -p "$d2v_workdir" 2>/dev/null || :
		cd "$d2v_workdir" || d2v_die 126 "cannot enter the image's WORKDIR $d2v_workdir"
	fi
	if [ "$#" -eq 0 ]; then
		d2v_die 127 "the image has no ENTRYPOINT or CMD; pass the command to run"
	fi
	d2v_resolve_user
	d2v_default HOME "$d2v_home"
	# A container's process gets none of these: they are this shell's.
	unset OLDPWD PWD SHLVL 2>/dev/null || :
	if [ -z "$d2v_setuser" ]; then
		exec "$@"
	fi
	d2v_lookpath "$1" || d2v_die 127 "exec: \"$1\": executable file not found in \$PATH"
	exec "$d2v_setuser" "$d2v_uid" "$d2v_gid" "$d2v_groups" "$d2v_path" "$@"
}
