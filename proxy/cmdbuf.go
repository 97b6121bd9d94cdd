package proxy

// cmdBuf holds the client's bytes while the command framer reads them,
// in both relays (commandCopier, loopSession): buf[r:w] is read but not
// yet framed, buf[out:r] framed and waiting to be forwarded. It comes
// from the pool, cmdBufSize to start, and is given back whenever nothing
// is held.
type cmdBuf struct {
	bufp   *[]byte // pooled; nil while nothing is held
	buf    []byte
	r, w   int
	out    int
	maxBuf int // the most a partial line can need: max_command_size+512
}

// takeBuf takes a buffer for at least n bytes (at least cmdBufSize).
func (b *cmdBuf) takeBuf(n int) {
	n = max(n, cmdBufSize)
	b.bufp = getBuf(n)
	b.buf = (*b.bufp)[:n]
}

// releaseBuf returns the buffer to the pool; nothing may be buffered.
func (b *cmdBuf) releaseBuf() {
	putBuf(b.bufp)
	b.bufp, b.buf = nil, nil
}

// makeRoom makes room at buf[w:] when a partial line fills the buffer:
// it moves the line to the front, or, if it starts there, doubles the
// buffer up to maxBuf (a line that fills maxBuf is the framer's to
// refuse).
func (b *cmdBuf) makeRoom() {
	switch {
	case b.w < len(b.buf):
	case b.r > 0:
		copy(b.buf, b.buf[b.r:b.w])
		b.w -= b.r
		b.r, b.out = 0, 0
	case len(b.buf) < b.maxBuf:
		old := b.bufp
		n := min(2*len(b.buf), b.maxBuf)
		b.bufp = getBuf(n)
		b.buf = (*b.bufp)[:n]
		copy(b.buf, (*old)[:b.w])
		putBuf(old)
	}
}
