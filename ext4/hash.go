package ext4

import "math/bits"

// dxHash computes the htree hash of a directory entry name exactly as the
// kernel's ext4fs_dirhash does (fs/ext4/hash.c). version already includes
// the +3 "unsigned" offset when the superblock says so. It returns the major
// hash (low bit cleared) and the minor hash.
func dxHash(name []byte, version uint8, seed [4]uint32) (uint32, uint32) {
	buf := [4]uint32{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476}
	if seed != [4]uint32{} {
		buf = seed
	}
	var hash, minor uint32
	var in [8]uint32
	switch version {
	case hashLegacy, hashLegacy + hashUnsigned:
		hash = dxHackHash(name, version == hashLegacy+hashUnsigned)
	case hashHalfMD4, hashHalfMD4 + hashUnsigned:
		unsigned := version == hashHalfMD4+hashUnsigned
		for p := name; len(p) > 0; {
			str2hashbuf(p, in[:8], unsigned)
			halfMD4Transform(&buf, &in)
			if len(p) <= 32 {
				break
			}
			p = p[32:]
		}
		hash, minor = buf[1], buf[2]
	case hashTea, hashTea + hashUnsigned:
		unsigned := version == hashTea+hashUnsigned
		for p := name; len(p) > 0; {
			str2hashbuf(p, in[:4], unsigned)
			teaTransform(&buf, in[:4])
			if len(p) <= 16 {
				break
			}
			p = p[16:]
		}
		hash, minor = buf[0], buf[1]
	default:
		return 0, 0
	}
	hash &^= 1
	if hash == 0x7fffffff<<1 { // EXT4_HTREE_EOF_32BIT << 1 is reserved
		hash = (0x7fffffff - 1) << 1
	}
	return hash, minor
}

func dxHackHash(name []byte, unsigned bool) uint32 {
	var hash uint32
	hash0, hash1 := uint32(0x12a3fe2d), uint32(0x37abe8f9)
	for _, c := range name {
		v := int32(int8(c))
		if unsigned {
			v = int32(c)
		}
		hash = hash1 + (hash0 ^ uint32(v*7152373))
		if hash&0x80000000 != 0 {
			hash -= 0x7fffffff
		}
		hash1, hash0 = hash0, hash
	}
	return hash0 << 1
}

// str2hashbuf packs up to 4*len(out) bytes of msg into out, padded with a
// length-derived pattern (the kernel's str2hashbuf_signed/unsigned).
func str2hashbuf(msg []byte, out []uint32, unsigned bool) {
	n := len(msg)
	pad := uint32(n) | uint32(n)<<8
	pad |= pad << 16
	val := pad
	num := len(out)
	if n > num*4 {
		n = num * 4
	}
	o := 0
	for i := 0; i < n; i++ {
		c := uint32(int32(int8(msg[i])))
		if unsigned {
			c = uint32(msg[i])
		}
		val = c + val<<8
		if i%4 == 3 {
			out[o] = val
			o++
			val = pad
			num--
		}
	}
	num--
	if num >= 0 {
		out[o] = val
		o++
	}
	for num--; num >= 0; num-- {
		out[o] = pad
		o++
	}
}

func halfMD4Transform(buf *[4]uint32, in *[8]uint32) {
	const k2, k3 = 013240474631, 015666365641
	f := func(x, y, z uint32) uint32 { return z ^ (x & (y ^ z)) }
	g := func(x, y, z uint32) uint32 { return (x & y) + ((x ^ y) & z) }
	h := func(x, y, z uint32) uint32 { return x ^ y ^ z }
	a, b, c, d := buf[0], buf[1], buf[2], buf[3]
	r := func(fn func(x, y, z uint32) uint32, a *uint32, b, c, d, x uint32, s int) {
		*a = bits.RotateLeft32(*a+fn(b, c, d)+x, s)
	}
	r(f, &a, b, c, d, in[0], 3)
	r(f, &d, a, b, c, in[1], 7)
	r(f, &c, d, a, b, in[2], 11)
	r(f, &b, c, d, a, in[3], 19)
	r(f, &a, b, c, d, in[4], 3)
	r(f, &d, a, b, c, in[5], 7)
	r(f, &c, d, a, b, in[6], 11)
	r(f, &b, c, d, a, in[7], 19)

	r(g, &a, b, c, d, in[1]+k2, 3)
	r(g, &d, a, b, c, in[3]+k2, 5)
	r(g, &c, d, a, b, in[5]+k2, 9)
	r(g, &b, c, d, a, in[7]+k2, 13)
	r(g, &a, b, c, d, in[0]+k2, 3)
	r(g, &d, a, b, c, in[2]+k2, 5)
	r(g, &c, d, a, b, in[4]+k2, 9)
	r(g, &b, c, d, a, in[6]+k2, 13)

	r(h, &a, b, c, d, in[3]+k3, 3)
	r(h, &d, a, b, c, in[7]+k3, 9)
	r(h, &c, d, a, b, in[2]+k3, 11)
	r(h, &b, c, d, a, in[6]+k3, 15)
	r(h, &a, b, c, d, in[1]+k3, 3)
	r(h, &d, a, b, c, in[5]+k3, 9)
	r(h, &c, d, a, b, in[0]+k3, 11)
	r(h, &b, c, d, a, in[4]+k3, 15)

	buf[0] += a
	buf[1] += b
	buf[2] += c
	buf[3] += d
}

func teaTransform(buf *[4]uint32, in []uint32) {
	const delta = 0x9E3779B9
	var sum uint32
	b0, b1 := buf[0], buf[1]
	a, b, c, d := in[0], in[1], in[2], in[3]
	for n := 0; n < 16; n++ {
		sum += delta
		b0 += ((b1 << 4) + a) ^ (b1 + sum) ^ ((b1 >> 5) + b)
		b1 += ((b0 << 4) + c) ^ (b0 + sum) ^ ((b0 >> 5) + d)
	}
	buf[0] += b0
	buf[1] += b1
}

// xattrEntryHash is ext4_xattr_hash_entry: the name bytes then the value as
// little-endian 32-bit words (zero padded).
func xattrEntryHash(name string, value []byte) uint32 {
	var h uint32
	for i := 0; i < len(name); i++ {
		h = h<<5 ^ h>>27 ^ uint32(name[i])
	}
	for i := 0; i < len(value); i += 4 {
		var w [4]byte
		copy(w[:], value[i:])
		h = h<<16 ^ h>>16 ^ le.Uint32(w[:])
	}
	return h
}

// xattrBlockHash is ext4_xattr_rehash over the entries' hashes.
func xattrBlockHash(entryHashes []uint32) uint32 {
	var h uint32
	for _, e := range entryHashes {
		if e == 0 {
			return 0
		}
		h = h<<16 ^ h>>16 ^ e
	}
	return h
}
