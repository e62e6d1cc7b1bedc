package rootfs

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/docker2vm/docker2vm/fstree"
	"github.com/docker2vm/docker2vm/internal/testtar"
)

// FuzzApply feeds hostile bytes, split into up to three layers, to the merge:
// it must not panic or hang, every error must name its layer, and the tree
// must keep its invariants (link counts, released content, a directory root).
func FuzzApply(f *testing.F) {
	for _, cs := range [][]mergeCase{symlinkCases(), hardlinkCases(), whiteoutCases(), entryCases()} {
		for _, tc := range cs {
			var all []byte
			for i, l := range tc.layers {
				if i > 0 {
					all = append(all, sep...)
				}
				all = append(all, testtar.Build(f, l...)...)
			}
			f.Add(all)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st := &fstree.MemStore{}
		m := New(st, Limits{MaxBytes: 1 << 20, MaxEntries: 10000, MaxPathLen: 1024})
		for i, l := range bytes.SplitN(data, sep, 3) {
			if err := m.Apply(context.Background(), fmt.Sprintf("layer %d", i+1), bytes.NewReader(l)); err != nil {
				if !bytes.HasPrefix([]byte(err.Error()), []byte("layer ")) {
					t.Fatalf("error does not name the layer: %v", err)
				}
				break
			}
		}
		tree := m.Tree()
		if tree.Root == nil || tree.Root.Type != fstree.TypeDir || tree.Root.Mode != 0o755 {
			t.Fatalf("root changed: %+v", tree.Root)
		}
		checkInvariants(t, tree, st)
		// Every name in the tree is a plain component.
		tree.Walk(func(p string, n *fstree.Inode) error {
			for _, c := range fstree.Split(p) {
				if c == "." || c == ".." || c == "" || len(c) > 255 {
					t.Fatalf("bad name %q", p)
				}
			}
			return nil
		})
	})
}

// sep splits fuzz input into layers.
var sep = []byte("\x00--LAYER--\x00")
