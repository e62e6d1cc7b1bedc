// Package shell quotes words for POSIX sh: the one quoter of the scripts
// a guest runs, of the completion scripts, and of the command lines shown
// to people.
package shell

import "strings"

// Quote is s in single quotes, which sh reads back as s whatever it holds:
// newlines, $, `, \ and " are literal inside them, and each single quote
// is closed, escaped and reopened.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Word is s as it stands when sh reads it back unchanged (letters, digits
// and / . - _ : @ + , = %), else Quote(s): for command lines people read
// and paste.
func Word(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool { return !safe(r) }) < 0 {
		return s
	}
	return Quote(s)
}

func safe(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/.-_:@+,=%", r)
}

// Join is argv as a command line of Words.
func Join(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = Word(a)
	}
	return strings.Join(out, " ")
}
