// The policy scenario (-policy): with every node idle, the driver sets a new ACL policy
// (PUT /api/v1/policy) and each node's stream is watched for the first MapResponse that
// leaves it with a PacketFilter different from the one it held before.
//
// A node's filter is followed the way the client's mapSession follows it: PacketFilter
// replaces the chunk named "base", PacketFilters sets named chunks (null deletes one, "*": null
// drops them all), and the filter in force is the chunks in name order. Messages are not
// decoded for this: the two fields are found by a byte search at the top level of the message
// and hashed (whitespace outside strings left out), so a 5,000-node full map costs one scan.
package main

import (
	"bytes"
	"fmt"
	"log"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// filterTrack is one node's packet filter in force. Only the node's stream goroutine (one at a
// time) calls update; hash is read by the scenario.
type filterTrack struct {
	named map[string]uint64 // chunk name → hash of its JSON
	hash  atomic.Uint64     // of the filter in force; 0 before any message carried one
}

var (
	tagPacketFilter  = []byte(`"PacketFilter"`)
	tagPacketFilters = []byte(`"PacketFilters"`)
	tagPeersRemoved  = []byte(`"PeersRemoved"`)
)

const fnvOffset, fnvPrime = 14695981039346656037, 1099511628211

// hashJSON: FNV-1a of a JSON text without the whitespace outside its strings.
func hashJSON(b []byte) uint64 {
	h := uint64(fnvOffset)
	in, esc := false, false
	for _, c := range b {
		if in {
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				in = false
			}
		} else if c == ' ' || c == '\n' || c == '\r' || c == '\t' {
			continue
		} else if c == '"' {
			in = true
		}
		h = (h ^ uint64(c)) * fnvPrime
	}
	return h
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// valueEnd returns the index just past the JSON value starting at b[i] (-1 if cut short).
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		for j := i + 1; j < len(b); j++ {
			switch b[j] {
			case '\\':
				j++
			case '"':
				return j + 1
			}
		}
		return -1
	case '[', '{':
		depth, in := 0, false
		for j := i; j < len(b); j++ {
			c := b[j]
			if in {
				if c == '\\' {
					j++
				} else if c == '"' {
					in = false
				}
				continue
			}
			switch c {
			case '"':
				in = true
			case '[', '{':
				depth++
			case ']', '}':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default:
		j := i
		for ; j < len(b); j++ {
			switch b[j] {
			case ',', '}', ']', ' ', '\n', '\r', '\t':
				return j
			}
		}
		return j
	}
}

// tailScan: the fields looked for follow the peers in both servers' full maps (headscale
// writes tailcfg.MapResponse in field order; ours puts the policy after the peers), so a big
// message's tail is searched first.
const tailScan = 256 << 10

// fieldValue finds `"Name":` (the name as a quoted tag) and returns its raw value. The servers
// write these names only as keys of the MapResponse itself (a JSON string can hold the text
// only with its quotes escaped).
func fieldValue(js, tag []byte) ([]byte, bool) {
	i := -1
	if len(js) > 2*tailScan {
		if j := bytes.Index(js[len(js)-tailScan:], tag); j >= 0 {
			i = len(js) - tailScan + j
		}
	}
	if i < 0 {
		i = bytes.Index(js, tag)
	}
	if i < 0 {
		return nil, false
	}
	i = skipWS(js, i+len(tag))
	if i >= len(js) || js[i] != ':' {
		return nil, false
	}
	i = skipWS(js, i+1)
	e := valueEnd(js, i)
	if e < 0 {
		return nil, false
	}
	return js[i:e], true
}

func isNull(v []byte) bool { return len(v) == 0 || bytes.Equal(v, []byte("null")) }

// objectEach calls fn for each member of a JSON object (raw key with its quotes, raw value).
func objectEach(v []byte, fn func(k, val []byte)) {
	i := skipWS(v, 0)
	if i >= len(v) || v[i] != '{' {
		return
	}
	i++
	for {
		i = skipWS(v, i)
		if i >= len(v) || v[i] == '}' {
			return
		}
		ke := valueEnd(v, i)
		if ke < 0 {
			return
		}
		k := v[i:ke]
		i = skipWS(v, ke)
		if i >= len(v) || v[i] != ':' {
			return
		}
		i = skipWS(v, i+1)
		ve := valueEnd(v, i)
		if ve < 0 {
			return
		}
		fn(k, v[i:ve])
		i = skipWS(v, ve)
		if i < len(v) && v[i] == ',' {
			i++
		}
	}
}

// update applies a message; it reports whether the message carried a filter, and the bytes
// of JSON the filter took in it.
func (f *filterTrack) update(js []byte) (bool, int) {
	carried, size := false, 0
	if v, ok := fieldValue(js, tagPacketFilter); ok && !isNull(v) {
		if f.named == nil {
			f.named = map[string]uint64{}
		}
		f.named["base"] = hashJSON(v)
		carried, size = true, len(v)
	}
	if v, ok := fieldValue(js, tagPacketFilters); ok && !isNull(v) {
		carried, size = true, size+len(v)
		if f.named == nil {
			f.named = map[string]uint64{}
		}
		objectEach(v, func(k, val []byte) {
			if string(k) == `"*"` && isNull(val) {
				clear(f.named)
			}
		})
		objectEach(v, func(k, val []byte) {
			name, err := strconv.Unquote(string(k))
			if err != nil || name == "*" {
				return
			}
			if isNull(val) {
				delete(f.named, name)
			} else {
				f.named[name] = hashJSON(val)
			}
		})
	}
	if carried {
		keys := make([]string, 0, len(f.named))
		for k := range f.named {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		h := uint64(fnvOffset)
		for _, k := range keys {
			for _, c := range []byte(k) {
				h = (h ^ uint64(c)) * fnvPrime
			}
			v := f.named[k]
			for s := 0; s < 64; s += 8 {
				h = (h ^ (v >> s & 0xff)) * fnvPrime
			}
			h = (h ^ 0xff) * fnvPrime
		}
		if h == 0 {
			h = 1
		}
		f.hash.Store(h)
	}
	return carried, size
}

// countArray: the elements of a flat JSON array of numbers.
func countArray(v []byte) int64 {
	i := skipWS(v, 0)
	if i >= len(v) || v[i] != '[' {
		return 0
	}
	if j := skipWS(v, i+1); j < len(v) && v[j] == ']' {
		return 0
	}
	return int64(bytes.Count(v, []byte(","))) + 1
}

// policyArmed: the scenario is waiting for the new filters (set before the driver's PUT).
var policyArmed atomic.Bool

// trackPolicy runs for every non-keep-alive message of a node when -policy is on.
func (n *node) trackPolicy(js []byte, now int64, peers int64) {
	prev := n.pf.hash.Load()
	carried, size := n.pf.update(js)
	if !policyArmed.Load() {
		return
	}
	if peers >= 0 {
		n.pfFull.Add(1)
		n.pfFullPeer.Store(peers)
	}
	if v, ok := fieldValue(js, tagPeersRemoved); ok {
		n.pfRemoved.Add(countArray(v))
	}
	if !carried {
		return
	}
	n.pfMsgs.Add(1)
	h := n.pf.hash.Load()
	if h != n.pfBefore.Load() && n.pfFirst.CompareAndSwap(0, now) {
		n.pfSize.Store(int64(size))
		n.pfMsgSize.Store(int64(len(js)))
	}
	if h != prev {
		n.pfLast.Store(now)
	}
}

type missingNode struct {
	Idx        int    `json:"idx"`
	ID         int64  `json:"node_id"`
	Hostname   string `json:"hostname"`
	FilterMsgs int64  `json:"filter_messages"`
	LastMsgMS  int64  `json:"last_message_ms"` // T0 → its last non-keep-alive message (negative: before T0)
	Reconnects int64  `json:"reconnects"`
	LastErr    string `json:"last_stream_error,omitempty"`
}

// policyResult: the policy set by the driver with every node idle. Times are from T0, the
// driver's clock just before it sent the PUT.
type policyResult struct {
	Nodes          int           `json:"nodes"`   // live nodes when the policy was set
	Changed        int           `json:"changed"` // ... whose filter changed within -policy-timeout
	TimeoutS       float64       `json:"timeout_s"`
	T0NS           int64         `json:"t0_ns"`
	APIMS          float64       `json:"api_ms"` // the PUT's own latency (driver: request → body read)
	APIStatus      int           `json:"api_status"`
	LatMS          []float64     `json:"latency_ms"`     // per node, sorted: T0 → first message leaving it a filter different from before
	LastMS         []float64     `json:"last_change_ms"` // per node, sorted: T0 → last message that changed its filter
	P50MS          float64       `json:"p50_ms"`
	P99MS          float64       `json:"p99_ms"`
	MaxMS          float64       `json:"max_ms"`
	AllS           float64       `json:"all_s"`       // T0 → the last node's new filter (-1: not all)
	ConvergedS     float64       `json:"converged_s"` // T0 → last map message any node read
	DrainS         float64       `json:"drain_s"`
	WindowS        float64       `json:"window_s"`                // CPU window: just before the PUT → no map message for 2 s
	ServerCPUS     float64       `json:"server_cpu_s"`            // in the window
	ServerCPUNetS  float64       `json:"server_cpu_minus_idle_s"` // minus the steady-state idle rate
	ServerCPUToAll float64       `json:"server_cpu_to_all_s"`     // just before the PUT → the last node's new filter
	ServerRSSKiB   int64         `json:"server_rss_kib"`
	ServerHWMKiB   int64         `json:"server_hwm_kib"`
	ServerWChar    int64         `json:"server_wchar_bytes"`
	LoadCPUS       float64       `json:"loadgen_cpu_s"`
	MapBytesPerRx  float64       `json:"map_bytes_per_node"`
	FilterJSON     []float64     `json:"filter_json_bytes"`  // per node, sorted: its new filter's JSON in the message that brought it
	MessageJSON    []float64     `json:"message_json_bytes"` // per node, sorted: that message's JSON (zstd-decoded)
	WireRxPerNode  float64       `json:"wire_rx_bytes_per_node"`
	FilterMsgsMean float64       `json:"filter_messages_mean"` // messages carrying a filter, per node
	FilterMsgsMax  int64         `json:"filter_messages_max"`
	Unchanged      int           `json:"unchanged"`    // nodes whose filter at the end is the one from before
	MultiChange    int           `json:"multi_change"` // nodes whose filter changed again after the first change
	FullMaps       int           `json:"full_maps"`    // nodes that got a full map (Peers) in the window
	PeersBefore    int           `json:"peers_before"` // every other live node (the initial policy allows all)
	PeersAfter     []float64     `json:"peers_after"`  // per node, sorted: its last full map's peers, else before − PeersRemoved
	RemovedMean    float64       `json:"peers_removed_mean"`
	Reconnects     int64         `json:"reconnects"`
	Missing        []missingNode `json:"missing,omitempty"` // the first 20 nodes that never got a new filter
	Error          string        `json:"error,omitempty"`
}

// askPolicy has the driver set the new policy: "SET <t0 ns> <done ns> <http status>".
func askPolicy() (t0, done int64, status int, err error) {
	driverSay("POLICY")
	line, err := stdinLines.ReadString('\n')
	if err != nil {
		return 0, 0, 0, fmt.Errorf("no answer from the driver: %w", err)
	}
	f := strings.Fields(line)
	if len(f) == 4 && f[0] == "SET" {
		t0, _ = strconv.ParseInt(f[1], 10, 64)
		done, _ = strconv.ParseInt(f[2], 10, 64)
		status, _ = strconv.Atoi(f[3])
		if t0 > 0 && done >= t0 {
			return t0, done, status, nil
		}
	}
	return 0, 0, 0, fmt.Errorf("driver: %s", strings.TrimSpace(line))
}

func runPolicy(idleRate float64) (*policyResult, phase) {
	pr := &policyResult{AllS: -1, TimeoutS: flagPolicyTO.Seconds()}
	live := liveNodes()
	pr.Nodes = len(live)
	pr.PeersBefore = len(live) - 1
	mb0 := make([]int64, len(live))
	rx0 := make([]int64, len(live))
	rc0 := make([]int64, len(live))
	for i, n := range live {
		n.pfBefore.Store(n.pf.hash.Load())
		n.pfFirst.Store(0)
		n.pfLast.Store(0)
		n.pfMsgs.Store(0)
		n.pfRemoved.Store(0)
		n.pfFull.Store(0)
		n.pfFullPeer.Store(0)
		n.pfSize.Store(0)
		n.pfMsgSize.Store(0)
		mb0[i], rx0[i], rc0[i] = n.mapBytes.Load(), n.wireRx.Load(), n.reconnects.Load()
	}
	srv0 := sampleProc(*flagServerPID)
	load0 := selfCPU()
	start := time.Now()
	policyArmed.Store(true)
	defer policyArmed.Store(false)
	t0, done, status, err := askPolicy()
	if err != nil {
		pr.Error = err.Error()
		log.Printf("policy: %v", err)
		return pr, phase{Name: "policy"}
	}
	pr.T0NS, pr.APIStatus = t0, status
	pr.APIMS = float64(done-t0) / 1e6
	log.Printf("policy: PUT /api/v1/policy answered %d after %.1f ms", status, pr.APIMS)
	deadline := time.Unix(0, t0).Add(*flagPolicyTO)
	var srvAll procSample
	nextLog := time.Now().Add(5 * time.Second)
	for {
		got := 0
		for _, n := range live {
			if n.pfFirst.Load() != 0 {
				got++
			}
		}
		if got == len(live) {
			srvAll = sampleProc(*flagServerPID)
			break
		}
		if time.Now().After(deadline) {
			break
		}
		if time.Now().After(nextLog) {
			log.Printf("policy: %d/%d nodes have their new filter after %.1fs", got, len(live),
				float64(time.Now().UnixNano()-t0)/1e9)
			nextLog = time.Now().Add(5 * time.Second)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Then until no node has read a map message for 2 s, within what is left of the timeout
	// (a server still busy at the deadline is measured up to it, not waited for again).
	var lastMsg int64
	pr.DrainS, lastMsg = drain(max(5*time.Second, time.Until(deadline)))
	srv1 := sampleProc(*flagServerPID)
	load1 := selfCPU()
	pr.WindowS = time.Since(start).Seconds()
	pr.ServerCPUS = srv1.CPU - srv0.CPU
	pr.ServerCPUNetS = max(0, pr.ServerCPUS-idleRate*pr.WindowS)
	if srvAll.ReadOK {
		pr.ServerCPUToAll = srvAll.CPU - srv0.CPU
	}
	pr.ServerRSSKiB, pr.ServerHWMKiB = srv1.RSSKiB, srv1.HWMKiB
	pr.ServerWChar = srv1.WChar - srv0.WChar
	pr.LoadCPUS = load1 - load0
	if lastMsg > t0 {
		pr.ConvergedS = float64(lastMsg-t0) / 1e9
	}
	var mb, rx, msgs, removed, lastFirst int64
	for i, n := range live {
		mb += n.mapBytes.Load() - mb0[i]
		rx += n.wireRx.Load() - rx0[i]
		pr.Reconnects += n.reconnects.Load() - rc0[i]
		fm := n.pfMsgs.Load()
		msgs += fm
		pr.FilterMsgsMax = max(pr.FilterMsgsMax, fm)
		removed += n.pfRemoved.Load()
		if n.pf.hash.Load() == n.pfBefore.Load() {
			pr.Unchanged++
		}
		after := float64(pr.PeersBefore - int(n.pfRemoved.Load()))
		if n.pfFull.Load() > 0 {
			pr.FullMaps++
			after = float64(n.pfFullPeer.Load())
		}
		pr.PeersAfter = append(pr.PeersAfter, after)
		f := n.pfFirst.Load()
		if f != 0 && f <= deadline.UnixNano() {
			pr.Changed++
			pr.LatMS = append(pr.LatMS, float64(f-t0)/1e6)
			pr.FilterJSON = append(pr.FilterJSON, float64(n.pfSize.Load()))
			pr.MessageJSON = append(pr.MessageJSON, float64(n.pfMsgSize.Load()))
			lastFirst = max(lastFirst, f)
			if l := n.pfLast.Load(); l != 0 {
				pr.LastMS = append(pr.LastMS, float64(l-t0)/1e6)
				if l > f {
					pr.MultiChange++
				}
			}
		} else if len(pr.Missing) < 20 {
			var age int64
			if lm := n.lastMsgAt.Load(); lm != 0 {
				age = (lm - t0) / 1e6
			}
			pr.Missing = append(pr.Missing, missingNode{Idx: n.idx, ID: n.id.Load(),
				Hostname: n.hostname, FilterMsgs: fm, LastMsgMS: age,
				Reconnects: n.reconnects.Load() - rc0[i], LastErr: strOf(&n.lastErr)})
		}
	}
	for _, v := range [][]float64{pr.LatMS, pr.LastMS, pr.PeersAfter, pr.FilterJSON, pr.MessageJSON} {
		sort.Float64s(v)
	}
	if pr.Changed == pr.Nodes && lastFirst != 0 {
		pr.AllS = float64(lastFirst-t0) / 1e9
	}
	pr.P50MS, pr.P99MS, pr.MaxMS = pct(pr.LatMS, 0.5), pct(pr.LatMS, 0.99), pct(pr.LatMS, 1)
	if len(live) > 0 {
		k := float64(len(live))
		pr.MapBytesPerRx, pr.WireRxPerNode = float64(mb)/k, float64(rx)/k
		pr.FilterMsgsMean, pr.RemovedMean = float64(msgs)/k, float64(removed)/k
	}
	ph := snapshotPhase("policy", srv0, load0, start)
	log.Printf("policy: %d/%d nodes got a new filter (all in %.3fs) p50=%.1fms p99=%.1fms max=%.1fms; server cpu %.2fs (to all %.2fs, window %.1fs); %d unchanged, %d changed again, %d full maps; bytes/node %.0f",
		pr.Changed, pr.Nodes, pr.AllS, pr.P50MS, pr.P99MS, pr.MaxMS, pr.ServerCPUS, pr.ServerCPUToAll,
		pr.WindowS, pr.Unchanged, pr.MultiChange, pr.FullMaps, pr.MapBytesPerRx)
	return pr, ph
}
