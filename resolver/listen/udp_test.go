package listen

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWorkerPoolRunsEveryJob: jobs past the pool's workers, and past its
// cap, still run at once; workers that are done take the next jobs; close
// ends the idle ones.
func TestWorkerPoolRunsEveryJob(t *testing.T) {
	p := newWorkerPool(2)
	release := make(chan struct{})
	started := make(chan int, 10)
	for i := 0; i < 5; i++ { // 2 workers and 3 goroutines of their own, all blocked
		p.run(func() { started <- i; <-release })
	}
	got := map[int]bool{}
	for range 5 {
		got[<-started] = true
	}
	assert.Len(t, got, 5, "no job waits for a worker")
	assert.Len(t, p.running, 2, "at most 2 workers")
	close(release)
	done := make(chan struct{})
	require.Eventually(t, func() bool {
		select {
		case p.jobs <- func() { close(done) }: // an idle worker takes it
			return true
		default:
			return false
		}
	}, 5*time.Second, time.Millisecond)
	<-done
	p.close()
	require.Eventually(t, func() bool { return len(p.running) == 0 }, 5*time.Second, time.Millisecond, "idle workers end on close")
}

// TestWorkerPoolSaysEachJobDone: done is called after every job, one a
// worker runs and one past max on a goroutine of its own alike: the UDP
// server counts the queries it resumed with it, and its shutdown waits
// for them.
func TestWorkerPoolSaysEachJobDone(t *testing.T) {
	p := newWorkerPool(1)
	defer p.close()
	var jobs sync.WaitGroup
	p.done = jobs.Done
	release := make(chan struct{})
	const n = 3 // a worker, and 2 goroutines of their own
	jobs.Add(n)
	for range n {
		p.run(func() { <-release })
	}
	close(release)
	finished := make(chan struct{})
	go func() { jobs.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("a job was not said done")
	}
}

// TestWorkerPoolIdleWorkerEnds: a worker that waits its idle time for a
// job ends, having run its last job once, and the next job starts
// another.
func TestWorkerPoolIdleWorkerEnds(t *testing.T) {
	p := newWorkerPool(1)
	p.idle = 50 * time.Millisecond
	defer p.close()
	var runs, dones atomic.Int64
	p.done = func() { dones.Add(1) }
	p.run(func() { runs.Add(1) })
	require.Eventually(t, func() bool { return len(p.running) == 0 }, 5*time.Second, time.Millisecond, "the idle worker ended")
	assert.Equal(t, int64(1), runs.Load(), "runs of the job")
	assert.Equal(t, int64(1), dones.Load(), "done called")
	ran := make(chan struct{})
	p.run(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("the job after the worker ended did not run")
	}
}

// TestUDPRejectedMessageAnswered: a datagram the listener rejects before
// the Handler sees it is answered over UDP, as over TCP, and counted:
// FORMERR to a query of two questions, NOTIMP to an opcode other than
// QUERY and NOTIFY, each with its query's ID; the query that parses, read
// by the same loop, is the Handler's. Unanswered, the client would wait
// out its timeout and ask again.
func TestUDPRejectedMessageAnswered(t *testing.T) {
	counted := &counts{}
	_, addr := startServerAt(t, "127.0.190.1:0", Config{
		Handler: &fakeHandler{release: make(chan struct{})},
		Count:   counted.count,
		Rules:   func() Rules { return fakeRules{} },
	})
	c, err := net.Dial("udp", addr)
	require.NoError(t, err)
	defer c.Close()
	conn := &dns.Conn{Conn: c}

	two := new(dns.Msg)
	two.SetQuestion("fast.", dns.TypeTXT)
	two.Question = append(two.Question, two.Question[0])
	update := new(dns.Msg)
	update.SetQuestion("fast.", dns.TypeTXT)
	update.Opcode = dns.OpcodeUpdate
	good := new(dns.Msg)
	good.SetQuestion("fast.", dns.TypeTXT)
	tests := []struct {
		name  string
		query *dns.Msg
		rcode int
	}{
		{name: "two questions", query: two, rcode: dns.RcodeFormatError},
		{name: "UPDATE", query: update, rcode: dns.RcodeNotImplemented},
		{name: "a query", query: good, rcode: dns.RcodeSuccess},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
			require.NoError(t, conn.WriteMsg(tc.query))
			r, err := conn.ReadMsg()
			require.NoError(t, err, "answered")
			assert.Equal(t, tc.query.Id, r.Id)
			assert.Equal(t, tc.rcode, r.Rcode, dns.RcodeToString[r.Rcode])
		})
	}
	assert.Equal(t, map[string]int{UDP + "/" + ResultFormerr: 1, UDP + "/" + ResultNotimp: 1}, counted.all())
}
