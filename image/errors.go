package image

import "github.com/docker2vm/docker2vm/image/internal/blob"

// ErrDigestMismatch is matched (errors.Is) by every integrity failure: a
// manifest, config or layer whose bytes do not hash to their digest, or
// whose size differs from the one its descriptor states.
var ErrDigestMismatch = blob.ErrDigestMismatch

// ErrNetwork is matched (errors.Is) by every registry transfer that failed
// for good after its retries: dropped or reset connections, stalls, server
// errors, rate limits.
var ErrNetwork = blob.ErrNetwork
