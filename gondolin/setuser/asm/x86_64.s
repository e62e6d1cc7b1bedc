# docker2vm-setuser for Linux x86_64 (GNU as, AT&T syntax).
#
#   docker2vm-setuser UID GID GIDS PATH ARGV0 [ARG...]
#
# Sets the supplementary groups (GIDS: comma-separated decimal gids, or
# empty for none), then the gid, then the uid, and execs PATH with the
# arguments ARGV0 ARG... and the environment it was given. Raw system
# calls only: no libc, no loader, so it runs in any root filesystem.
#
# Exit status: 125 for a bad argument, 126 when a set*id call fails or
# PATH cannot be executed, 127 when PATH does not exist (as docker run).
# Numbers are decimal digits only, at most 4294967294 ((uid_t)-1 means
# "unchanged" to the kernel, so it is refused).
#
# Registers kept across the program: rbx argc, r12 argv, r13 uid (then
# the errno being reported), r14 gid, r15 number of groups, rbp the
# argument being reported.

	.section .note.GNU-stack, "", @progbits

	.text
	.globl _start
_start:
	mov	(%rsp), %rbx
	lea	8(%rsp), %r12
	cmp	$6, %rbx
	jb	usage

	mov	8(%r12), %rsi		# UID
	mov	%rsi, %rbp
	call	parse
	jc	baduid
	cmpb	$0, (%rsi)
	jne	baduid
	mov	%rax, %r13

	mov	16(%r12), %rsi		# GID
	mov	%rsi, %rbp
	call	parse
	jc	badgid
	cmpb	$0, (%rsi)
	jne	badgid
	mov	%rax, %r14

	# GIDS: each gid is pushed as 32 bits below the stack pointer (the
	# kernel sorts the list, so their order does not matter).
	mov	24(%r12), %rsi
	mov	%rsi, %rbp
	xor	%r15d, %r15d
	cmpb	$0, (%rsi)
	je	groups
1:	call	parse
	jc	badgroups
	inc	%r15
	cmp	$65536, %r15		# NGROUPS_MAX
	ja	badgroups
	sub	$4, %rsp
	mov	%eax, (%rsp)
	cmpb	$0, (%rsi)
	je	groups
	inc	%rsi			# past the comma: another gid must follow
	jmp	1b

groups:
	mov	%r15, %rdi
	xor	%esi, %esi		# setgroups(0, NULL) for no groups
	test	%r15, %r15
	cmovnz	%rsp, %rsi
	mov	$116, %eax		# setgroups
	syscall
	lea	n_setgroups(%rip), %rbp
	test	%rax, %rax
	js	failid

	mov	%r14, %rdi
	mov	$106, %eax		# setgid
	syscall
	lea	n_setgid(%rip), %rbp
	test	%rax, %rax
	js	failid

	mov	%r13, %rdi
	mov	$105, %eax		# setuid
	syscall
	lea	n_setuid(%rip), %rbp
	test	%rax, %rax
	js	failid

	mov	32(%r12), %rdi		# PATH
	lea	40(%r12), %rsi		# ARGV0 ARG... NULL
	lea	8(%r12,%rbx,8), %rdx	# the environment, after argv's NULL
	mov	$59, %eax		# execve
	syscall

	neg	%rax
	mov	%rax, %r13
	lea	prefix(%rip), %rsi
	call	puts
	lea	s_exec(%rip), %rsi
	call	puts
	mov	32(%r12), %rsi
	call	puts
	call	perr
	mov	$126, %edi
	cmp	$2, %r13		# ENOENT
	jne	exit
	mov	$127, %edi
	jmp	exit

# A set*id call failed: rbp names it, rax is -errno.
failid:
	neg	%rax
	mov	%rax, %r13
	lea	prefix(%rip), %rsi
	call	puts
	mov	%rbp, %rsi
	call	puts
	call	perr
	mov	$126, %edi
	jmp	exit

baduid:
	lea	s_uid(%rip), %rsi
	jmp	badarg
badgid:
	lea	s_gid(%rip), %rsi
	jmp	badarg
badgroups:
	lea	s_groups(%rip), %rsi
# A bad argument: rsi names it, rbp is its value.
badarg:
	push	%rsi
	lea	prefix(%rip), %rsi
	call	puts
	pop	%rsi
	call	puts
	mov	%rbp, %rsi
	call	puts
	lea	s_nl(%rip), %rsi
	call	puts
	mov	$125, %edi
	jmp	exit

usage:
	lea	s_usage(%rip), %rsi
	call	puts
	mov	$125, %edi
exit:
	mov	$231, %eax		# exit_group
	syscall

# parse: the decimal number at rsi, up to a comma or NUL, into rax; rsi is
# left at the byte that ended it. CF is set when there are no digits, a
# byte that is not a digit, or a value over 4294967294.
parse:
	xor	%eax, %eax
	mov	%rsi, %rdx
	mov	$0xfffffffe, %r8d
1:	movzbl	(%rsi), %ecx
	test	%ecx, %ecx
	jz	2f
	cmp	$',', %ecx
	je	2f
	sub	$'0', %ecx
	cmp	$9, %ecx
	ja	3f
	imul	$10, %rax, %rax
	add	%rcx, %rax
	cmp	%r8, %rax
	ja	3f
	inc	%rsi
	jmp	1b
2:	cmp	%rdx, %rsi
	je	3f
	clc
	ret
3:	stc
	ret

# puts: the NUL-terminated string at rsi to stderr.
puts:
	mov	%rsi, %rdx
1:	cmpb	$0, (%rdx)
	je	2f
	inc	%rdx
	jmp	1b
2:	sub	%rsi, %rdx
	mov	$2, %edi
	mov	$1, %eax		# write
	syscall
	ret

# perr: ": " and the text for errno r13, then a newline, to stderr.
perr:
	lea	s_colon(%rip), %rsi
	call	puts
	lea	errtab(%rip), %rsi
1:	movzbl	(%rsi), %eax
	inc	%rsi
	test	%eax, %eax
	jz	3f
	cmp	%r13d, %eax
	je	2f
4:	lodsb				# skip this entry's text
	test	%al, %al
	jnz	4b
	jmp	1b
2:	call	puts
	jmp	5f
3:	lea	s_errno(%rip), %rsi	# not in the table: its number
	call	puts
	sub	$32, %rsp
	lea	31(%rsp), %rsi
	movb	$0, (%rsi)
	mov	%r13, %rax
	mov	$10, %ecx
6:	xor	%edx, %edx
	div	%rcx
	add	$'0', %dl
	dec	%rsi
	mov	%dl, (%rsi)
	test	%rax, %rax
	jnz	6b
	call	puts
	add	$32, %rsp
5:	lea	s_nl(%rip), %rsi
	jmp	puts

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
# errtab: errno byte, then its text; a 0 byte ends the table.
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
