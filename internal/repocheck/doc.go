// Package repocheck holds tests of the repository as a whole rather than of
// one package: that what the comments and documents cite exists, so a
// citation cannot silently go stale when a test, a file or a document is
// renamed or removed.
//
//   - A comment cites a test case as (test: "name") or (tests: "a", "b");
//     the name must be a test function or a table case of the same
//     package: a `name:` field of a composite literal, or the literal name
//     of a t.Run, in one of the package's _test.go files. A comment that
//     names a test function (TestX, FuzzX, BenchmarkX) names one of its
//     package.
//   - A path docs/NAME.md anywhere in the sources, scripts or documents
//     must exist.
//   - The documents (docs/*.md, README.md, BENCHMARKS.md) name in
//     backquotes only repository paths and test functions that exist.
package repocheck
