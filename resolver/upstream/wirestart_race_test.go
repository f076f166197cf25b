package upstream

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
)

// TestStartWireAnsweredBeforeSent: an answer with a started query's ID
// (late or spoofed) may come the moment its waiter is registered, before
// its datagram is even sent; the reader then ends the try and recycles it
// while StartWire is still returning. StartWire sets the try up and writes
// the ID into the query before the registration, and touches the try no
// more after it (the race detector failed it when it set them after).
// The IDs are predicted from a seeded queryIDs and flooded from the
// upstream's address.
func TestStartWireAnsweredBeforeSent(t *testing.T) {
	var seed [32]byte
	seed[0] = 7
	old := queryIDs
	queryIDs = &idSource{rng: rand.NewChaCha8(seed)}
	defer func() { queryIDs = old }()
	var pred *rand.ChaCha8

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	var client atomic.Pointer[net.UDPAddr]
	var floodID atomic.Int32
	floodID.Store(-1)
	go func() { // learns the client's (changing) port
		buf := make([]byte, 4096)
		for {
			_, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			client.Store(a.(*net.UDPAddr))
		}
	}()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // floods answers with the next ID to be drawn
		defer wg.Done()
		m := new(dns.Msg)
		m.SetQuestion("race.example.org.", dns.TypeA)
		m.Response = true
		for {
			select {
			case <-stop:
				return
			default:
			}
			a, id := client.Load(), floodID.Load()
			if a == nil || id < 0 {
				time.Sleep(time.Millisecond)
				continue
			}
			m.Id = uint16(id)
			b, _ := m.Pack()
			_, _ = pc.WriteTo(b, a)
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	f := NewForwarder([]string{pc.LocalAddr().String()}, 50*time.Millisecond, false)
	defer f.Close()
	for i := range 3000 {
		seed[1] = byte(i)
		seed[2] = byte(i >> 8)
		pred = rand.NewChaCha8(seed)
		id := uint16(pred.Uint64())
		q := wireQuestion("race.example.org.", dns.TypeA)
		if i > 0 {
			floodID.Store(int32(id))
			time.Sleep(2 * time.Millisecond) // the flood is under way
		}
		then := make(thenChan, 2)
		queryIDs.mu.Lock()
		queryIDs.rng = rand.NewChaCha8(seed)
		queryIDs.mu.Unlock()
		f.StartWire(q, then, nil)
		<-then
		floodID.Store(-1)
	}
}
