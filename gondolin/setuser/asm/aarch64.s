// docker2vm-setuser for Linux aarch64 (GNU as).
//
//   docker2vm-setuser UID GID GIDS PATH ARGV0 [ARG...]
//
// Sets the supplementary groups (GIDS: comma-separated decimal gids, or
// empty for none), then the gid, then the uid, and execs PATH with the
// arguments ARGV0 ARG... and the environment it was given. Raw system
// calls only: no libc, no loader, so it runs in any root filesystem.
//
// Exit status: 125 for a bad argument, 126 when a set*id call fails or
// PATH cannot be executed, 127 when PATH does not exist (as docker run).
// Numbers are decimal digits only, at most 4294967294 ((uid_t)-1 means
// "unchanged" to the kernel, so it is refused).
//
// Registers kept across the program: x19 argc, x20 argv, x21 uid (then
// the errno being reported), x22 gid, x23 number of groups, x24 the
// groups, x25 the argument or call being reported.

	.section .note.GNU-stack, "", %progbits

	.text
	.globl _start
_start:
	ldr	x19, [sp]
	add	x20, sp, #8
	cmp	x19, #6
	b.lo	usage

	ldr	x0, [x20, #8]		// UID
	mov	x25, x0
	bl	parse
	cbnz	x2, baduid
	ldrb	w6, [x0]
	cbnz	w6, baduid
	mov	x21, x1

	ldr	x0, [x20, #16]		// GID
	mov	x25, x0
	bl	parse
	cbnz	x2, badgid
	ldrb	w6, [x0]
	cbnz	w6, badgid
	mov	x22, x1

	// GIDS: stored as 32 bits each downwards from the stack pointer,
	// which moves 16 bytes at a time to keep its alignment (the kernel
	// sorts the list, so their order does not matter).
	ldr	x0, [x20, #24]
	mov	x25, x0
	mov	x23, #0
	mov	x24, sp
	ldrb	w6, [x0]
	cbz	w6, groups
1:	bl	parse
	cbnz	x2, badgroups
	add	x23, x23, #1
	cmp	x23, #65536		// NGROUPS_MAX
	b.hi	badgroups
	sub	x24, x24, #4
	mov	x7, sp
	cmp	x24, x7
	b.hs	2f
	sub	sp, sp, #16
2:	str	w1, [x24]
	ldrb	w6, [x0]
	cbz	w6, groups
	add	x0, x0, #1		// past the comma: another gid must follow
	b	1b

groups:
	mov	x0, x23
	mov	x1, x24
	cbnz	x23, 1f
	mov	x1, #0			// setgroups(0, NULL) for no groups
1:	mov	x8, #159		// setgroups
	svc	#0
	adr	x25, n_setgroups
	tbnz	x0, #63, failid

	mov	x0, x22
	mov	x8, #144		// setgid
	svc	#0
	adr	x25, n_setgid
	tbnz	x0, #63, failid

	mov	x0, x21
	mov	x8, #146		// setuid
	svc	#0
	adr	x25, n_setuid
	tbnz	x0, #63, failid

	ldr	x0, [x20, #32]		// PATH
	add	x1, x20, #40		// ARGV0 ARG... NULL
	add	x2, x20, x19, lsl #3
	add	x2, x2, #8		// the environment, after argv's NULL
	mov	x8, #221		// execve
	svc	#0

	neg	x21, x0
	adr	x0, prefix
	bl	puts
	adr	x0, s_exec
	bl	puts
	ldr	x0, [x20, #32]
	bl	puts
	bl	perr
	mov	x0, #126
	cmp	x21, #2			// ENOENT
	b.ne	exit
	mov	x0, #127
	b	exit

// A set*id call failed: x25 names it, x0 is -errno.
failid:
	neg	x21, x0
	adr	x0, prefix
	bl	puts
	mov	x0, x25
	bl	puts
	bl	perr
	mov	x0, #126
	b	exit

baduid:
	adr	x26, s_uid
	b	badarg
badgid:
	adr	x26, s_gid
	b	badarg
badgroups:
	adr	x26, s_groups
// A bad argument: x26 names it, x25 is its value.
badarg:
	adr	x0, prefix
	bl	puts
	mov	x0, x26
	bl	puts
	mov	x0, x25
	bl	puts
	adr	x0, s_nl
	bl	puts
	mov	x0, #125
	b	exit

usage:
	adr	x0, s_usage
	bl	puts
	mov	x0, #125
exit:
	mov	x8, #94			// exit_group
	svc	#0

// parse: the decimal number at x0, up to a comma or NUL, into x1; x0 is
// left at the byte that ended it. x2 is 1 when there are no digits, a
// byte that is not a digit, or a value over 4294967294; else 0.
parse:
	mov	x1, #0
	mov	x3, x0
	mov	x4, #10
	mov	w5, #0xfffffffe
1:	ldrb	w6, [x0]
	cbz	w6, 2f
	cmp	w6, #','
	b.eq	2f
	sub	w6, w6, #'0'
	cmp	w6, #9
	b.hi	3f
	madd	x1, x1, x4, x6
	cmp	x1, x5
	b.hi	3f
	add	x0, x0, #1
	b	1b
2:	cmp	x0, x3
	b.eq	3f
	mov	x2, #0
	ret
3:	mov	x2, #1
	ret

// puts: the NUL-terminated string at x0 to stderr.
puts:
	mov	x1, x0
	mov	x2, x0
1:	ldrb	w3, [x2]
	cbz	w3, 2f
	add	x2, x2, #1
	b	1b
2:	sub	x2, x2, x1
	mov	x0, #2
	mov	x8, #64			// write
	svc	#0
	ret

// perr: ": " and the text for errno x21, then a newline, to stderr.
perr:
	mov	x27, x30
	adr	x0, s_colon
	bl	puts
	adr	x9, errtab
1:	ldrb	w10, [x9], #1
	cbz	w10, 3f
	cmp	x10, x21
	b.eq	2f
4:	ldrb	w10, [x9], #1		// skip this entry's text
	cbnz	w10, 4b
	b	1b
2:	mov	x0, x9
	bl	puts
	b	5f
3:	adr	x0, s_errno		// not in the table: its number
	bl	puts
	sub	sp, sp, #32
	add	x9, sp, #31
	strb	wzr, [x9]
	mov	x10, x21
	mov	x11, #10
6:	udiv	x12, x10, x11
	msub	x13, x12, x11, x10
	add	w13, w13, #'0'
	strb	w13, [x9, #-1]!
	mov	x10, x12
	cbnz	x10, 6b
	mov	x0, x9
	bl	puts
	add	sp, sp, #32
5:	adr	x0, s_nl
	bl	puts
	ret	x27

prefix:		.asciz	"docker2vm-setuser: "
s_usage:	.asciz	"usage: docker2vm-setuser UID GID GIDS PATH ARGV0 [ARG...]\n"
s_uid:		.asciz	"invalid uid: "
s_gid:		.asciz	"invalid gid: "
s_groups:	.asciz	"invalid group list: "
n_setgroups:	.asciz	"setgroups"
n_setgid:	.asciz	"setgid"
n_setuid:	.asciz	"setuid"
s_exec:		.asciz	"exec "
s_colon:	.asciz	": "
s_errno:	.asciz	"errno "
s_nl:		.asciz	"\n"
// errtab: errno byte, then its text; a 0 byte ends the table.
errtab:
	.byte	1
	.asciz	"operation not permitted"
	.byte	2
	.asciz	"no such file or directory"
	.byte	8
	.asciz	"exec format error"
	.byte	13
	.asciz	"permission denied"
	.byte	22
	.asciz	"invalid argument"
	.byte	0
