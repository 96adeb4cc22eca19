// The soak scenario (-soak D): for D the tailnet keeps changing at a steady pace while every
// node follows its map as the client's mapSession does, and at the end each node's map is
// compared with a fresh full map for it.
//
// The pace, per minute: -soak-churn nodes leave for good (in turns: deleted through the
// driver's CLI command, logged out, or just gone without a word) and as many new ones join;
// -soak-endpoints nodes send a lite update with a new endpoint; every -soak-policy-every the
// driver sets the other of two policies (allow-all and the 200-rule one, so peers are hidden
// and shown again). The server's RSS, CPU and the machine's load are sampled every 10 s.
//
// Each node keeps its view of the tailnet from the messages it reads (soakView): the peers
// (a full Peers list replaces them; PeersRemoved, PeersChanged and PeersChangedPatch are
// applied in the client's order), its own Node, DNSConfig, DERPMap, Domain, SSHPolicy and the
// packet filter (filterTrack). A peer is kept as one hash per field that matters, so 1,000
// nodes' views of ~1,400 peers fit in a few hundred MB. At the end, when no map traffic has
// flowed for -soak-quiet, every live node asks once more with the same node key, not
// streaming (Stream false, OmitPeers false: one full map), and the two views are compared
// field by field. LastSeen differs legitimately and is left out; Online is compared but
// counted apart (it follows connections, which may end during the comparison), and so are
// the fields of the node's own Node that it reported itself (the server does not echo them).
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tailscale.com/control/ts2021"
	"tailscale.com/tailcfg"
	"tailscale.com/util/zstdframe"
)

var (
	flagSoak            = flag.Duration("soak", 0, "run the soak scenario for this long (needs -driver for the policy changes, and -delete-cmd)")
	flagSoakChurn       = flag.Float64("soak-churn", 10, "soak: nodes leaving (and as many joining) per minute")
	flagSoakEndpoints   = flag.Float64("soak-endpoints", 10, "soak: endpoint changes per minute")
	flagSoakPolicyEvery = flag.Duration("soak-policy-every", 5*time.Minute, "soak: the driver sets the other policy this often (0: never)")
	flagSoakQuiet       = flag.Duration("soak-quiet", 5*time.Second, "soak: no map traffic for this long before the comparison")
)

// The fields of a node compared one by one; anything else is folded into pfRest.
const (
	pfKey = iota
	pfKeySig
	pfDisco
	pfEndpoints
	pfDERP
	pfCap
	pfCapMap
	pfKeyExpiry
	pfOnline
	pfAddresses
	pfAllowedIPs
	pfPrimaryRoutes
	pfName
	pfTags
	pfUser
	pfHostinfo
	pfRest
	nPF
)

var pfNames = [nPF]string{"Key", "KeySignature", "DiscoKey", "Endpoints", "HomeDERP", "Cap",
	"CapMap", "KeyExpiry", "Online", "Addresses", "AllowedIPs", "PrimaryRoutes", "Name", "Tags",
	"User", "Hostinfo", "other fields"}

// nodeSlot: where a Node's JSON member goes (-1: left out).
func nodeSlot(k string) int {
	switch k {
	case `"Key"`:
		return pfKey
	case `"KeySignature"`:
		return pfKeySig
	case `"DiscoKey"`:
		return pfDisco
	case `"Endpoints"`:
		return pfEndpoints
	case `"HomeDERP"`, `"DERP"`:
		return pfDERP
	case `"Cap"`:
		return pfCap
	case `"CapMap"`:
		return pfCapMap
	case `"KeyExpiry"`:
		return pfKeyExpiry
	case `"Online"`:
		return pfOnline
	case `"Addresses"`:
		return pfAddresses
	case `"AllowedIPs"`:
		return pfAllowedIPs
	case `"PrimaryRoutes"`:
		return pfPrimaryRoutes
	case `"Name"`:
		return pfName
	case `"Tags"`:
		return pfTags
	case `"User"`:
		return pfUser
	case `"Hostinfo"`:
		return pfHostinfo
	case `"ID"`, `"LastSeen"`:
		return -1
	}
	return pfRest
}

// patchSlot: where a PeersChangedPatch member goes (-1: LastSeen; -2: not a PeerChange field).
func patchSlot(k string) int {
	switch k {
	case `"DERPRegion"`:
		return pfDERP
	case `"Cap"`, `"CapMap"`, `"Endpoints"`, `"Key"`, `"KeySignature"`, `"DiscoKey"`,
		`"Online"`, `"KeyExpiry"`:
		return nodeSlot(k)
	case `"LastSeen"`, `"NodeID"`:
		return -1
	}
	return -2
}

type peerFields [nPF]uint32

// zeroJSON: values the client treats as absent (omitted, null, empty, zero, false).
func zeroJSON(v []byte) bool {
	switch string(v) {
	case "", "null", "[]", "{}", `""`, "0", "false":
		return true
	}
	return false
}

func hash32(v []byte) uint32 {
	h := hashJSON(v)
	return uint32(h ^ h>>32)
}

// derpRegion: the home region as text, from HomeDERP (900), the legacy DERP string
// ("127.3.3.40:900") or a patch's DERPRegion.
func derpRegion(v []byte) []byte {
	if len(v) > 1 && v[0] == '"' {
		s := strings.Trim(string(v), `"`)
		return []byte(s[strings.LastIndexByte(s, ':')+1:])
	}
	return v
}

// setField stores one member of a Node or a patch.
func (f *peerFields) setField(slot int, k, v []byte) {
	if slot == pfDERP {
		v = derpRegion(v)
	}
	if slot == pfRest {
		if !zeroJSON(v) { // an order-independent sum over the other members
			f[pfRest] += hash32(k)*2654435761 ^ hash32(v)
		}
		return
	}
	if zeroJSON(v) {
		f[slot] = 0
	} else {
		f[slot] = hash32(v)
	}
}

func parseNode(obj []byte) (id int64, f peerFields) {
	objectEach(obj, func(k, v []byte) {
		if string(k) == `"ID"` {
			id, _ = strconv.ParseInt(string(v), 10, 64)
		}
		if s := nodeSlot(string(k)); s >= 0 {
			f.setField(s, k, v)
		}
	})
	return id, f
}

// arrayEach calls fn for each element of a JSON array.
func arrayEach(v []byte, fn func(el []byte)) {
	i := skipWS(v, 0)
	if i >= len(v) || v[i] != '[' {
		return
	}
	i++
	for {
		i = skipWS(v, i)
		if i >= len(v) || v[i] == ']' {
			return
		}
		e := valueEnd(v, i)
		if e < 0 {
			return
		}
		fn(v[i:e])
		i = skipWS(v, e)
		if i < len(v) && v[i] == ',' {
			i++
		}
	}
}

// soakView is a node's tailnet as its messages left it.
type soakView struct {
	peers                  map[int64]peerFields
	self                   peerFields
	selfID                 int64
	dns, derp, domain, ssh uint32
	fullMaps, deltas       int64
	odd                    map[string]int // what a client would ignore or log
}

func (v *soakView) oddity(what string) {
	if v.odd == nil {
		v.odd = map[string]int{}
	}
	v.odd[what]++
}

// apply folds one non-keep-alive message into the view, in mapSession's order: a non-empty
// Peers list replaces the peers and precludes the deltas; else PeersRemoved, PeersChanged,
// OnlineChange, then PeersChangedPatch (PeerSeenChange touches only LastSeen).
func (v *soakView) apply(js []byte, pf *filterTrack) {
	if v.peers == nil {
		v.peers = map[int64]peerFields{}
	}
	var peers, removed, changed, patches, online []byte
	objectEach(js, func(k, val []byte) {
		switch string(k) {
		case `"Peers"`:
			peers = val
		case `"PeersRemoved"`:
			removed = val
		case `"PeersChanged"`:
			changed = val
		case `"PeersChangedPatch"`:
			patches = val
		case `"Node"`:
			if !isNull(val) {
				v.selfID, v.self = parseNode(val)
			}
		case `"DNSConfig"`:
			setIfNotNull(&v.dns, val)
		case `"DERPMap"`:
			setIfNotNull(&v.derp, val)
		case `"Domain"`:
			setIfNotNull(&v.domain, val)
		case `"SSHPolicy"`:
			setIfNotNull(&v.ssh, val)
		case `"OnlineChange"`:
			online = val
		}
	})
	pf.update(js)
	if !zeroJSON(peers) {
		v.fullMaps++
		clear(v.peers)
		arrayEach(peers, func(el []byte) {
			id, f := parseNode(el)
			v.peers[id] = f
		})
		v.checkSelf()
		return
	}
	v.deltas++
	arrayEach(removed, func(el []byte) {
		id, _ := strconv.ParseInt(string(el), 10, 64)
		if _, ok := v.peers[id]; !ok {
			v.oddity("PeersRemoved names a peer it does not have")
		}
		delete(v.peers, id)
	})
	arrayEach(changed, func(el []byte) {
		id, f := parseNode(el)
		v.peers[id] = f
	})
	objectEach(online, func(k, val []byte) { // {"<node id>": true|false}
		id, _ := strconv.ParseInt(strings.Trim(string(k), `"`), 10, 64)
		if f, ok := v.peers[id]; ok {
			f.setField(pfOnline, k, val)
			v.peers[id] = f
		}
	})
	arrayEach(patches, func(el []byte) { v.patch(el) })
	v.checkSelf()
}

func (v *soakView) patch(el []byte) {
	var id int64
	objectEach(el, func(k, val []byte) {
		if string(k) == `"NodeID"` {
			id, _ = strconv.ParseInt(string(val), 10, 64)
		}
	})
	f, ok := v.peers[id]
	if !ok {
		v.oddity("PeersChangedPatch for a peer it does not have")
		return
	}
	objectEach(el, func(k, val []byte) {
		s := patchSlot(string(k))
		switch {
		case s == -2:
			v.oddity("PeersChangedPatch member " + string(k) + " (not a PeerChange field)")
		case s >= 0 && !isNull(val) && !((s == pfDERP || s == pfCap) && string(val) == "0"):
			// null and a zero DERPRegion or Cap mean "unchanged" (PeerChange's pointers,
			// nil slices and omitzero); an empty list or Online false are values
			f.setField(s, k, val)
		}
	})
	v.peers[id] = f
}

func (v *soakView) checkSelf() {
	if _, ok := v.peers[v.selfID]; ok && v.selfID != 0 {
		v.oddity("the node itself among its peers")
	}
}

func setIfNotNull(dst *uint32, val []byte) {
	if !zeroJSON(val) {
		*dst = hash32(val)
	}
}

// ---------------------------------------------------------------------------------------------
// the comparison

// soakDiff: how a node's followed view differs from its fresh full map.
type soakDiff struct {
	Idx      int            `json:"idx"`
	ID       int64          `json:"node_id"`
	Hostname string         `json:"hostname"`
	Stale    []int64        `json:"stale_peers,omitempty"`   // held, not in the fresh map
	Missing  []int64        `json:"missing_peers,omitempty"` // in the fresh map, not held
	Fields   map[string]int `json:"peer_fields,omitempty"`   // peer field → peers differing in it
	// peer field → the first peers differing in it (node IDs)
	FieldPeers map[string][]int64 `json:"peer_fields_ids,omitempty"`
	Top        []string           `json:"top,omitempty"`  // Node, DNSConfig, PacketFilter, ...
	Online     int                `json:"online_differs"` // peers whose Online differs
	// its own Node's fields that it reported itself (endpoints, Hostinfo, home DERP, disco
	// key): a server need not send them back, so they are counted apart
	SelfReported []string `json:"self_reported_differs,omitempty"`
	Peers        int      `json:"peers"`
	Error        string   `json:"error,omitempty"`
}

func (d *soakDiff) equal() bool {
	return d.Error == "" && len(d.Stale) == 0 && len(d.Missing) == 0 && len(d.Fields) == 0 &&
		len(d.Top) == 0
}

func compareViews(held, fresh *soakView, heldPF, freshPF uint64) *soakDiff {
	d := &soakDiff{Peers: len(fresh.peers)}
	for id, hf := range held.peers {
		ff, ok := fresh.peers[id]
		if !ok {
			d.Stale = append(d.Stale, id)
			continue
		}
		for s := 0; s < nPF; s++ {
			if hf[s] == ff[s] {
				continue
			}
			if s == pfOnline {
				d.Online++
				continue
			}
			if d.Fields == nil {
				d.Fields, d.FieldPeers = map[string]int{}, map[string][]int64{}
			}
			d.Fields[pfNames[s]]++
			if len(d.FieldPeers[pfNames[s]]) < 5 {
				d.FieldPeers[pfNames[s]] = append(d.FieldPeers[pfNames[s]], id)
			}
		}
	}
	for id := range fresh.peers {
		if _, ok := held.peers[id]; !ok {
			d.Missing = append(d.Missing, id)
		}
	}
	for s := 0; s < nPF; s++ {
		switch {
		case held.self[s] == fresh.self[s] || s == pfOnline:
		case s == pfEndpoints || s == pfHostinfo || s == pfDERP || s == pfDisco:
			// what the node reported itself: the server does not echo it back
			d.SelfReported = append(d.SelfReported, "Node."+pfNames[s])
		default:
			d.Top = append(d.Top, "Node."+pfNames[s])
		}
	}
	for _, c := range []struct {
		name string
		a, b uint64
	}{{"PacketFilter", heldPF, freshPF}, {"DNSConfig", uint64(held.dns), uint64(fresh.dns)},
		{"DERPMap", uint64(held.derp), uint64(fresh.derp)},
		{"Domain", uint64(held.domain), uint64(fresh.domain)},
		{"SSHPolicy", uint64(held.ssh), uint64(fresh.ssh)}} {
		if c.a != c.b {
			d.Top = append(d.Top, c.name)
		}
	}
	sort.Slice(d.Stale, func(i, j int) bool { return d.Stale[i] < d.Stale[j] })
	sort.Slice(d.Missing, func(i, j int) bool { return d.Missing[i] < d.Missing[j] })
	return d
}

// freshMap asks the server once more for this node's full map (not streaming) and reads it.
// The request carries no Hostinfo and no endpoints, so that it changes nothing.
func (n *node) freshMap(ctx context.Context) (*soakView, uint64, error) {
	req := &tailcfg.MapRequest{
		Version:  tailcfg.CurrentCapabilityVersion,
		NodeKey:  n.nkey.Public(),
		DiscoKey: n.disco,
		Compress: "zstd",
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, 0, err
	}
	u := strings.Replace(strings.TrimRight(n.url, "/")+"/machine/map", "http:", "https:", 1)
	hreq, err := http.NewRequestWithContext(ctx, "POST", u, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	ts2021.AddLBHeader(hreq, n.nkey.Public())
	res, err := n.d.DoNoiseRequest(hreq)
	if err != nil {
		return nil, 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return nil, 0, fmt.Errorf("map: http %d: %s", res.StatusCode, strings.TrimSpace(string(msg)))
	}
	var siz [4]byte
	if _, err := io.ReadFull(res.Body, siz[:]); err != nil {
		return nil, 0, err
	}
	size := binary.LittleEndian.Uint32(siz[:])
	if size > 64<<20 {
		return nil, 0, fmt.Errorf("map message of %d bytes", size)
	}
	z := make([]byte, size)
	if _, err := io.ReadFull(res.Body, z); err != nil {
		return nil, 0, err
	}
	js, err := zstdframe.AppendDecode(nil, z)
	if err != nil {
		return nil, 0, err
	}
	var v soakView
	var pf filterTrack
	v.apply(js, &pf)
	if v.selfID == 0 {
		return nil, 0, fmt.Errorf("the answer is not a full map (%d bytes)", len(js))
	}
	return &v, pf.hash.Load(), nil
}

// compareNode: the node's followed view against a fresh full map.
func (n *node) compareNode() *soakDiff {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fresh, freshPF, err := n.freshMap(ctx)
	n.soakMu.Lock()
	defer n.soakMu.Unlock()
	var d *soakDiff
	if err != nil {
		d = &soakDiff{Error: err.Error()}
	} else {
		d = compareViews(&n.soak, fresh, n.pf.hash.Load(), freshPF)
	}
	d.Idx, d.ID, d.Hostname = n.idx, n.id.Load(), n.hostname
	return d
}

// ---------------------------------------------------------------------------------------------
// the run

type soakSample struct {
	T         float64 `json:"t_s"` // from the soak's start
	RSSKiB    int64   `json:"server_rss_kib"`
	CPUS      float64 `json:"server_cpu_s"` // cumulative, the server process's
	Threads   int64   `json:"server_threads"`
	Load1     float64 `json:"loadavg_1m"`
	Live      int     `json:"live_nodes"`
	Nodes     int     `json:"registered_nodes"` // logged in and not deleted: the server's nodes
	LoadRSS   int64   `json:"loadgen_rss_kib"`
	LoadCPUS  float64 `json:"loadgen_cpu_s"`
	Messages  int64   `json:"messages"` // non-keep-alive messages read by all nodes so far
	Reconnect int64   `json:"reconnects"`
}

type soakResult struct {
	DurationS     float64        `json:"duration_s"`
	Samples       []soakSample   `json:"samples"`
	Joined        int            `json:"joined"`
	JoinFailed    int            `json:"join_failed"`
	Left          map[string]int `json:"left"` // by how: deleted, logged out, disconnected
	LeaveErrors   map[string]int `json:"leave_errors"`
	EndpointMoves int            `json:"endpoint_changes"`
	EndpointErrs  map[string]int `json:"endpoint_errors"`
	Policies      []string       `json:"policies"` // in order: the name set, and its answer
	PolicyErrors  int            `json:"policy_errors"`
	QuietS        float64        `json:"quiet_wait_s"` // end of churn → no map traffic for -soak-quiet
	Compared      int            `json:"compared"`
	Equal         int            `json:"equal"`
	EqualRecheck  int            `json:"equal_on_recheck"` // differed, equal when asked again
	Differ        int            `json:"differ"`           // still differing on the recheck
	Errors        int            `json:"compare_errors"`
	FieldCounts   map[string]int `json:"differing_fields"` // over the nodes that still differ
	OnlineDiffer  int            `json:"online_differs_nodes"`
	SelfReported  int            `json:"self_reported_differs_nodes"`
	Examples      []*soakDiff    `json:"examples,omitempty"` // the first 10 still differing
	Oddities      map[string]int `json:"oddities"`           // summed over the nodes
	PeersMean     float64        `json:"peers_mean"`
	FullMaps      int64          `json:"full_maps"`
	Deltas        int64          `json:"deltas"`
	CompareS      float64        `json:"compare_s"`
	Error         string         `json:"error,omitempty"`
}

var soakNextIdx, soakDeleted atomic.Int64

// soakLeave takes one node out for good, the way chosen by turn.
func soakLeave(n *node, turn int, sr *soakResult, mu *sync.Mutex) {
	how := [...]string{"deleted", "logged out", "disconnected"}[turn%3]
	n.deleted.Store(true)
	var err error
	switch turn % 3 {
	case 0:
		cmd := strings.ReplaceAll(*flagDeleteCmd, "{id}", strconv.FormatInt(n.id.Load(), 10))
		out, e := exec.Command("/bin/sh", "-c", cmd).CombinedOutput()
		if e != nil {
			err = fmt.Errorf("delete: %v: %s", e, strings.TrimSpace(string(out)))
		} else {
			soakDeleted.Add(1)
		}
	case 1:
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = n.d.TryLogout(ctx)
		cancel()
	}
	n.cancel()
	n.d.Close()
	mu.Lock()
	defer mu.Unlock()
	sr.Left[how]++
	if err != nil {
		sr.LeaveErrors[trim160(err.Error())]++
	}
}

func trim160(s string) string {
	if len(s) > 160 {
		return s[:160]
	}
	return s
}

func soakJoin(sr *soakResult, mu *sync.Mutex) {
	idx := int(soakNextIdx.Add(1) - 1)
	j := newNode(idx, fmt.Sprintf("soak-%05d", idx))
	nodesMu.Lock()
	allNodes = append(allNodes, j)
	nodesMu.Unlock()
	done := make(chan bool, 1)
	go j.run(func(ok bool) { done <- ok })
	ok := <-done
	mu.Lock()
	defer mu.Unlock()
	if ok {
		sr.Joined++
	} else {
		sr.JoinFailed++
	}
}

func soakMoveEndpoint(n *node, k int, sr *soakResult, mu *sync.Mutex) {
	ep := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 19, byte(n.idx >> 8), byte(n.idx)}),
		uint16(20000+k%40000))
	n.setEndpoint(ep)
	// the lite update carries the Direct's Hostinfo with its own NetInfo: the node's, so
	// that only the endpoint changes (as the node's stream requests send it)
	n.d.SetNetInfo(n.hi.NetInfo)
	n.d.SetEndpoints([]tailcfg.Endpoint{{Addr: ep, Type: tailcfg.EndpointLocal}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err := n.d.SendUpdate(ctx)
	cancel()
	mu.Lock()
	defer mu.Unlock()
	sr.EndpointMoves++
	if err != nil && !n.deleted.Load() {
		sr.EndpointErrs[trim160(err.Error())]++
	}
}

func loadavg1() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func (sr *soakResult) sample(start time.Time) {
	s := sampleProc(*flagServerPID)
	rss, _ := selfRSS()
	var msgs, rc, reg int64
	for _, n := range nodesSnapshot() {
		msgs += n.msgs.Load() - n.keepalive.Load()
		rc += n.reconnects.Load()
		if n.tLogin.Load() != 0 {
			reg++
		}
	}
	sr.Samples = append(sr.Samples, soakSample{T: time.Since(start).Seconds(), RSSKiB: s.RSSKiB,
		CPUS: s.CPU, Threads: s.Threads, Load1: loadavg1(), Live: len(liveNodes()), Nodes: int(reg - soakDeleted.Load()), LoadRSS: rss,
		LoadCPUS: selfCPU(), Messages: msgs, Reconnect: rc})
}

// pickLive: a random live node that has a map, or nil.
func pickLive() *node {
	live := liveNodes()
	if len(live) == 0 {
		return nil
	}
	return live[rand.IntN(len(live))]
}

func runSoak() *soakResult {
	sr := &soakResult{Left: map[string]int{}, LeaveErrors: map[string]int{},
		EndpointErrs: map[string]int{}, FieldCounts: map[string]int{}, Oddities: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	soakNextIdx.Store(int64(len(nodesSnapshot())))
	start := time.Now()
	end := start.Add(*flagSoak)
	every := func(perMin float64) time.Duration {
		if perMin <= 0 {
			return 0
		}
		return time.Duration(float64(time.Minute) / perMin)
	}
	churnEvery, epEvery := every(*flagSoakChurn), every(*flagSoakEndpoints)
	nextChurn, nextEP := start.Add(churnEvery), start.Add(epEvery/2)
	nextSample := start
	nextPolicy := start.Add(*flagSoakPolicyEvery)
	turn, moves, policyTurn := 0, 0, 0
	log.Printf("soak: %v, churn every %v, endpoint change every %v, policy every %v",
		*flagSoak, churnEvery, epEvery, *flagSoakPolicyEvery)
	for now := time.Now(); now.Before(end); now = time.Now() {
		if !now.Before(nextSample) {
			sr.sample(start)
			s := sr.Samples[len(sr.Samples)-1]
			log.Printf("soak: %.0fs live %d server rss %d KiB cpu %.1fs load %.2f",
				s.T, s.Live, s.RSSKiB, s.CPUS, s.Load1)
			nextSample = nextSample.Add(10 * time.Second)
		}
		if churnEvery > 0 && !now.Before(nextChurn) {
			if v := pickLive(); v != nil {
				wg.Add(2)
				go func(t int) { defer wg.Done(); soakLeave(v, t, sr, &mu) }(turn)
				go func() { defer wg.Done(); soakJoin(sr, &mu) }()
				turn++
			}
			nextChurn = nextChurn.Add(churnEvery)
		}
		if epEvery > 0 && !now.Before(nextEP) {
			if v := pickLive(); v != nil {
				wg.Add(1)
				go func(k int) { defer wg.Done(); soakMoveEndpoint(v, k, sr, &mu) }(moves)
				moves++
			}
			nextEP = nextEP.Add(epEvery)
		}
		if *flagSoakPolicyEvery > 0 && !now.Before(nextPolicy) {
			name := [...]string{"new", "initial"}[policyTurn%2]
			policyTurn++
			reply, err := askPolicyNamed(name)
			if err != nil {
				sr.PolicyErrors++
				reply = err.Error()
			}
			sr.Policies = append(sr.Policies, fmt.Sprintf("%.0fs %s: %s",
				time.Since(start).Seconds(), name, reply))
			log.Printf("soak: policy %s: %s", name, reply)
			nextPolicy = nextPolicy.Add(*flagSoakPolicyEvery)
		}
		time.Sleep(100 * time.Millisecond)
	}
	sr.sample(start)
	sr.DurationS = time.Since(start).Seconds()
	waitOrTimeout(&wg, 2*time.Minute)
	sr.QuietS, _ = drainQuiet(*flagSoakQuiet, 5*time.Minute)
	log.Printf("soak: churn over after %.0fs, quiet after %.1fs more; comparing", sr.DurationS, sr.QuietS)
	sr.compareAll()
	return sr
}

func waitOrTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		log.Printf("soak: churn actions still running after %v", d)
	}
}

// compareAll compares every live node (a few at a time); nodes that differ are asked again
// after another quiet spell, to tell a change still on its way from a lasting difference.
func (sr *soakResult) compareAll() {
	t0 := time.Now()
	live := liveNodes()
	diffs := compareMany(live)
	var again []*node
	byIdx := map[int]*node{}
	for _, n := range live {
		byIdx[n.idx] = n
	}
	var peers int
	for _, d := range diffs {
		sr.Compared++
		peers += d.Peers
		if d.equal() {
			sr.Equal++
		} else {
			again = append(again, byIdx[d.Idx])
		}
		if d.Online > 0 {
			sr.OnlineDiffer++
		}
		if len(d.SelfReported) > 0 {
			sr.SelfReported++
		}
	}
	if len(again) > 0 {
		log.Printf("soak: %d nodes differ; asking them again after a quiet spell", len(again))
		drainQuiet(*flagSoakQuiet, time.Minute)
		for _, d := range compareMany(again) {
			switch {
			case d.equal():
				sr.EqualRecheck++
			case d.Error != "":
				sr.Errors++
			default:
				sr.Differ++
			}
			if !d.equal() {
				for f, c := range d.Fields {
					sr.FieldCounts[f] += c
				}
				for _, t := range d.Top {
					sr.FieldCounts[t]++
				}
				if len(d.Stale) > 0 {
					sr.FieldCounts["stale peers"] += len(d.Stale)
				}
				if len(d.Missing) > 0 {
					sr.FieldCounts["missing peers"] += len(d.Missing)
				}
				if len(sr.Examples) < 10 {
					if len(d.Stale) > 20 {
						d.Stale = d.Stale[:20]
					}
					if len(d.Missing) > 20 {
						d.Missing = d.Missing[:20]
					}
					sr.Examples = append(sr.Examples, d)
				}
			}
		}
	}
	for _, n := range live {
		n.soakMu.Lock()
		for k, c := range n.soak.odd {
			sr.Oddities[k] += c
		}
		sr.FullMaps += n.soak.fullMaps
		sr.Deltas += n.soak.deltas
		n.soakMu.Unlock()
	}
	if sr.Compared > 0 {
		sr.PeersMean = float64(peers) / float64(sr.Compared)
	}
	sr.CompareS = time.Since(t0).Seconds()
	log.Printf("soak: compared %d nodes: %d equal, %d equal on the recheck, %d differ, %d errors; fields %v",
		sr.Compared, sr.Equal, sr.EqualRecheck, sr.Differ, sr.Errors, sr.FieldCounts)
}

func compareMany(nodes []*node) []*soakDiff {
	out := make([]*soakDiff, len(nodes))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			out[i] = n.compareNode()
			<-sem
		}()
	}
	wg.Wait()
	return out
}

// askPolicyNamed has the driver set one of its policies: "POLICY <name>", answered
// "SET <t0 ns> <answered ns> <http status>" or "FAIL <why>".
func askPolicyNamed(name string) (string, error) {
	driverSay("POLICY " + name)
	line, err := stdinLines.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("no answer from the driver: %w", err)
	}
	line = strings.TrimSpace(line)
	f := strings.Fields(line)
	if len(f) == 4 && f[0] == "SET" && f[3] == "200" {
		t0, _ := strconv.ParseInt(f[1], 10, 64)
		t1, _ := strconv.ParseInt(f[2], 10, 64)
		return fmt.Sprintf("PUT answered 200 in %.1f ms", float64(t1-t0)/1e6), nil
	}
	return "", fmt.Errorf("driver: %s", line)
}
