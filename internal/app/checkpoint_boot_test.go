package app

import (
	"path/filepath"
	"testing"

	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/gondolintest"
	"github.com/docker2vm/docker2vm/internal/testenv/imagetest"
)

// TestBootCheckpoint checkpoints a converted guest with Gondolin's SDK
// after writing a file, and resumes the checkpoint twice, the two VMs side
// by side on Gondolin's qcow2 overlays: both see the file, neither sees
// what the other writes.
func TestBootCheckpoint(t *testing.T) {
	reg, base := bootPrereqs(t, testenv.AMD64)
	out := convertAssets(t, testenv.AMD64, reg.Push(t, "busybox:checkpoint", imagetest.Busybox(t, gondolintest.BaseBusybox(t, base)), nil), base)
	sh := func(script string) gondolintest.ExecSpec {
		return gondolintest.ExecSpec{Argv: []string{"sh", "-c", script}}
	}
	rep, err := gondolintest.Run(t, out, gondolintest.BootOptions{RootfsMode: "cow", Checkpoint: &gondolintest.Checkpoint{
		Path: filepath.Join(t.TempDir(), "checkpoint.qcow2"),
		Resumes: [][]gondolintest.ExecSpec{
			{sh("cat /srv/before && echo one >/srv/mine"), sh("cat /srv/mine")},
			{sh("cat /srv/before && echo two >/srv/mine"), sh("cat /srv/mine")},
		},
	}}, sh("echo written before the checkpoint >/srv/before"))
	if err != nil {
		t.Fatalf("checkpoint and resume: %v\n%s", err, rep.Log)
	}
	want := []struct {
		vm  int
		out string
	}{{0, ""}, {1, "written before the checkpoint\n"}, {2, "written before the checkpoint\n"}, {1, "one\n"}, {2, "two\n"}}
	if len(rep.Results) != len(want) {
		t.Fatalf("%d results, want %d: %+v", len(rep.Results), len(want), rep.Results)
	}
	for i, w := range want {
		r := rep.Results[i]
		if r.VM != w.vm || r.ExitCode != 0 || r.Stdout != w.out {
			t.Errorf("result %d: vm %d exit %d stdout %q stderr %q; want vm %d stdout %q", i, r.VM, r.ExitCode, r.Stdout, r.Stderr, w.vm, w.out)
		}
	}
}
