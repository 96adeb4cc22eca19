// The failover scenario (-failover): the first -routers nodes announce subnet routes in pairs
// (nodes 2k and 2k+1 both announce 10.k.0.0/24); after the storm the driver approves every
// announced route ("APPROVE", answered "APPROVED <count>"), every other node waits to hear
// the primary of 10.0.0.0/24, then that primary's stream is closed (its node cancelled, as a
// router that dies) and each other node is timed until a message gives the route to the
// standby: a Node carrying "PrimaryRoutes":["10.0.0.0/24"] (the old primary's Node no longer
// carries it). Messages are not decoded for this: a byte search, as the policy scenario does.
package main

import (
	"bytes"
	"fmt"
	"log"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

var primaryTag = []byte(`"PrimaryRoutes":["10.0.0.0/24"]`)

// failoverArmed: messages after this time (unix ns) count as the standby's announcement.
var failoverArmed atomic.Int64

func routerPrefix(idx int) (netip.Prefix, bool) {
	if !*flagFailover || idx >= *flagRouters {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(idx / 2), 0, 0}), 24), true
}

// trackFailover runs for every non-keep-alive message of a node when -failover is on.
func (n *node) trackFailover(js []byte, now int64) {
	if !bytes.Contains(js, primaryTag) {
		return
	}
	if n.foPrimary.Load() == 0 {
		n.foPrimary.Store(now)
	}
	if t0 := failoverArmed.Load(); t0 != 0 && now >= t0 && n.foAfter.Load() == 0 {
		n.foAfter.Store(now)
	}
}

type failoverResult struct {
	Approved  int       `json:"approved"`   // routes the driver approved
	Nodes     int       `json:"nodes"`      // live nodes given the route, its two routers left out
	Unrouted  int       `json:"unrouted"`   // live nodes the policy does not give the route
	Victim    int64     `json:"victim"`     // node id of the primary whose stream was closed
	Told      int       `json:"told"`       // nodes that heard of the new primary in time
	AllS      float64   `json:"all_s"`      // stream closed → last node told (-1: not all)
	LatencyMS []float64 `json:"latency_ms"` // per node told, sorted
	P50MS     float64   `json:"p50_ms"`
	P99MS     float64   `json:"p99_ms"`
	MaxMS     float64   `json:"max_ms"`
	TimeoutS  float64   `json:"timeout_s"`
	Missing   []int64   `json:"missing,omitempty"` // ids of the first 20 nodes never told
	Standby   int64     `json:"standby"`           // node id of the router that took over
	Error     string    `json:"error,omitempty"`
}

func askApprove() (int, error) {
	driverSay("APPROVE")
	line, err := stdinLines.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("no answer from the driver: %w", err)
	}
	f := strings.Fields(line)
	if len(f) == 2 && f[0] == "APPROVED" {
		return strconv.Atoi(f[1])
	}
	return 0, fmt.Errorf("driver: %s", strings.TrimSpace(line))
}

func pctlMS(v []float64, q float64) float64 {
	if len(v) == 0 {
		return -1
	}
	i := int(q*float64(len(v))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(v) {
		i = len(v) - 1
	}
	return v[i]
}

func runFailover() *failoverResult {
	fr := &failoverResult{AllS: -1, TimeoutS: flagEventTO.Seconds()}
	var err error
	if fr.Approved, err = askApprove(); err != nil {
		fr.Error = err.Error()
		return fr
	}
	var a, b *node
	var others []*node
	for _, n := range liveNodes() {
		switch n.idx {
		case 0:
			a = n
		case 1:
			b = n
		default:
			others = append(others, n)
		}
	}
	if a == nil || b == nil {
		fr.Error = "the two routers of 10.0.0.0/24 are not both connected"
		return fr
	}
	// Every node the policy gives the route hears its first primary (the lower id: both came
	// online before the approval). Under a policy that keeps it from some, they never do: wait
	// until all have, or until no one new has for -settle after the first one did.
	deadline := time.Now().Add(*flagEventTO)
	got, lastGrowth := 0, time.Now()
	for {
		n := 0
		for _, o := range others {
			if o.foPrimary.Load() != 0 {
				n++
			}
		}
		if n > got {
			got, lastGrowth = n, time.Now()
		}
		if got == len(others) || (got > 0 && time.Since(lastGrowth) > *flagSettle) {
			break
		}
		if time.Now().After(deadline) {
			fr.Error = fmt.Sprintf("no node heard of the primary of 10.0.0.0/24 in %v",
				*flagEventTO)
			return fr
		}
		time.Sleep(10 * time.Millisecond)
	}
	routed := others[:0:0]
	for _, o := range others {
		if o.foPrimary.Load() != 0 {
			routed = append(routed, o)
		}
	}
	fr.Unrouted = len(others) - len(routed)
	others = routed
	fr.Nodes = len(others)
	victim := a
	if b.id.Load() < a.id.Load() {
		victim = b
	}
	fr.Victim = victim.id.Load()
	if victim == a {
		fr.Standby = b.id.Load()
	} else {
		fr.Standby = a.id.Load()
	}
	time.Sleep(*flagSettle)
	t0 := time.Now().UnixNano()
	failoverArmed.Store(t0)
	victim.deleted.Store(true) // gone for the scenarios that follow (restart)
	victim.cancel()            // its stream closes: the server marks it offline, elects the standby
	log.Printf("failover: closed the stream of node %d, primary of 10.0.0.0/24", fr.Victim)
	deadline = time.Unix(0, t0).Add(*flagEventTO)
	for {
		got := 0
		for _, n := range others {
			if n.foAfter.Load() != 0 {
				got++
			}
		}
		if got == len(others) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	var last int64
	for _, n := range others {
		if n.foAfter.Load() == 0 && len(fr.Missing) < 20 {
			fr.Missing = append(fr.Missing, n.id.Load())
		}
		if t := n.foAfter.Load(); t != 0 {
			fr.LatencyMS = append(fr.LatencyMS, float64(t-t0)/1e6)
			if t > last {
				last = t
			}
		}
	}
	sort.Float64s(fr.LatencyMS)
	fr.Told = len(fr.LatencyMS)
	if fr.Told == len(others) && last != 0 {
		fr.AllS = float64(last-t0) / 1e9
	}
	fr.P50MS, fr.P99MS = pctlMS(fr.LatencyMS, 0.5), pctlMS(fr.LatencyMS, 0.99)
	fr.MaxMS = pctlMS(fr.LatencyMS, 1)
	log.Printf("failover: %d/%d nodes told of the new primary (all in %.3fs) p50=%.1fms "+
		"p99=%.1fms max=%.1fms", fr.Told, len(others), fr.AllS, fr.P50MS, fr.P99MS, fr.MaxMS)
	return fr
}
