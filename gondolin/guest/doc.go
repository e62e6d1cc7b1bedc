// Package guest edits an image's filesystem tree into a Gondolin guest:
// it reads the runtime glue from a base bundle's rootfs (ReadGlue: init,
// guest agents, kernel modules, the tools the init needs), adds it to the
// image tree without replacing an image file (Inject), and writes what
// runs the image's ENTRYPOINT/CMD as its USER (the entrypoint runner and
// package setuser). Pure functions over fstree: finding and reading base
// bundles, manifests and the image store are package gondolin's.
package guest
