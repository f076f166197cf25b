package listen

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dnsfence/dnsfence/resolver/dnswire"
	"github.com/miekg/dns"
	"go.uber.org/zap"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Batch sizes of the UDP loop.
const (
	udpBatch   = 64   // datagrams read (recvmmsg) and answered (sendmmsg) per system call
	udpReadBuf = 4096 // a larger datagram is not a DNS query anyone sends; it is dropped
	udpWorkers = 2048 // goroutines kept for queries that wait on an upstream
)

// udpServer serves DNS over one UDP socket in batches: one recvmmsg reads up
// to udpBatch queries, each is given to Handler.ServeInline right there
// with no goroutine of its own (blocked, refused and cached ones are
// answered then), and one sendmmsg sends their answers. The resume of a
// query that needs an upstream runs on a worker and is answered on its
// own. It is ours rather than miekg/dns's because that server spends a
// goroutine and two system calls on every packet. Parsing, packing and the
// accept decisions are miekg/dns's and the TCP server's.
type udpServer struct {
	pc      *net.UDPConn
	batch   BatchConn
	handler Handler
	count   Counter
	log     *zap.Logger
	accept  dns.MsgAcceptFunc
	invalid dns.MsgInvalidFunc
	async   sync.WaitGroup // queries resumed outside the loop, not yet answered
	done    chan struct{}
	// out carries the answers of queries answered outside the loop to the
	// writer, which sends whatever has queued up with one sendmmsg.
	out     chan outPacket
	outDone chan struct{}
	workers *workerPool
	stop1   sync.Once
	// stopped is set by stopReading: a batch read after it is not
	// answered (see stopReading).
	stopped atomic.Bool
	// stopping is closed by stopReading, once: it ends the wait after a
	// failed read (serve).
	stopping     chan struct{}
	stoppingOnce sync.Once
	// flushers are what the batch's queries asked to flush once it is
	// read through (AfterBatch): the loop's own, reused.
	flushers []Flusher
	// late are the answers of detached queries written within another
	// goroutine's batch (Within).
	late lateAnswers
	loop udpLoop
	// fromDst says the socket is bound to a wildcard address and each
	// answer is sent from the address its query was sent to
	// (answerFromDst): reads take control messages, and answers carry one.
	fromDst bool
	// memo is the loop's answer memo (MemoHandler), while serve runs; nil
	// for a handler without one.
	memo Memo
}

// lateAnswers are the answers of detached queries written within another
// goroutine's batch (an upstream reader's, udpWriter.Within): they go out
// together, with one sendmmsg, when that batch is read through (Flush),
// and their queries are Done after that, so that a shutdown waiting for
// them does not close the socket first.
type lateAnswers struct {
	s     *udpServer
	mu    sync.Mutex
	batch pooledBatch
	dones int // queries Done once the batch is sent
}

// add queues the answer p, sending the queue first when it is full.
func (l *lateAnswers) add(p outPacket) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.batch.full() {
		l.batch.send(l.s)
	}
	l.batch.add(p)
}

// done says a query written within the batch is answered, once the batch
// is sent.
func (l *lateAnswers) done() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dones++
}

// Flush sends the queued answers and says their queries Done (Flusher).
func (l *lateAnswers) Flush() {
	l.mu.Lock()
	l.batch.send(l.s)
	dones := l.dones
	l.dones = 0
	l.mu.Unlock()
	for range dones {
		l.s.async.Done()
	}
}

// pooledBatch is an outBatch of answers held in outBufs buffers, which go
// back to the pool once sent: the writer's and lateAnswers'.
type pooledBatch struct {
	outBatch
	held []*[]byte
}

func newPooledBatch(fromDst bool) pooledBatch {
	return pooledBatch{outBatch: newOutBatch(fromDst), held: make([]*[]byte, 0, udpBatch)}
}

// add appends the answer p; the batch holds at most udpBatch.
func (b *pooledBatch) add(p outPacket) {
	b.outBatch = b.outBatch.add(*p.buf, p.addr, p.src)
	b.held = append(b.held, p.buf)
}

// full reports a batch that takes no more.
func (b *pooledBatch) full() bool { return len(b.msgs) == udpBatch }

// send sends the batch on s's socket, if it holds any, and returns its
// buffers to outBufs, but for one grown for a rare large answer.
func (b *pooledBatch) send(s *udpServer) {
	if len(b.msgs) == 0 {
		return
	}
	s.send(b.msgs)
	b.reset()
	for i, buf := range b.held {
		if cap(*buf) <= udpReadBuf {
			outBufs.Put(buf)
		}
		b.held[i] = nil
	}
	b.held = b.held[:0]
}

// outPacket is one answer for the writer: buf holds it, and goes back to
// outBufs once sent; src is the address it is sent from (the zero Addr:
// the socket's).
type outPacket struct {
	buf  *[]byte
	addr *net.UDPAddr
	src  netip.Addr
}

// outBufs are the buffers of answers sent by the writer: an answer written
// outside the loop is copied into one, which the writer returns once it has
// sent it, so that neither allocates.
var outBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// newUDPServer serves h on pc; fromDst says pc is bound to a wildcard
// address and set to give each datagram's destination (answerFromDst).
func newUDPServer(pc *net.UDPConn, fromDst bool, h Handler, count Counter, log *zap.Logger, accept dns.MsgAcceptFunc, invalid dns.MsgInvalidFunc) *udpServer {
	s := &udpServer{pc: pc, handler: h, count: count, log: log, accept: accept, invalid: invalid, done: make(chan struct{}), stopping: make(chan struct{}),
		out: make(chan outPacket, 4*udpBatch), outDone: make(chan struct{}), workers: newWorkerPool(udpWorkers), fromDst: fromDst}
	s.workers.done = s.async.Done
	s.batch = NewBatchConn(pc)
	s.late = lateAnswers{s: s, batch: newPooledBatch(fromDst)}
	s.loop = newUDPLoop(s)
	s.flushers = make([]Flusher, 0, udpBatch)
	return s
}

// udpLoop is the read loop's own memory, made with the server rather than
// when the loop's goroutine first runs: once Start has returned, the loop
// allocates nothing for a query answered inline, not even for the first
// batch that fills a slot (on Linux's recvmmsg path; the x/net fallback
// makes each sender's address anew), nor the writer for its batch.
type udpLoop struct {
	in  []ipv4.Message
	out outBatch
	// bufs are the slots' answer buffers; PackBuffer grows one for a
	// larger answer.
	bufs [][]byte
	// writers are the slots' ResponseWriters, reused batch after batch; a
	// query that left the batch keeps its writer, and the slot gets a new
	// one.
	writers []*udpWriter
	// written is the writer's batch (writeOut).
	written pooledBatch
}

func newUDPLoop(s *udpServer) udpLoop {
	l := udpLoop{in: make([]ipv4.Message, udpBatch), out: newOutBatch(s.fromDst), bufs: make([][]byte, udpBatch),
		writers: make([]*udpWriter, udpBatch), written: newPooledBatch(s.fromDst)}
	// The buffers' slice headers side by side: ReadBatch looks at each of
	// them every call, and reads them in one sweep of memory rather than
	// one scattered allocation each.
	inBufs := make([][]byte, udpBatch)
	for i := range l.in {
		inBufs[i] = make([]byte, udpReadBuf)
		l.in[i].Buffers = inBufs[i : i+1 : i+1]
		// The address ReadBatch writes each sender's into, IPv6's size.
		l.in[i].Addr = &net.UDPAddr{IP: make(net.IP, 0, net.IPv6len)}
		if s.fromDst {
			// Where the kernel writes the datagram's destination.
			l.in[i].OOB = make([]byte, dstOOBSize)
		}
		l.bufs[i] = make([]byte, 0, udpReadBuf)
		l.writers[i] = &udpWriter{s: s}
	}
	return l
}

// udpWriter is the ResponseWriter of one datagram. Inside the batch its
// answer is packed into the batch's buffer; once the query has left the
// batch, it is sent on its own.
type udpWriter struct {
	s      *udpServer
	remote *net.UDPAddr
	// local is the address the query was sent to, which the answer is
	// sent from, on a socket bound to a wildcard address; the zero Addr
	// otherwise. It is a value: a detached query keeps it as it is.
	local  netip.Addr
	buf    []byte // the batch's buffer for this slot
	packed []byte // the answer packed into buf, to send with the batch
	alone  bool   // left the batch: write directly
	// within is the batch of another goroutine that the answer is
	// written in (Within): it goes out with that batch's.
	within Batcher
	// addr and ip hold the client's address once the query has left the
	// batch (remote then points at addr): the slot's is overwritten by
	// the next read.
	addr net.UDPAddr
	ip   [net.IPv6len]byte
	// received is the datagram while the loop serves it (Received).
	received []byte
}

var (
	_ ResponseWriter = (*udpWriter)(nil)
	_ Received       = (*udpWriter)(nil)
	_ Detacher       = (*udpWriter)(nil)
	_ Batcher        = (*udpWriter)(nil)
	_ MemoWriter     = (*udpWriter)(nil)
)

// Detach takes the query out of the batch (Detacher): its answer is sent
// on its own, by the writer, and the server waits for Done. The address
// read into the slot is the slot's, overwritten by the next batch: the
// writer keeps a copy.
func (w *udpWriter) Detach() {
	w.alone = true
	w.addr = net.UDPAddr{IP: w.ip[:copy(w.ip[:], w.remote.IP)], Port: w.remote.Port, Zone: w.remote.Zone}
	w.remote = &w.addr
	w.s.async.Add(1)
}

// Done says a detached query is answered (Detacher): at once, or, for
// one answered within another goroutine's batch, once that is sent.
func (w *udpWriter) Done() {
	if w.within != nil {
		w.s.late.done()
		w.within.AfterBatch(&w.s.late)
		return
	}
	w.s.async.Done()
}

// Within has the answer of a detached query written next go out with b's
// batch (Detacher).
func (w *udpWriter) Within(b Batcher) { w.within = b }

// sendAlone sends the answer of a detached query, in buf: with the batch
// it is written within, or by the writer.
func (w *udpWriter) sendAlone(buf *[]byte) {
	if w.within != nil {
		w.s.late.add(outPacket{buf: buf, addr: w.remote, src: w.local})
		w.within.AfterBatch(&w.s.late)
		return
	}
	w.s.out <- outPacket{buf: buf, addr: w.remote, src: w.local}
}

// AfterBatch asks the loop to call f.Flush once the batch is read through
// (Batcher). Only ServeWire may call it, on the loop, while it serves the
// query.
func (w *udpWriter) AfterBatch(f Flusher) {
	for _, g := range w.s.flushers {
		if g == f {
			return
		}
	}
	w.s.flushers = append(w.s.flushers, f)
}

func (w *udpWriter) Transport() string    { return UDP }
func (w *udpWriter) RemoteAddr() net.Addr { return w.remote }

// LocalAddr is the address the query was sent to: on a socket bound to a
// wildcard address, the datagram's own destination (IP_PKTINFO), where
// one was read; the socket's address otherwise.
func (w *udpWriter) LocalAddr() net.Addr {
	a := w.s.pc.LocalAddr()
	if !w.local.IsValid() {
		return a
	}
	port := 0
	if u, ok := a.(*net.UDPAddr); ok {
		port = u.Port
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(w.local, uint16(port)))
}

func (w *udpWriter) WriteMsg(m *dns.Msg) error {
	// PackBuffer packs into the length of the buffer it is given, not its
	// capacity (a new one for buf[:0]), and makes a larger one for an answer
	// that does not fit.
	if w.alone {
		buf := outBufs.Get().(*[]byte)
		b, err := m.PackBuffer((*buf)[:cap(*buf)])
		if err != nil {
			outBufs.Put(buf)
			return err
		}
		*buf = b
		w.sendAlone(buf)
		return nil
	}
	b, err := m.PackBuffer(w.buf[:cap(w.buf)])
	if err != nil {
		return err
	}
	w.packed = b
	return nil
}
func (w *udpWriter) Write(b []byte) (int, error) {
	if w.alone {
		buf := outBufs.Get().(*[]byte)
		*buf = append((*buf)[:0], b...) // b is the caller's, reused
		w.sendAlone(buf)
		return len(b), nil
	}
	w.packed = append(w.buf[:0], b...)
	return len(b), nil
}
func (w *udpWriter) Received() []byte    { return w.received }
func (w *udpWriter) Close() error        { return nil }
func (w *udpWriter) TsigStatus() error   { return nil }
func (w *udpWriter) TsigTimersOnly(bool) {}
func (w *udpWriter) Hijack()             {}

// Memo is the loop's answer memo (MemoWriter): nil once the query left
// the batch, whose writer may then run on another goroutine.
func (w *udpWriter) Memo() Memo {
	if w.alone {
		return nil
	}
	return w.s.memo
}

// writeOut sends the answers of queries answered outside the loop, batching
// whatever has queued up; it ends when out is closed.
func (s *udpServer) writeOut() {
	defer close(s.outDone)
	batch := &s.loop.written
	for p := range s.out {
		batch.add(p)
		// Let the queries that are ready to answer queue theirs first: the
		// first answer of a burst would otherwise leave alone.
		runtime.Gosched()
	drain:
		for !batch.full() {
			select {
			case p, ok := <-s.out:
				if !ok {
					break drain
				}
				batch.add(p)
			default:
				break drain
			}
		}
		batch.send(s)
	}
}

// outBatch is a batch of answers to send with one sendmmsg. Each message's
// Buffers is a one-element window onto bufs, made once, so that adding an
// answer allocates nothing (a [][]byte{b} per answer was the blocked path's
// one allocation a query); so is its OOB onto oob, where the control
// message that sets its source is written.
type outBatch struct {
	msgs []ipv4.Message
	bufs [][]byte
	// oob holds srcOOBSize bytes for each message, on a socket whose
	// answers are sent from their queries' destinations (fromDst); nil
	// otherwise.
	oob []byte
}

func newOutBatch(fromDst bool) outBatch {
	o := outBatch{msgs: make([]ipv4.Message, 0, udpBatch), bufs: make([][]byte, udpBatch)}
	if fromDst {
		o.oob = make([]byte, udpBatch*srcOOBSize)
	}
	return o
}

// add appends the answer b to addr, sent from src unless that is the zero
// Addr; the batch holds at most udpBatch.
func (o outBatch) add(b []byte, addr net.Addr, src netip.Addr) outBatch {
	i := len(o.msgs)
	o.bufs[i] = b
	m := ipv4.Message{Buffers: o.bufs[i : i+1 : i+1], Addr: addr}
	if src.IsValid() && o.oob != nil {
		oob := o.oob[i*srcOOBSize : (i+1)*srcOOBSize : (i+1)*srcOOBSize]
		m.OOB = oob[:putSrc(oob, src)]
	}
	o.msgs = append(o.msgs, m)
	return o
}

// reset empties the batch, dropping its references to the answers sent.
func (o *outBatch) reset() {
	clear(o.bufs[:len(o.msgs)])
	clear(o.msgs)
	o.msgs = o.msgs[:0]
}

// send writes a batch of answers, skipping one that fails (a client that
// went away).
func (s *udpServer) send(batch []ipv4.Message) {
	for len(batch) > 0 {
		sent, err := s.batch.WriteBatch(batch, 0)
		if err != nil {
			s.log.Debug("writing UDP answers", zap.Error(err))
			sent = 1
		}
		batch = batch[sent:]
	}
}

// serve reads and answers until the socket is closed or shut down.
func (s *udpServer) serve() {
	defer close(s.done)
	if mh, ok := s.handler.(MemoHandler); ok {
		s.memo = mh.NewMemo()
		defer s.memo.Close()
	}
	go s.writeOut()
	in, out, bufs, writers := s.loop.in, s.loop.out, s.loop.bufs, s.loop.writers
	var retry failWait
	for {
		n, err := s.batch.ReadBatch(in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
				return // closed, or shut down by a past read deadline
			}
			// An error that lasts (the kernel out of memory for the read)
			// is waited out as a failed TCP Accept is, not tried again at
			// once: that spun a core and wrote a warn line a try,
			// thousands a second.
			retry.wait(s.log, "reading UDP", err, s.stopping)
			continue // stopped or not: a stop's past deadline ends the next read
		}
		retry.reset()
		if s.stopped.Load() {
			// A batch that returned after stopReading (the poller woken by
			// the deadline took it) is not answered: some of it may have
			// arrived before the stop, as what still waits in the kernel
			// did, and none of it is answered either.
			for range n {
				s.count(UDP, ResultDropped)
			}
			return
		}
		for i := 0; i < n; i++ {
			m := &in[i]
			remote, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			if m.Flags&unix.MSG_TRUNC != 0 {
				s.count(UDP, ResultDropped) // larger than any query
				continue
			}
			if reflectingPort(remote.Port) {
				s.count(UDP, ResultDropped)
				continue
			}
			w := writers[i]
			if w.alone {
				w = &udpWriter{s: s}
				writers[i] = w
			}
			*w = udpWriter{s: s, remote: remote, buf: bufs[i]}
			if s.fromDst {
				w.local = dstOf(m.OOB[:m.NN])
			}
			s.serveDatagram(w, m.Buffers[0][:m.N])
			if w.packed != nil {
				out = out.add(w.packed, remote, w.local)
			}
		}
		s.flush()
		s.send(out.msgs)
		out.reset()
	}
}

// reflectingPort reports whether a datagram from source port port is
// dropped unread: port 0, which no host sends from (the source is
// forged), and the ports of services that answer whatever datagram comes,
// echo (7, RFC 862), Active Users (11, RFC 866), daytime (13, RFC 867),
// Quote of the Day (17, RFC 865), chargen (19, RFC 864), time (37, RFC
// 868) and kpasswd (464, RFC 3244, which answers a message it cannot read
// with an error). A query forged from one of them would have dnsfence and
// the service answer each other until the rate limit stopped it, or for
// ever from a source exempt from it: a quote or a list of users is ASCII
// text, whose header reads as a query (QR clear) of some opcode, answered
// NOTIMP or FORMERR. No DNS client sends from them. BIND drops all but 11
// and 17 (ns_client_dropport, on by default; it only withholds FORMERR
// from kpasswd); Windows' Simple TCP/IP Services serve 17 beside 7, 13
// and 19.
func reflectingPort(port int) bool {
	switch port {
	case 0, 7, 11, 13, 17, 19, 37, 464:
		return true
	}
	return false
}

// flush calls the Flushers the batch's queries asked for (AfterBatch).
func (s *udpServer) flush() {
	for i, f := range s.flushers {
		f.Flush()
		s.flushers[i] = nil
	}
	s.flushers = s.flushers[:0]
}

// serveDatagram answers one datagram, inline when it needs no upstream.
func (s *udpServer) serveDatagram(w *udpWriter, b []byte) {
	w.received = b
	resume := ServeDatagram(s.handler, w, b, s.accept, s.invalid, s.count)
	w.received = nil // b is the slot's, read into again
	if resume == nil {
		return
	}
	// It needs an upstream: answer it on its own, off the loop. The
	// worker marks it done in async (Done).
	w.Detach()
	s.workers.run(resume)
}

// AcceptMessage takes a raw message as miekg/dns's server would, as every
// listener does before its Handler sees it: without a header it is dropped
// (nil, nil: any answer could be used to amplify); a header the accept
// function rejects, or a body that does not parse (RFC 1035 §4.1.1),
// ends inside its question or points into or past it (questionSound),
// or ends before the records its header counts (dnswire.RecordsWhole),
// gets the FORMERR (or NOTIMP) reply returned as reject; else the parsed
// query is returned as req. invalid is told of a message that does not parse.
func AcceptMessage(b []byte, accept dns.MsgAcceptFunc, invalid dns.MsgInvalidFunc) (req, reject *dns.Msg) {
	const headerSize = 12
	if len(b) < headerSize {
		invalid(b, dns.ErrShortRead)
		return nil, nil
	}
	dh := dns.Header{
		Id:      binary.BigEndian.Uint16(b[0:]),
		Bits:    binary.BigEndian.Uint16(b[2:]),
		Qdcount: binary.BigEndian.Uint16(b[4:]),
		Ancount: binary.BigEndian.Uint16(b[6:]),
		Nscount: binary.BigEndian.Uint16(b[8:]),
		Arcount: binary.BigEndian.Uint16(b[10:]),
	}
	action := accept(dh)
	if action == dns.MsgAccept {
		if req = unpackQuery(b); req != nil && questionSound(b) && dnswire.RecordsWhole(b) && optionsSound(b) {
			return req, nil
		}
		// A body the header let through and the listener cannot read is
		// FORMERR whatever the VERSION of its OPT, as checkQuery answers
		// it: BADVERS answers the rejections by header (headerReject) and
		// the Handler's, which read the query's OPT from a query that
		// parses.
		invalid(b, dns.ErrBuf)
		return nil, rejectReply(b, dns.RcodeFormatError)
	}
	if action == dns.MsgIgnore {
		return nil, nil
	}
	if action == dns.MsgRejectNotImplemented {
		return nil, headerReject(b, dns.RcodeNotImplemented)
	}
	if action == dns.MsgReject {
		return nil, headerReject(b, dns.RcodeFormatError)
	}
	return nil, rejectReply(b, dns.RcodeFormatError)
}

// headerReject is the reply to the message b, rejected for its header (an
// opcode other than QUERY and NOTIFY: NOTIMP; a question count other than
// one: FORMERR; rcode says which): BADVERS when b carries an OPT record of
// a VERSION other than 0, which RFC 6891 §6.1.3 answers whatever else the
// message holds, as BIND does, and as the Handler decides the version
// before anything else: `dig +edns=1 +noednsneg +opcode=15 +header-only`
// got NOTIMP, and a client that speaks another version is told to fall
// back to 0 and ask again. A message of two questions or more stays
// FORMERR (RFC 9619 §4: MUST; BIND decides it before the version too).
func headerReject(b []byte, rcode int) *dns.Msg {
	if dnswire.QDCount(b) > 1 {
		return rejectReply(b, rcode)
	}
	if off, ok := dnswire.FindOPT(b); ok && b[off+5] != 0 { // VERSION: after TYPE, CLASS and EXTENDED-RCODE
		rcode = dns.RcodeBadVers
	}
	return rejectReply(b, rcode)
}

// rejectReply is the reply with rcode (FORMERR, NOTIMP, BADVERS) a listener sends
// itself to the message b, which has a whole header: its ID, opcode, RD
// and CD (RFC 1035 §4.1.1, RFC 4035 §3.2.2: the name server copies CD
// from the query into its response, whatever the response, as BIND and
// Unbound copy it into their FORMERR and NOTIMP, and as the Handler's
// answers do), with RA set by the rule of every reply of dnsfence's: set for
// QUERY (RFC 1035 §4.1.1: recursion is available here), clear for any
// other opcode (the NOTIMP to `dig +opcode=15 +header-only`), as BIND
// answers (Unbound's NOTIMP echoes the query's own bits) and ISC's
// genreport checks; and an OPT when
// b carries one (RFC 6891 §7: a query with an OPT gets an OPT back,
// whatever the RCODE; a FORMERR without one would tell the client that
// EDNS is not spoken here).
func rejectReply(b []byte, rcode int) *dns.Msg {
	bits := binary.BigEndian.Uint16(b[2:])
	m := new(dns.Msg)
	m.Id = binary.BigEndian.Uint16(b[0:])
	m.Response = true
	m.Opcode = dnswire.Opcode(bits)
	m.RecursionDesired = bits&dnswire.FlagRD != 0
	m.CheckingDisabled = bits&dnswire.FlagCD != 0
	m.RecursionAvailable = m.Opcode == dns.OpcodeQuery
	m.Rcode = rcode
	if edns, do := queryOPT(b); edns {
		m.SetEdns0(EDNSSize, do)
	}
	return m
}

// EDNSSize is the EDNS buffer size dnsfence advertises in every OPT it
// sends and uses upstream: the DNS Flag Day 2020 value that avoids IP
// fragmentation.
const EDNSSize = 1232

// queryOPT reports whether the message b, which has a header, carries an
// OPT record in its additional section, and that record's DO bit. It reads
// only the names' lengths, types and RDATA lengths, so that it finds the
// OPT of a message that does not parse otherwise (an option's data, an
// unknown opcode's sections); a message it cannot read so has none.
func queryOPT(b []byte) (edns, do bool) {
	off, ok := dnswire.FindOPT(b)
	if !ok {
		return false, false
	}
	return true, b[off+6]&0x80 != 0 // the DO bit: the high bit of the flags after EXTENDED-RCODE and VERSION
}

// unpackQuery parses the query b as miekg/dns does, but for the EDNS
// options dnsfence does not read from a parsed query; nil when it does not
// parse. miekg/dns refuses a whole message for the data of an option it
// knows and dnsfence ignores (an LLQ, UPDATE-LEASE, EXPIRE, Extended DNS
// Error, Report-Channel or ZONEVERSION option of a length or form other
// than its RFC's, an edns-tcp-keepalive of 1 octet) or of any option of an
// OPT of a VERSION other than 0: such a query got FORMERR, where RFC 6891
// §6.1.2 has a responder ignore an option it does not understand (RFC
// 7828 §3.2.1 the keepalive over UDP), and §6.1.3 answer BADVERS to
// another version, whatever its options hold. Such a b is parsed again
// without those options (dnswire.WithoutOptions); a message that parses as
// it is is parsed once, as before.
func unpackQuery(b []byte) *dns.Msg {
	req := new(dns.Msg)
	if req.Unpack(b) == nil {
		return req
	}
	rest, ok := dnswire.WithoutOptions(b, func(code uint16, _ []byte) bool { return readOption(code) })
	if !ok {
		return nil
	}
	req = new(dns.Msg)
	if req.Unpack(rest) != nil {
		return nil
	}
	return req
}

// readOption reports whether dnsfence reads the EDNS option code from a
// parsed query: a Client Subnet (a trusted proxy's names its client) and
// Padding (an encrypted answer is padded). A Cookie and a Client Subnet
// are checked in the octets (optionsSound), and the edns-tcp-keepalive is
// read from them (keepaliveTimeout, hasTCPKeepalive); every other option
// is ignored (RFC 6891 §6.1.2).
func readOption(code uint16) bool {
	return code == dns.EDNS0SUBNET || code == dns.EDNS0PADDING
}

// optionsSound reports whether every option of the OPT record of b, a
// message whose records are whole (dnswire.RecordsWhole), is well formed where
// its RFC asks for FORMERR otherwise (dnswire.OptionSound). miekg/dns
// unpacks a DNS Cookie of any length: one RFC 7873 §5.2.2 makes a format
// error was answered, and forwarded, as if the query had none; and a
// Client Subnet address of any length, masked: one with too many octets
// or bits past its prefix (RFC 7871 §6) was read as a network its sender
// did not write.
func optionsSound(b []byte) bool {
	return eachOption(b, dnswire.OptionSound)
}

// eachOption calls fn with each option of the OPT record of b, a message
// whose records are whole (dnswire.RecordsWhole), in order, until fn returns
// false; it reports whether none did. A message without an OPT, or an
// option that runs past the OPT's RDATA (which miekg/dns refuses to
// unpack), ends it with true; so does an OPT of a VERSION other than 0,
// whose options are not read: they are that version's, and the query gets
// BADVERS (RFC 6891 §6.1.3; the Handler's checkEDNS), as BIND answers it
// before it reads any option, not FORMERR for an option version 0 rules.
func eachOption(b []byte, fn func(code uint16, data []byte) bool) bool {
	rdata, version, ok := dnswire.OPTData(b)
	if !ok || version != 0 {
		return true
	}
	for len(rdata) > 0 {
		code, data, rest, whole := dnswire.NextOption(rdata)
		if !whole {
			return true
		}
		if !fn(code, data) {
			return false
		}
		rdata = rest
	}
	return true
}

// questionSound reports whether the question section of b, a message with
// a header that miekg/dns unpacked, is what a query's must be where
// miekg/dns does not check it:
//   - every question QDCOUNT gives is whole: its name, QTYPE and QCLASS
//     (RFC 1035 §4.1.2). miekg/dns unpacks a question the message ends in
//     after its name or its QTYPE as one of QTYPE or QCLASS 0: a query cut
//     short there would be answered, and forwarded, as a question of class
//     0 that nobody asked, where it is a format error;
//   - the first question spells its name without a compression pointer. A
//     pointer refers to a prior occurrence of a name (RFC 1035 §4.1.4), and
//     a query's question has none before it: a pointer there points
//     forward, or into the header, whose ID and flags miekg/dns reads as
//     labels, and the query was forwarded as a name the client never
//     wrote. Unbound answers FORMERR; BIND takes no forward pointer.
func questionSound(b []byte) bool {
	if _, ok := dnswire.SkipQuestions(b); !ok {
		return false
	}
	if binary.BigEndian.Uint16(b[4:]) == 0 {
		return true
	}
	for off := 12; off < len(b); off += 1 + int(b[off]) {
		switch c := b[off]; {
		case c == 0:
			return true
		case c&0xC0 != 0:
			return false
		}
	}
	return false
}

// stopReading stops the read loop without waiting: no datagram that
// arrives after it returns is answered, while answers still go out on the
// socket. A past deadline fails every later read before it is tried, but
// not a read under way: the runtime's poller, woken by the deadline,
// still takes a datagram that arrives before the loop runs again (about
// one stop in forty here), so the loop also drops, counted as dropped, a
// batch whose read returns after stopped is set.
func (s *udpServer) stopReading() {
	s.stopped.Store(true)
	_ = s.pc.SetReadDeadline(time.Now())
	s.stoppingOnce.Do(func() { close(s.stopping) })
}

// drain waits for the read loop to end and the queries it read to be
// answered, or until done is closed, then closes the socket. Call
// stopReading first.
func (s *udpServer) drain(done <-chan struct{}) {
	s.stop1.Do(func() { s.finish(done) })
}

func (s *udpServer) finish(done <-chan struct{}) {
	<-s.done
	finished := make(chan struct{})
	go func() { s.async.Wait(); close(finished) }()
	select {
	case <-finished:
		close(s.out) // nothing writes to it any more
		<-s.outDone
	case <-done:
		// The answers still coming fail on the closed socket; writeOut
		// ends once the last is given up.
		go func() {
			<-finished
			close(s.out)
		}()
	}
	s.workers.close()
	s.pc.Close()
}

// workerPool runs jobs on long-lived goroutines, whose stacks have already
// grown to what a query needs, instead of a new goroutine per job. A job
// that finds no worker idle starts one, up to max; a worker idle for
// workerIdle ends. Past max, a job gets a goroutine of its own.
type workerPool struct {
	jobs    chan func()
	running chan struct{} // a token per worker
	closed  chan struct{}
	once    sync.Once
	// done, when set, is called after each job run: the UDP server counts
	// the queries it resumed with it, at no cost per job.
	done func()
	// idle is how long a worker waits for a job before it ends:
	// workerIdle (a test's own otherwise).
	idle time.Duration
}

// workerIdle is how long a worker waits for a job before it ends.
const workerIdle = 10 * time.Second

func newWorkerPool(max int) *workerPool {
	return &workerPool{jobs: make(chan func()), running: make(chan struct{}, max), closed: make(chan struct{}), idle: workerIdle}
}

func (p *workerPool) run(job func()) {
	select {
	case p.jobs <- job: // an idle worker takes it
		return
	default:
	}
	select {
	case p.running <- struct{}{}:
		go p.work(job)
	default:
		go func() {
			job()
			p.finished()
		}()
	}
}

// finished is called after each job.
func (p *workerPool) finished() {
	if p.done != nil {
		p.done()
	}
}

func (p *workerPool) work(job func()) {
	defer func() { <-p.running }()
	idle := time.NewTimer(p.idle)
	defer idle.Stop()
	for {
		job()
		p.finished()
		idle.Reset(p.idle)
		select {
		case job = <-p.jobs:
		case <-idle.C:
			return
		case <-p.closed:
			return
		}
	}
}

// close ends the idle workers; a busy one ends after its job.
func (p *workerPool) close() { p.once.Do(func() { close(p.closed) }) }
