package term

import (
	"os"
	"testing"
)

// TestPTYIsTerminal: both ends of a pseudo-terminal are terminals.
func TestPTYIsTerminal(t *testing.T) {
	master, slave, err := OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer slave.Close()
	if !IsTerminal(slave) {
		t.Error("a pseudo-terminal's slave is not taken for a terminal")
	}
	if !IsTerminal(master) {
		t.Error("a pseudo-terminal's master is not taken for a terminal")
	}
}

// TestWidth: a terminal's width is what its size says, after a resize
// too; a file has none.
func TestWidth(t *testing.T) {
	master, slave, err := OpenPTY()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer slave.Close()
	for _, cols := range []int{80, 40, 132} {
		if err := SetSize(master, cols, 24); err != nil {
			t.Fatal(err)
		}
		if got := Width(slave); got != cols {
			t.Errorf("after a resize to %d columns, Width = %d", cols, got)
		}
	}
	if got := Width(os.Stdin); got != 0 && !IsTerminal(os.Stdin) {
		t.Errorf("Width of a non-terminal = %d", got)
	}
}
