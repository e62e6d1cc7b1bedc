package rootfs

import (
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
)

// TestDirAllocations: resolving an entry's parent, the merge's hot path,
// allocates nothing once the directories exist (through a symlink too).
func TestDirAllocations(t *testing.T) {
	m := New(&fstree.MemStore{}, Limits{})
	m.upper = map[edge]struct{}{}
	if _, err := m.dir("/usr/lib/x86_64-linux-gnu/", true, true); err != nil {
		t.Fatal(err)
	}
	fstree.Link(m.tree.Root, "lib", &fstree.Inode{Type: fstree.TypeSymlink, Target: "usr/lib"}, nil)
	for _, p := range []string{"/usr/lib/x86_64-linux-gnu/", "/lib/x86_64-linux-gnu/", "/"} {
		if a := testing.AllocsPerRun(100, func() {
			if _, err := m.dir(p, true, true); err != nil {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("%s: %v allocations", p, a)
		}
	}
}
