//go:build linux

// Command benchlat measures the latency of several DNS servers at once, one
// query at a time and taking turns, so that every server's figure is taken
// in the same moments of the machine.
//
// dnsperf measures one server at a time. On a virtual machine whose idle
// vCPU halts, the time a halted CPU takes to wake moves a server's mean
// latency at 5,000 qps by up to 2x from one run of a few seconds to the
// next, against a few percent between servers: runs taken one after the
// other compare the machine's moments more than the servers. benchlat
// sends query 1 to the first server, query 2 to the second and so on,
// every query at its own fixed time (the rate is the total, so the
// servers' core wakes at the rate of a one-server run), and keeps each
// server's round-trip times apart. The difference between two servers'
// figures is then theirs; the figures themselves include benchlat's own
// wake-up, which is the same for every server.
//
//	benchlat -server dnsfence=127.0.0.1:5301 -server unbound=127.0.0.1:5302 \
//	    -source 127.0.0.2 -file blocked.txt -qps 5000 -duration 10s
//
// prints, a line a server: its name, queries sent, answered, lost (no
// answer within -timeout, or refused by the kernel: nothing listening),
// and the mean, 25th percentile, median and 99th percentile of the
// round-trip times of the answered queries in milliseconds (nearest
// rank; a lost query is in none of them, as in dnsperf's). A query file
// has one question a line, "NAME TYPE" as dnsperf reads it; each server
// is asked the file's questions in its order. Queries have RD set and no
// EDNS, as dnsperf's.
//
// The socket calls block in the kernel on one locked thread and the
// schedule sleeps in clock_nanosleep, all as raw system calls, so that
// Go's netpoller, timers (a millisecond's resolution when idle) and
// scheduler stay out of the figures: through a system call the runtime
// knows of, its monitor thread woke every 170 µs or so (about three
// wake-ups a query at 2,000 qps, on the load generator's core). Nothing
// is allocated while asking, so no collection needs the goroutine to
// stop; the runtime's preemption signal, every 10 ms, ends a call early
// (EINTR) and it is made again. The run ends after -duration even when a
// server answers nothing, give or take one -timeout. Linux only, for
// those system calls.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// server is one server asked, with its round-trip times.
type server struct {
	name string
	addr netip.AddrPort
	fd   int
	// timeout is how long a query waits for its answer.
	timeout time.Duration
	sent    int
	rtts    []time.Duration
}

// servers is the repeated -server flag: NAME=ADDRESS:PORT.
type servers []*server

func (s *servers) String() string { return "" }
func (s *servers) Set(v string) error {
	name, addr, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("%q: want NAME=ADDRESS:PORT", v)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	*s = append(*s, &server{name: name, addr: ap})
	return nil
}

func main() {
	var list servers
	flag.Var(&list, "server", "NAME=ADDRESS:PORT of a server to ask, on loopback (repeat it; asked in turn)")
	source := flag.String("source", "127.0.0.2", "the address to ask from, on loopback")
	file := flag.String("file", "", `the questions, one "NAME TYPE" a line`)
	qps := flag.Int("qps", 5000, "queries a second, all servers together")
	duration := flag.Duration("duration", 10*time.Second, "how long to ask")
	timeout := flag.Duration("timeout", 100*time.Millisecond, "how long a query waits for its answer before it is lost")
	seed := flag.Uint64("seed", 1, "the seed of the servers' order in each round")
	flag.Parse()
	if len(list) == 0 || *file == "" || *qps <= 0 || *qps > 1_000_000 || *duration <= 0 || *timeout < time.Millisecond {
		fmt.Fprintln(os.Stderr, "benchlat: want -server (once or more), -file, -qps from 1 to 1,000,000, -duration over 0 and -timeout of 1ms or more")
		flag.Usage()
		os.Exit(2)
	}
	src, err := netip.ParseAddr(*source)
	if err != nil || !src.IsLoopback() {
		log.Fatalf("the benchmark asks from loopback only, not %q", *source)
	}
	queries, err := readQueries(*file)
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range list {
		if !s.addr.Addr().IsLoopback() {
			log.Fatalf("the benchmark asks on loopback only, not %s (%s)", s.addr, s.name)
		}
		s.timeout = *timeout
		if s.fd, err = dial(src, s.addr, *timeout); err != nil {
			log.Fatalf("%s: %v", s.name, err)
		}
	}
	runtime.LockOSThread()
	if err := run(list, queries, time.Second/time.Duration(*qps), *duration, *seed); err != nil {
		log.Fatal(err)
	}
	for _, s := range list {
		fmt.Println(s.summary())
	}
}

// readQueries packs the file's questions, RD set (run sets each one's ID).
func readQueries(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		qtype := dns.TypeA
		if len(fields) > 1 {
			t, ok := dns.StringToType[strings.ToUpper(fields[1])]
			if !ok {
				return nil, fmt.Errorf("%s:%d: unknown type %q", path, line, fields[1])
			}
			qtype = t
		}
		b, err := new(dns.Msg).SetQuestion(dns.Fqdn(fields[0]), qtype).Pack()
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, b)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no questions", path)
	}
	return out, nil
}

// dial is a blocking UDP socket bound to src and connected to addr, whose
// reads give up after timeout. src and addr are both IPv4 or both IPv6.
func dial(src netip.Addr, addr netip.AddrPort, timeout time.Duration) (int, error) {
	family := unix.AF_INET
	var local, remote unix.Sockaddr
	switch {
	case src.Is4() && addr.Addr().Is4():
		local = &unix.SockaddrInet4{Addr: src.As4()}
		remote = &unix.SockaddrInet4{Addr: addr.Addr().As4(), Port: int(addr.Port())}
	case src.Is6() && addr.Addr().Is6():
		family = unix.AF_INET6
		local = &unix.SockaddrInet6{Addr: src.As16()}
		remote = &unix.SockaddrInet6{Addr: addr.Addr().As16(), Port: int(addr.Port())}
	default:
		return -1, fmt.Errorf("asking %s from %s: one address family for both", addr, src)
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM, 0)
	if err != nil {
		return -1, err
	}
	unix.CloseOnExec(fd)
	if err := setTimeout(fd, timeout); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Bind(fd, local); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Connect(fd, remote); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// setTimeout makes a read of fd give up (EAGAIN) after d.
func setTimeout(fd int, d time.Duration) error {
	tv := unix.NsecToTimeval(max(d, time.Microsecond).Nanoseconds())
	return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
}

// run asks the servers in turn, one query every interval, until duration
// has passed, each waiting up to its timeout for the answer. A query whose
// slot came while the one before still waited is sent at once; after a
// wait longer than a slot (a lost query's) the schedule starts again from
// then, rather than sending the slots missed back to back. The turns go
// in an order drawn anew every round of len(list) queries (seeded by
// seed), so that no server keeps one phase of something periodic on the
// machine: in a fixed order each server's queries came at the same point
// of a cycle of len(list) intervals, and each server's median settled at
// one of two modes for a whole run.
func run(list servers, queries [][]byte, interval, duration time.Duration, seed uint64) error {
	in := make([]byte, 65535)
	q := make([]byte, 0, 512)
	order := slices.Clone(list)
	rng := rand.New(rand.NewPCG(seed, seed))
	for _, s := range list {
		s.rtts = make([]time.Duration, 0, int(duration/interval)/len(list)+1) // no allocation while asking
	}
	start := monotonic()
	sch := schedule{next: start, interval: int64(interval), end: start + int64(duration)}
	for k := 0; ; k++ {
		at, ok := sch.slot(monotonic())
		if !ok {
			return nil
		}
		sleepUntil(at)
		if k%len(list) == 0 {
			rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		}
		s := order[k%len(list)]
		q = append(q[:0], queries[(k/len(list))%len(queries)]...)
		q[0], q[1] = byte(k>>8), byte(k) // the ID: k modulo 65,536
		if err := s.ask(q, in); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
}

// schedule is run's timetable, in CLOCK_MONOTONIC nanoseconds: a query
// every interval from next until end.
type schedule struct {
	next, interval, end int64
}

// slot is when the next query is due, given the time now; false once the
// run is over. A slot missed by more than one interval (the query before
// waited that long) is not made up: the timetable starts again from now.
func (c *schedule) slot(now int64) (int64, bool) {
	if now > c.next+c.interval {
		c.next = now
	}
	if c.next >= c.end {
		return 0, false
	}
	at := c.next
	c.next += c.interval
	return at, true
}

// ask sends q to s and waits up to s.timeout for its answer, recording
// the round trip if it comes. An earlier, lost query's late answer is
// skipped (its ID is not q's), and the wait goes on for the time left.
// s.fd's read timeout must be s.timeout.
func (s *server) ask(q, in []byte) error {
	s.sent++
	sent := monotonic()
	if _, err := rawIO(unix.SYS_WRITE, s.fd, q); err != nil {
		if lost(err) {
			return nil
		}
		return err
	}
	shortened := false
	defer func() {
		if shortened {
			_ = setTimeout(s.fd, s.timeout)
		}
	}()
	for {
		n, err := rawIO(unix.SYS_READ, s.fd, in)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case lost(err):
			return nil
		case err != nil:
			return err
		}
		if n >= 12 && in[0] == q[0] && in[1] == q[1] && in[2]&0x80 != 0 {
			s.rtts = append(s.rtts, time.Duration(monotonic()-sent))
			return nil
		}
		left := s.timeout - time.Duration(monotonic()-sent)
		if left <= 0 {
			return nil
		}
		if err := setTimeout(s.fd, left); err != nil {
			return err
		}
		shortened = true
	}
}

// lost reports whether err means the query got no answer: the read timed
// out, or the kernel reported nothing listening (ICMP port unreachable) or
// no buffer for the datagram.
func lost(err error) bool {
	return errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ENOBUFS)
}

// monotonic is CLOCK_MONOTONIC in nanoseconds.
func monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// sleepUntil sleeps in the kernel until CLOCK_MONOTONIC reaches t
// nanoseconds, at once if it has.
func sleepUntil(t int64) {
	ts := unix.NsecToTimespec(t)
	call := unix.Syscall6
	if rawCalls {
		call = unix.RawSyscall6
	}
	for {
		_, _, e := call(unix.SYS_CLOCK_NANOSLEEP, unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		if e != unix.EINTR {
			return
		}
	}
}

// rawCalls makes benchlat's blocking calls raw system calls, which the
// runtime does not see (see the package comment). The tests turn it off:
// they run the servers in the same process, whose goroutines a
// collection would stop while benchlat's thread, unseen, waits in a read
// for one of their answers.
var rawCalls = true

// rawIO is read(2) or write(2) (trap) of b on fd, as a raw system call
// when rawCalls.
func rawIO(trap uintptr, fd int, b []byte) (int, error) {
	call := unix.Syscall
	if rawCalls {
		call = unix.RawSyscall
	}
	n, _, e := call(trap, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// summary is the server's line: name, sent, answered, lost, and the mean,
// 25th percentile, median and 99th percentile of its round trips in
// milliseconds.
func (s *server) summary() string {
	if len(s.rtts) == 0 {
		return fmt.Sprintf("%s %d 0 %d 0 0 0 0", s.name, s.sent, s.sent)
	}
	rtts := slices.Sorted(slices.Values(s.rtts))
	var sum time.Duration
	for _, d := range rtts {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return fmt.Sprintf("%s %d %d %d %.4f %.4f %.4f %.4f", s.name, s.sent, len(rtts), s.sent-len(rtts),
		ms(sum/time.Duration(len(rtts))), ms(rank(rtts, 25)), ms(rank(rtts, 50)), ms(rank(rtts, 99)))
}

// rank is the p-th percentile of sorted by nearest rank: the smallest
// value with at least p % of the values at or below it.
func rank(sorted []time.Duration, p int) time.Duration {
	i := (p*len(sorted) + 99) / 100 // ceil(p/100 × n), 1-based
	return sorted[max(i, 1)-1]
}
