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
// answer within -timeout), and the mean, median and 99th percentile of the
// round-trip times in milliseconds. A query file has one question a line,
// "NAME TYPE" as dnsperf reads it; each server is asked the file's
// questions in its order. Queries have RD set and no EDNS, as dnsperf's.
//
// The socket calls block in the kernel on one locked thread and the
// schedule sleeps in clock_nanosleep, so that Go's scheduler and timers
// (a millisecond's resolution when idle) stay out of the figures.
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

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// server is one server asked, with its round-trip times.
type server struct {
	name string
	addr netip.AddrPort
	fd   int
	sent int
	rtts []time.Duration
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
	if len(list) == 0 || *file == "" || *qps <= 0 || *duration <= 0 {
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

// readQueries packs the file's questions, RD set, with ID 0.
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
	local, remote := unix.Sockaddr(&unix.SockaddrInet4{Addr: src.As4()}), unix.Sockaddr(nil)
	switch {
	case src.Is4() && addr.Addr().Is4():
		remote = &unix.SockaddrInet4{Addr: addr.Addr().As4(), Port: int(addr.Port())}
	case src.Is6() && addr.Addr().Is6():
		family = unix.AF_INET6
		local = &unix.SockaddrInet6{Addr: src.As16()}
		remote = &unix.SockaddrInet6{Addr: addr.Addr().As16(), Port: int(addr.Port())}
	default:
		return -1, fmt.Errorf("asking %s from %s: one address family for both", addr, src)
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
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

// run asks the servers in turn, one query every interval, until duration
// has passed. A query whose slot came while the one before still waited
// is sent at once: the schedule is kept, not shifted. The turns go in an
// order drawn anew every round (seeded by seed), so that no server keeps
// one phase of something periodic on the machine: in a fixed order each
// server's queries came at the same point of a cycle of len(list)
// intervals, and each server's median settled at one of two modes for a
// whole run.
func run(list servers, queries [][]byte, interval, duration time.Duration, seed uint64) error {
	in := make([]byte, 65535)
	q := make([]byte, 0, 512)
	order := slices.Clone(list)
	rng := rand.New(rand.NewPCG(seed, seed))
	start := monotonic()
	slots := int(duration / interval)
	for i := range slots {
		sleepUntil(start + int64(i)*int64(interval))
		if i%len(list) == 0 {
			rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		}
		s := order[i%len(list)]
		id := uint16(i)
		q = append(q[:0], queries[(i/len(list))%len(queries)]...)
		q[0], q[1] = byte(id>>8), byte(id)
		sent := monotonic()
		if _, err := unix.Write(s.fd, q); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		s.sent++
		for {
			n, err := unix.Read(s.fd, in)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ECONNREFUSED) {
				break // lost: no answer in time, or nothing listening
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			// An answer to this query; an earlier, lost query's late
			// answer is skipped.
			if n >= 12 && in[0] == q[0] && in[1] == q[1] && in[2]&0x80 != 0 {
				s.rtts = append(s.rtts, time.Duration(monotonic()-sent))
				break
			}
		}
	}
	return nil
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
	for unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil) == unix.EINTR {
	}
}

// summary is the server's line: name, sent, answered, lost, and mean,
// median and 99th percentile in milliseconds.
func (s *server) summary() string {
	if len(s.rtts) == 0 {
		return fmt.Sprintf("%s %d 0 %d 0 0 0", s.name, s.sent, s.sent)
	}
	slices.Sort(s.rtts)
	var sum time.Duration
	for _, d := range s.rtts {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	p := func(q float64) time.Duration { return s.rtts[min(len(s.rtts)-1, int(q*float64(len(s.rtts))))] }
	return fmt.Sprintf("%s %d %d %d %.4f %.4f %.4f", s.name, s.sent, len(s.rtts), s.sent-len(s.rtts),
		ms(sum/time.Duration(len(s.rtts))), ms(p(0.5)), ms(p(0.99)))
}
