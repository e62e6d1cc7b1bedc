// Package npm holds docker2vm's npm packages: the main package's sources
// (docker2vm/: the launchers and the JavaScript API) and their tests
// (test/). `make npm` lays the packages out and packs them
// (scripts/npm.sh, internal/tools/npmpkg); the test here installs the
// tarballs into a fresh project and uses them as a user does.
package npm
