package term

import "testing"

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
