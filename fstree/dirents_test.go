package fstree

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestDirents: against a Go map, under random adds, replacements,
// deletions and lookups, in order and out of it, small and past
// maxSmallDir; every entry is yielded once, and an iteration may delete
// the entry it was given.
func TestDirents(t *testing.T) {
	for _, tc := range []struct {
		name    string
		n       int
		ordered bool
	}{
		{"small, in order", 40, true},
		{"small, any order", 40, false},
		{"past the limit, in order", 3 * maxSmallDir, true},
		{"past the limit, any order", 3 * maxSmallDir, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tc.n)))
			var d *dirents
			if d.get("x") != nil || d.len() != 0 || len(d.names()) != 0 {
				t.Fatal("a nil dirents is not empty")
			}
			d = &dirents{}
			model := map[string]*Inode{}
			name := func(i int) string {
				if tc.ordered {
					return fmt.Sprintf("f%06d", i)
				}
				return fmt.Sprintf("f%06d", rng.IntN(2*tc.n))
			}
			for i := range 4 * tc.n {
				k := name(i / 2)
				switch rng.IntN(4) {
				case 0, 1:
					in := &Inode{Type: TypeRegular}
					d.set(k, in)
					model[k] = in
				case 2:
					got, ok := d.del(k)
					want, wok := model[k]
					delete(model, k)
					if got != want || ok != wok {
						t.Fatalf("del(%s) = %p %v, want %p %v", k, got, ok, want, wok)
					}
				default:
					if got := d.get(k); got != model[k] {
						t.Fatalf("get(%s) = %p, want %p", k, got, model[k])
					}
				}
				if d.len() != len(model) {
					t.Fatalf("len %d, want %d", d.len(), len(model))
				}
			}
			if got, want := d.names(), slices.Sorted(maps.Keys(model)); !slices.Equal(got, want) {
				t.Fatalf("names %v, want %v", got, want)
			}
			seen, before := map[string]bool{}, len(model)
			for name, in := range d.all {
				if seen[name] || model[name] != in {
					t.Fatalf("all yielded %s twice or with another inode", name)
				}
				seen[name] = true
				if len(seen)%2 == 0 {
					d.del(name) // the loop deletes what it was given
					delete(model, name)
				}
			}
			if len(seen) != before || d.len() != len(model) {
				t.Fatalf("all yielded %d of %d entries; after deleting in the loop: %d entries, want %d", len(seen), before, d.len(), len(model))
			}
			if past := d.m != nil; past != (tc.n > maxSmallDir) {
				t.Errorf("a map %v for at most %d entries", past, 2*tc.n)
			}
		})
	}
}
