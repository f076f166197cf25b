package resolver

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/dnsfence/dnsfence/internal/testnet"
	"github.com/dnsfence/dnsfence/resolver/config"
	"github.com/dnsfence/dnsfence/resolver/listen"
)

// FuzzRateLimiter runs the limiter against a reference model of
// golang.org/x/time/rate's token bucket, which it replaced: a client's
// bucket is full (burst tokens) at its first query, refilled at the rate
// for the time since, up to the burst, by the monotonic clock whatever the
// wall clock does; a query takes a token or is refused. The input is a
// rate, a burst and a sequence of queries from four clients of one shard at monotonic
// times, each with a step of the wall clock. The model counts in exact
// integers (4e9 a token); a decision within a millionth of a token of
// the line may go either way, and the model follows it. Over any window of
// one client's queries, no more than burst + rate × elapsed are allowed.
func FuzzRateLimiter(f *testing.F) {
	if !testnet.WallSteppable() {
		f.Skip("time.Time's layout changed: testnet.WallStepped no longer steps the wall clock alone")
	}
	op := func(client byte, fine bool, delta uint16, stepMinutes int8) []byte {
		if fine {
			client |= 0x80
		}
		return []byte{client, byte(delta >> 8), byte(delta), byte(stepMinutes)}
	}
	seq := func(rate, burst byte, ops ...[]byte) []byte {
		b := []byte{rate, burst}
		for _, o := range ops {
			b = append(b, o...)
		}
		return b
	}
	// A burst at once, then one more after a second.
	f.Add(seq(3, 3, op(0, false, 0, 0), op(0, true, 0, 0), op(0, true, 0, 0), op(0, true, 0, 0), op(0, true, 0, 0), op(0, false, 100, 0)))
	// The wall clock stepped back an hour: the bucket refills all the same.
	f.Add(seq(3, 1, op(1, false, 0, 0), op(1, true, 0, 0), op(1, false, 100, -60), op(1, false, 100, 0)))
	// Drained, then idle for more than a minute, with a burst more than a
	// minute refills, while a new client of its shard comes.
	drained := []byte{0, 19}
	for range 20 {
		drained = append(drained, op(2, true, 0, 0)...)
	}
	drained = append(drained, op(3, false, 6200, 0)...)
	for range 20 {
		drained = append(drained, op(2, true, 0, 0)...)
	}
	f.Add(drained)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		k := int64(data[0]%64) + 1 // rate = k/4 queries a second
		burst := int64(data[1]%32) + 1
		const unit = 4_000_000_000 // model units a token: k units a nanosecond
		r := newRateLimiter(config.RateLimit{Rate: float64(k) / 4, Burst: int(burst)})
		// The four clients share one shard, so that a new one's sweep
		// meets the others' buckets whatever the shards' seed.
		var clients [4]netip.Addr
		clients[0] = netip.AddrFrom4([4]byte{192, 0, 2, 1})
		shard := r.shard(listen.ClientNetwork(clients[0]))
		for i, a := 1, clients[0].Next(); i < len(clients); a = a.Next() {
			if r.shard(listen.ClientNetwork(a)) == shard {
				clients[i] = a
				i++
			}
		}
		base := time.Now()
		type query struct {
			at      int64 // monotonic nanoseconds since base
			allowed bool
		}
		var (
			mono    int64
			wall    time.Duration
			tokens  [4]int64 // model, in units
			last    [4]int64
			seen    [4]bool
			queries [4][]query
		)
		ops := data[2:]
		for len(ops) >= 4 && len(queries[0])+len(queries[1])+len(queries[2])+len(queries[3]) < 256 {
			c := int(ops[0] & 3)
			delta := int64(binary.BigEndian.Uint16(ops[1:3]))
			if ops[0]&0x80 != 0 {
				mono += delta * int64(time.Microsecond)
			} else {
				mono += delta * int64(10*time.Millisecond)
			}
			wall += time.Duration(int8(ops[3])) * time.Minute
			ops = ops[4:]

			if !seen[c] {
				seen[c], tokens[c], last[c] = true, burst*unit, mono
			}
			tokens[c] = min(tokens[c]+k*(mono-last[c]), burst*unit)
			last[c] = mono
			want := tokens[c] >= unit
			got := r.allow(clients[c], testnet.WallStepped(base.Add(time.Duration(mono)), wall))
			if got != want {
				const near = unit / 1_000_000
				if tokens[c]-unit > near || unit-tokens[c] > near {
					t.Fatalf("rate %v/s, burst %d: client %d's query %d at %v (wall clock stepped %v): allowed %v, the model's bucket holding %.6f tokens",
						float64(k)/4, burst, c, len(queries[c]), time.Duration(mono), wall, got, float64(tokens[c])/unit)
				}
			}
			if got {
				tokens[c] = max(tokens[c]-unit, 0)
			}
			queries[c] = append(queries[c], query{at: mono, allowed: got})
		}
		for c, qs := range queries {
			for i := range qs {
				allowed := int64(0)
				for j := i; j < len(qs); j++ {
					if qs[j].allowed {
						allowed++
					}
					// allowed ≤ burst + rate × elapsed, in units, with a millionth's room
					if allowed*unit > burst*unit+k*(qs[j].at-qs[i].at)+unit/1_000_000 {
						t.Fatalf("rate %v/s, burst %d: client %d had %d queries allowed in %v (queries %d to %d)",
							float64(k)/4, burst, c, allowed, time.Duration(qs[j].at-qs[i].at), i, j)
					}
				}
			}
		}
	})
}
