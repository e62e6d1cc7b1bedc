// Command bench is `make bench-compare`: it builds deterministic benchmark
// images (OCI layouts, cached so re-runs are fast) and times, side by side,
// docker2vm's conversion, the unpack-to-a-directory + mke2fs -d pipeline
// other tools use, and two floors: decompressing every layer to /dev/null,
// and that plus the two sha256 digests a verifying unpacker must compute.
// Each is a child process run under GNU time (/usr/bin/time); wall time,
// CPU time (user+sys) and peak RSS come from its rusage. Medians over -runs go into a table in BENCHMARKS.md.
//
// With -builds it is `make bench-build` instead: Dockerfile builds with
// dockerfile2gondolin, the first and one after an edit of the last step
// (builds.go).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"golang.org/x/sys/unix"

	"github.com/docker2vm/docker2vm/internal/lock"
	"github.com/docker2vm/docker2vm/internal/testenv"
	"github.com/docker2vm/docker2vm/internal/testenv/registrytest"
)

// metric is what one run of one pipeline cost.
type metric struct {
	Wall   time.Duration
	CPU    time.Duration // user + sys of the children
	MaxRSS int64         // bytes, the largest child's peak
}

func (m metric) add(o metric) metric {
	return metric{m.Wall + o.Wall, m.CPU + o.CPU, max(m.MaxRSS, o.MaxRSS)}
}

// Pipelines, in table order.
const (
	pD2VM      = "docker2vm --oci-layout"
	pD2VMCold  = "docker2vm --image, cold cache"
	pD2VMWarm  = "docker2vm --image, warm cache"
	pD2VMAgain = "docker2vm --image, warm cache, same --out"
	pUmoci     = "umoci unpack + mke2fs -d"
	pTar       = "tar -x + mke2fs -d"
	pFloor     = "floor: decompress layers to /dev/null"
	pFloorSum  = "floor + digests: decompress, sha256 blob and output"
	// Across the simulated link (-rtt, -conn-rate, -link-rate).
	pNetAll     = "network floor: all blobs at once (curl)"
	pNetSeq     = "blobs one after another (curl)"
	pSkopeo     = "skopeo copy to an OCI layout"
	pSkopeoConv = "skopeo copy + docker2vm --oci-layout"
	labelWidth  = 52
)

func main() {
	cacheDefault := filepath.Join(os.TempDir(), "docker2vm-bench")
	if d, err := os.UserCacheDir(); err == nil {
		cacheDefault = filepath.Join(d, "docker2vm-bench")
	}
	cache := flag.String("cache", cacheDefault, "where benchmark images (OCI layouts) are cached, and scratch space")
	runs := flag.Int("runs", 3, "runs per pipeline; medians are reported")
	imgs := flag.String("images", "small,large,debian-gzip,debian-zstd,debian6,files1m,deep1m", "images to run (small, large, debian-gzip, debian-zstd, debian6, files1m, deep1m, nodemodules)")
	netImgs := flag.String("net-images", "debian6", "images whose registry conversions go across the simulated link, with the network rows (curl, skopeo)")
	rtt := flag.Duration("rtt", 40*time.Millisecond, "simulated link: round-trip time")
	connRate := flag.Float64("conn-rate", 15, "simulated link: MB/s per connection")
	linkRate := flag.Float64("link-rate", 60, "simulated link: MB/s shared by all connections")
	bin := flag.String("bin", "bin/oci2gondolin", "the oci2gondolin binary")
	md := flag.String("md", "BENCHMARKS.md", "file whose results section is rewritten ('' for none)")
	useRegistry := flag.Bool("registry", true, "also convert through a local registry (docker-registry), cold and warm blob cache")
	keep := flag.Bool("keep", false, "keep the last outputs in CACHE/work")
	prepare := flag.Bool("prepare", false, "only build the benchmark images (OCI layouts) and print where they are")
	serve := flag.Bool("serve", false, "only push the images to a local registry, print their references and serve them until interrupted (for profiling by hand)")
	builds := flag.Bool("builds", false, "time Dockerfile builds instead (make bench-build): a first build, then one after editing its last step")
	buildBin := flag.String("build-bin", "bin/dockerfile2gondolin", "with -builds: the dockerfile2gondolin binary")
	loops := flag.Int("loops", 4000000, "with -builds: iterations of the shell loop that stands for a slow step")
	reconvertOnly := flag.Bool("reconvert-only", false, "with -builds: only the reconversion after an edit (the prefix cache), not the build timings")
	testing.Init() // debian.Image asks testing.Short()
	flag.Parse()
	c := &testenv.Console{Name: "bench"}
	if *builds {
		code := runBuilds(c, buildsConfig{runs: *runs, bin: *buildBin, md: *md, loops: *loops, reconvertOnly: *reconvertOnly})
		c.Close()
		os.Exit(code)
	}
	code := run(c, config{cache: *cache, runs: *runs, names: strings.Split(*imgs, ","), bin: *bin, md: *md,
		useRegistry: *useRegistry || *serve, keep: *keep, serve: *serve, prepare: *prepare,
		netImages: strings.Split(*netImgs, ","), link: link{rtt: *rtt, connRate: *connRate * 1e6, linkRate: *linkRate * 1e6}})
	c.Close()
	os.Exit(code)
}

type config struct {
	cache             string
	runs              int
	names             []string
	bin, md           string
	useRegistry, keep bool
	serve             bool
	prepare           bool
	netImages         []string
	link              link
}

func run(c *testenv.Console, cfg config) int {
	cache, runs, names, bin, md, useRegistry, keep := cfg.cache, cfg.runs, cfg.names, cfg.bin, cfg.md, cfg.useRegistry, cfg.keep
	if os.Geteuid() != 0 {
		fmt.Println("bench: umoci unpack needs root; run as root")
		return 1
	}
	// One run at a time per cache directory: a second one would delete
	// the first one's work directory under it.
	if err := os.MkdirAll(cache, 0o755); err != nil {
		fmt.Println("bench:", err)
		return 1
	}
	held, err := lock.Try(filepath.Join(cache, "bench.lock"))
	if err != nil {
		fmt.Printf("bench: another bench run is using %s (%v); wait for it, or give this one -cache DIR\n", cache, err)
		return 1
	}
	defer held.Unlock()
	for _, tool := range []string{"umoci", "mke2fs", "gzip", "zstd", "tar", "curl", "/usr/bin/time"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Printf("bench: %s not found (make deps installs it)\n", tool)
			return 1
		}
	}
	// skopeo only for the network rows, which are not part of CI.
	_, err = exec.LookPath("skopeo")
	haveSkopeo := err == nil
	if !haveSkopeo {
		fmt.Println("bench: skopeo not found (apt-get install skopeo): no skopeo rows")
	}
	bin, _ = filepath.Abs(bin)
	machine := machineInfo()
	loadBefore := loadAvg()
	fmt.Print(machine)

	var images []*benchImage
	for _, n := range names {
		bi, err := ensureImage(c, cache, strings.TrimSpace(n))
		if err != nil {
			fmt.Println("bench:", err)
			return 1
		}
		images = append(images, bi)
		if cfg.prepare {
			fmt.Printf("%s: %s\n", bi.Name, bi.Dir)
		}
	}
	if cfg.prepare {
		return 0
	}
	var reg *registrytest.Server
	refs := map[string]string{}
	linkHost := ""
	if useRegistry {
		reg = registrytest.Start(c, registrytest.Options{})
		for _, bi := range images {
			start := time.Now()
			p, err := layout.FromPath(bi.Dir)
			if err != nil {
				fmt.Println("bench:", err)
				return 1
			}
			idx, _ := p.ImageIndex()
			im, _ := idx.IndexManifest()
			img, err := p.Image(im.Manifests[0].Digest)
			if err != nil {
				fmt.Println("bench:", err)
				return 1
			}
			refs[bi.Name] = reg.Push(c, "bench/"+bi.Name+":1", img, nil)
			fmt.Printf("pushed %s to %s in %s\n", bi.Name, refs[bi.Name], time.Since(start).Round(100*time.Millisecond))
		}
		if slices.ContainsFunc(images, func(bi *benchImage) bool { return slices.Contains(cfg.netImages, bi.Name) }) {
			host, stop, err := startLink("http://"+reg.Host, cfg.link)
			if err != nil {
				fmt.Println("bench:", err)
				return 1
			}
			defer stop()
			linkHost = host
			fmt.Printf("simulated link to the registry at %s: RTT %s, %.0f MB/s per connection, %.0f MB/s shared\n",
				host, cfg.link.rtt, cfg.link.connRate/1e6, cfg.link.linkRate/1e6)
		}
		if cfg.serve {
			fmt.Println("serving; interrupt to stop")
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
			<-sig
			return 0
		}
	}

	work := filepath.Join(cache, "work")
	os.RemoveAll(work)
	if err := os.MkdirAll(work, 0o755); err != nil {
		fmt.Println("bench:", err)
		return 1
	}
	if !keep {
		defer os.RemoveAll(work)
	}
	out := filepath.Join(work, "out")
	results := map[string]map[string][]metric{}
	for _, bi := range images {
		res := map[string][]metric{}
		results[bi.Name] = res
		fmt.Printf("\n== %s: %s\n", bi.Name, bi.Desc)
		for r := range runs {
			// docker2vm from the layout.
			os.RemoveAll(out)
			// --no-cache: every run cold (the prefix cache would resume runs
			// after the first).
			m, err := runCmd(nil, bin, "--oci-layout", bi.Dir, "--mode", "rootfs", "--plain", "--quiet", "--no-cache", "--out", out)
			if err != nil {
				fmt.Println("bench:", err)
				return 1
			}
			res[pD2VM] = append(res[pD2VM], m)
			report(r, pD2VM, m)
			var meta struct {
				Rootfs struct{ SizeBytes, Entries int64 } `json:"rootfs"`
			}
			if err := readJSON(filepath.Join(out, "meta.json"), &meta); err != nil {
				fmt.Println("bench:", err)
				return 1
			}
			if r == 0 {
				if msg, err := exec.Command("e2fsck", "-fn", filepath.Join(out, "rootfs.ext4")).CombinedOutput(); err != nil {
					fmt.Printf("bench: e2fsck of docker2vm's output failed: %v\n%s", err, msg)
					return 1
				}
			}

			net := linkHost != "" && slices.Contains(cfg.netImages, bi.Name)
			if reg != nil && !millionEntries(bi.Name) {
				cdir := filepath.Join(work, "blobcache")
				os.RemoveAll(cdir)
				ref := refs[bi.Name]
				if net {
					ref = linkHost + strings.TrimPrefix(ref, reg.Host)
				}
				// Cold and warm write a new --out; the last run converts
				// again into the output the warm run left.
				for _, p := range []string{pD2VMCold, pD2VMWarm, pD2VMAgain} {
					if p != pD2VMAgain {
						os.RemoveAll(out)
					}
					m, err := runCmd(nil, bin, "--image", ref, "--cache-dir", cdir, "--mode", "rootfs", "--plain", "--quiet", "--out", out)
					if err != nil {
						fmt.Println("bench:", err)
						return 1
					}
					res[p] = append(res[p], m)
					report(r, p, m)
				}
				os.RemoveAll(cdir)
			}
			os.RemoveAll(out)

			if net {
				// The network alone: every blob at once, and one after
				// another; then skopeo copy, alone and followed by our
				// conversion of what it wrote.
				var urls []string
				for _, l := range bi.Layers {
					urls = append(urls, "http://"+linkHost+"/v2/bench/"+bi.Name+"/blobs/sha256:"+filepath.Base(l.Path))
				}
				m, err := runCmd(nil, "bash", append([]string{"-c", `for u; do curl -sSf -o /dev/null "$u" & done; s=0; for p in $(jobs -p); do wait $p || s=1; done; exit $s`, "all"}, urls...)...)
				if err != nil {
					fmt.Println("bench:", err)
					return 1
				}
				res[pNetAll] = append(res[pNetAll], m)
				report(r, pNetAll, m)
				m, err = runCmd(nil, "bash", append([]string{"-c", `for u; do curl -sSf -o /dev/null "$u" || exit 1; done`, "seq"}, urls...)...)
				if err != nil {
					fmt.Println("bench:", err)
					return 1
				}
				res[pNetSeq] = append(res[pNetSeq], m)
				report(r, pNetSeq, m)
				if !haveSkopeo {
					goto skipSkopeo
				}
				{
					sk := filepath.Join(work, "skopeo")
					os.RemoveAll(sk)
					m1, err := runCmd(nil, "skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
						"docker://"+linkHost+"/bench/"+bi.Name+":1", "oci:"+sk+":"+refName)
					if err != nil {
						fmt.Println("bench:", err)
						return 1
					}
					res[pSkopeo] = append(res[pSkopeo], m1)
					report(r, pSkopeo, m1)
					m2, err := runCmd(nil, bin, "--oci-layout", sk+":"+refName, "--mode", "rootfs", "--plain", "--quiet", "--no-cache", "--out", out)
					if err != nil {
						fmt.Println("bench:", err)
						return 1
					}
					res[pSkopeoConv] = append(res[pSkopeoConv], m1.add(m2))
					report(r, pSkopeoConv, m1.add(m2))
					os.RemoveAll(sk)
					os.RemoveAll(out)
				}
			skipSkopeo:
			}

			if tarBaseline(bi.Name) {
				// umoci would take many minutes on a million files: the
				// plain pipeline instead, tar -x into a directory, then
				// mke2fs -d (the many-file targets are against it).
				dir := filepath.Join(work, "tree")
				img := filepath.Join(work, "mke2fs.ext4")
				os.RemoveAll(dir)
				os.Remove(img)
				os.MkdirAll(dir, 0o755)
				var m1 metric
				for _, l := range bi.Layers {
					lm, err := runCmd(nil, "bash", "-c", `"$1" -dc "$2" | tar -x -C "$3"`, "tar", l.Compression, l.Path, dir)
					if err != nil {
						fmt.Println("bench:", err)
						return 1
					}
					m1 = m1.add(lm)
				}
				m2, err := mke2fsFrom(dir, img, meta.Rootfs.Entries, meta.Rootfs.SizeBytes)
				if err != nil {
					fmt.Println("bench:", err)
					return 1
				}
				m := m1.add(m2)
				res[pTar] = append(res[pTar], m)
				report(r, pTar, m)
				fmt.Printf("      (tar -x %s, mke2fs %s)\n", m1.Wall.Round(time.Millisecond), m2.Wall.Round(time.Millisecond))
				os.RemoveAll(dir)
				os.Remove(img)
				goto floor
			}

			// umoci unpack + mke2fs -d.
			if bi.Layers[0].Compression == "zstd" {
				// umoci 0.4.7 (Debian 12) rejects zstd layers.
				goto floor
			}
			{
				bundle := filepath.Join(work, "bundle")
				img := filepath.Join(work, "mke2fs.ext4")
				os.RemoveAll(bundle)
				os.Remove(img)
				m1, err := runCmd(nil, "umoci", "unpack", "--image", bi.Dir+":"+refName, bundle)
				if err != nil {
					fmt.Println("bench:", err)
					return 1
				}
				m2, err := mke2fsFrom(filepath.Join(bundle, "rootfs"), img, meta.Rootfs.Entries, meta.Rootfs.SizeBytes)
				if err != nil {
					fmt.Println("bench:", err)
					return 1
				}
				m := m1.add(m2)
				res[pUmoci] = append(res[pUmoci], m)
				report(r, pUmoci, m)
				fmt.Printf("      (umoci %s, mke2fs %s)\n", m1.Wall.Round(time.Millisecond), m2.Wall.Round(time.Millisecond))
				os.RemoveAll(bundle)
				os.Remove(img)
			}

			// The floor.
		floor:
			null, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			m = metric{}
			for _, l := range bi.Layers {
				lm, err := runCmd(null, l.Compression, "-dc", l.Path)
				if err != nil {
					fmt.Println("bench:", err)
					return 1
				}
				m = m.add(lm)
			}
			null.Close()
			res[pFloor] = append(res[pFloor], m)
			report(r, pFloor, m)

			// The floor of a verifying unpacker: what must happen to every
			// layer before a byte of it can be trusted (the blob's digest
			// and the diff ID of its decompressed bytes), on both cores,
			// with OpenSSL's sha256 (SHA-NI where the CPU has it).
			m = metric{}
			for _, l := range bi.Layers {
				lm, err := runCmd(nil, "bash", "-c", `openssl dgst -sha256 "$1" >/dev/null & "$2" -dc "$1" | openssl dgst -sha256 >/dev/null; wait`,
					"floor", l.Path, l.Compression)
				if err != nil {
					fmt.Println("bench:", err)
					return 1
				}
				m = m.add(lm)
			}
			res[pFloorSum] = append(res[pFloorSum], m)
			report(r, pFloorSum, m)
		}
	}
	loadAfter := loadAvg()
	table := renderTable(images, results, reg != nil, cfg.link)
	header := fmt.Sprintf("Run %s, `make bench-compare` (%d runs each, medians; runs interleaved).\n\n%s\nLoad average before: %s, after: %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runs, machine, loadBefore, loadAfter)
	fmt.Println()
	fmt.Print(header + table)
	if md != "" {
		if err := writeSection(md, beginMark, endMark, header+table); err != nil {
			fmt.Println("bench:", err)
			return 1
		}
		fmt.Printf("results written to %s\n", md)
	}
	return 0
}

func report(r int, p string, m metric) {
	fmt.Printf("  run %d  %-*s wall %8s  cpu %8s  rss %6.1f MiB\n", r+1, labelWidth, p,
		m.Wall.Round(time.Millisecond), m.CPU.Round(time.Millisecond), float64(m.MaxRSS)/(1<<20))
}

// mke2fsFrom times mke2fs -d of dir into img, with the image size docker2vm
// chose and enough inodes for its entries (mke2fs's default ratio is too
// few for many small files).
func mke2fsFrom(dir, img string, entries, size int64) (metric, error) {
	return runCmd(nil, "mke2fs", "-q", "-F", "-t", "ext4", "-L", "gondolin-root", "-N", fmt.Sprint(entries*5/4+1024),
		"-d", dir, img, fmt.Sprintf("%dk", size>>10))
}

// runCmd runs a child process under GNU time, which reports the child's
// rusage. (Reading our own child's rusage would be wrong: Go starts
// children with vfork, and Linux carries the parent's peak RSS into the
// child's maxrss across exec, so every child would look as big as this
// process at its largest, fixture building included.)
func runCmd(stdout *os.File, name string, args ...string) (metric, error) {
	m, _, err := runCmdLog(stdout, name, args...)
	return m, err
}

// runCmdLog is runCmd that also returns what the command wrote on stderr.
func runCmdLog(stdout *os.File, name string, args ...string) (metric, string, error) {
	tf, err := os.CreateTemp("", "bench-time-")
	if err != nil {
		return metric{}, "", err
	}
	tf.Close()
	defer os.Remove(tf.Name())
	// Every command starts with nothing left to write back: what the
	// previous one left dirty (umoci does not sync its bundle, the result
	// cache does not sync its entries, deleted outputs) would otherwise be
	// flushed on this one's time, by its fsync or by the kernel.
	syscall.Sync()
	cmd := exec.Command("/usr/bin/time", append([]string{"-o", tf.Name(), "-f", "%U %S %M", name}, args...)...)
	var errBuf strings.Builder
	cmd.Stderr = &errBuf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return metric{}, errBuf.String(), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errBuf.String())
	}
	b, err := os.ReadFile(tf.Name())
	if err != nil {
		return metric{}, errBuf.String(), err
	}
	var user, sys float64
	var rssKiB int64
	if _, err := fmt.Sscanf(string(b), "%f %f %d", &user, &sys, &rssKiB); err != nil {
		return metric{}, errBuf.String(), fmt.Errorf("parsing /usr/bin/time output %q: %v", b, err)
	}
	return metric{Wall: wall, CPU: time.Duration((user + sys) * float64(time.Second)), MaxRSS: rssKiB << 10}, errBuf.String(), nil
}

func median(ms []metric) metric {
	if len(ms) == 0 {
		return metric{}
	}
	pick := func(f func(metric) int64) int64 {
		v := make([]int64, len(ms))
		for i, m := range ms {
			v[i] = f(m)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return metric{
		Wall:   time.Duration(pick(func(m metric) int64 { return int64(m.Wall) })),
		CPU:    time.Duration(pick(func(m metric) int64 { return int64(m.CPU) })),
		MaxRSS: pick(func(m metric) int64 { return m.MaxRSS }),
	}
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// secsOrNA is the median wall time of ms, or n/a when nothing ran.
func secsOrNA(ms []metric) string {
	if len(ms) == 0 {
		return "n/a"
	}
	return secs(median(ms).Wall)
}

func renderTable(images []*benchImage, results map[string]map[string][]metric, withReg bool, l link) string {
	var b strings.Builder
	b.WriteString("| image | pipeline | wall | CPU (user+sys) | peak RSS |\n|---|---|---:|---:|---:|\n")
	order := []string{pD2VM}
	if withReg {
		order = append(order, pD2VMCold, pD2VMWarm, pD2VMAgain)
	}
	order = append(order, pUmoci, pTar, pNetAll, pNetSeq, pSkopeo, pSkopeoConv, pFloor, pFloorSum)
	for _, bi := range images {
		for _, p := range order {
			if len(results[bi.Name][p]) == 0 && (p != pUmoci || len(results[bi.Name][pTar]) > 0) {
				continue // does not apply to this image
			}
			if len(results[bi.Name][p]) == 0 {
				fmt.Fprintf(&b, "| %s | %s | n/a | n/a | n/a |\n", bi.Name, p)
				continue
			}
			m := median(results[bi.Name][p])
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %.0f MiB |\n", bi.Name, p, secs(m.Wall), secs(m.CPU), float64(m.MaxRSS)/(1<<20))
		}
	}
	b.WriteString("\n| image | layers (compressed) | docker2vm / (umoci + mke2fs) | docker2vm / floor | docker2vm / (floor + digests) | warm / cold (new --out; same --out) |\n|---|---:|---:|---:|---:|---:|\n")
	for _, bi := range images {
		r := results[bi.Name]
		d, u, f, fs := median(r[pD2VM]).Wall, median(r[pUmoci]).Wall, median(r[pFloor]).Wall, median(r[pFloorSum]).Wall
		var size int64
		for _, l := range bi.Layers {
			size += l.Size
		}
		wc := "n/a"
		if withReg && len(r[pD2VMCold]) > 0 {
			cold := median(r[pD2VMCold]).Wall.Seconds()
			wc = fmt.Sprintf("%.2f; %.2f", median(r[pD2VMWarm]).Wall.Seconds()/cold, median(r[pD2VMAgain]).Wall.Seconds()/cold)
		}
		du := "n/a (umoci 0.4.7 cannot read zstd layers)"
		if u > 0 {
			du = fmt.Sprintf("%.2f (%.1fx faster)", d.Seconds()/u.Seconds(), u.Seconds()/d.Seconds())
		} else if t := median(r[pTar]).Wall; t > 0 {
			du = fmt.Sprintf("%.2f of tar -x + mke2fs -d (%.1fx faster)", d.Seconds()/t.Seconds(), t.Seconds()/d.Seconds())
		}
		fmt.Fprintf(&b, "| %s | %d x %s, %.0f MiB | %s | %.2f | %.2f | %s |\n", bi.Name, len(bi.Layers), bi.Layers[0].Compression,
			float64(size)/(1<<20), du, d.Seconds()/f.Seconds(), d.Seconds()/fs.Seconds(), wc)
	}
	var net strings.Builder
	for _, bi := range images {
		r := results[bi.Name]
		if len(r[pNetAll]) == 0 || len(r[pD2VMCold]) == 0 {
			continue
		}
		all, cold, layout := median(r[pNetAll]).Wall, median(r[pD2VMCold]).Wall, median(r[pD2VM]).Wall
		fmt.Fprintf(&net, "| %s | %s | %s | %s | %.2f | %s | %s | %s |\n", bi.Name, secs(all), secs(layout), secs(cold),
			cold.Seconds()/max(all, layout).Seconds(), secs(median(r[pNetSeq]).Wall), secsOrNA(r[pSkopeo]), secsOrNA(r[pSkopeoConv]))
	}
	if net.Len() > 0 {
		fmt.Fprintf(&b, "\nAcross the simulated link (RTT %s, %.0f MB/s per connection, %.0f MB/s shared; `bench/netsim.go`):", l.rtt, l.connRate/1e6, l.linkRate/1e6)
		b.WriteString("\n\n| image | all blobs at once | docker2vm --oci-layout | docker2vm --image, cold | cold / max(the two) | blobs one after another | skopeo copy | skopeo copy + docker2vm |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
		b.WriteString(net.String())
	}
	b.WriteString("\nImages:\n")
	for _, bi := range images {
		fmt.Fprintf(&b, "- %s: %s\n", bi.Name, bi.Desc)
	}
	return b.String()
}

const (
	beginMark = "<!-- bench-compare results: begin (generated by `make bench-compare`) -->"
	endMark   = "<!-- bench-compare results: end -->"
)

// writeSection replaces the generated section between the two marks of the
// markdown file, or appends it.
func writeSection(path, beginMark, endMark, body string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	section := beginMark + "\n" + body + endMark
	i, j := strings.Index(s, beginMark), strings.Index(s, endMark)
	if i >= 0 && j > i {
		s = s[:i] + section + s[j+len(endMark):]
	} else {
		if s == "" {
			s = "# Benchmarks\n"
		}
		s += "\n" + section + "\n"
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// millionEntries are the images of a million entries: compared with
// tar -x and mke2fs -d instead of umoci, and not pushed to the registry.
func millionEntries(name string) bool { return name == "files1m" || name == "deep1m" }

// tarBaseline are the images compared with tar -x and mke2fs -d: the
// many-file ones.
func tarBaseline(name string) bool { return millionEntries(name) || name == "nodemodules" }

func machineInfo() string {
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(l[strings.Index(l, ":")+1:])
				break
			}
		}
	}
	mem := "unknown"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.TrimPrefix(strings.Split(string(b), "\n")[0], "MemTotal:"), "%d", &kb)
		mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	}
	var u unix.Utsname
	unix.Uname(&u)
	rel := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	return fmt.Sprintf("Machine: %d CPUs (nproc), %s, %s RAM, Linux %s, %s.\n", runtime.NumCPU(), model, mem, rel, runtime.Version())
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:3], " ")
}
