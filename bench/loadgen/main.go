// loadgen: N simulated Tailscale nodes against one control server, over the real ts2021
// protocol, using Tailscale's own control client (tailscale.com/control/controlclient.Direct)
// for /key, the Noise handshake, HTTP/2, /machine/register (pre-auth key) and lite map
// updates (endpoint changes). Each node then holds a streaming /machine/map poll on its Noise
// connection exactly as a real client sends it (Stream, KeepAlive, Compress:"zstd", its
// Hostinfo, endpoints and disco key), and reads the framed zstd MapResponses.
//
// What differs from a full tailscaled: the streaming responses are not fed into the library's
// mapSession (which keeps a full tailcfg.Node per peer per node: ~N² nodes in one process,
// tens of GiB at 5,000 nodes). Each message is zstd-decoded and JSON-scanned into a minimal
// struct instead (Node.ID, peer IDs / keys / endpoints, PeersRemoved, PeersChangedPatch), so
// per-node memory is a Noise+HTTP/2 connection and a few counters. The JSON scan still reads
// every byte the server sends, so the loadgen pays the full decode cost of what it receives.
//
// Scenarios, in order, in one run (all times are wall clock of this process):
//
//	storm     all N nodes log in (at most -concurrency in flight) and get their first map
//	steady    N idle streams for -steady seconds
//	endpoint  -ep-changes times: one node sends a lite update with a new endpoint; every other
//	          node's observation time (the peer's new endpoint in Peers/PeersChanged/Patch)
//	join      one new node logs in; every other node's observation time (its node key shows up)
//	delete    one node is deleted with -delete-cmd ({id} → node ID); observation time
//	          (PeersRemoved, or a full Peers list without it)
//	policy    (-policy) with every node idle, the driver sets a new ACL policy; per node the
//	          time until a message left it with a PacketFilter different from the one it held
//	          before (policy.go), server CPU over the change, bytes, peers removed
//	soak      (-soak D) for D, nodes leave and join, move and the driver switches policies;
//	          then every node's followed map is compared with a fresh full map (soak.go)
//	restart   (-restart) with every node idle, the driver stops the server (SIGTERM) and starts
//	          it again on the same config and database; per node: when its stream broke, how
//	          many attempts it made and when its first full map from the new server arrived
//
// Streams that break are reopened on Tailscale's own backoff schedule, as controlclient.Auto's
// mapRoutine does it (util/backoff, 30 s cap, reset whenever a map arrived): n²·10 ms × 0.5–1.5
// before attempt n+1, so 10 ms, 40 ms, 90 ms, … (3.9 s in total after ten failed attempts).
//
// With -driver, the loadgen talks to its driver (bench/lib/bench.py) over stdout/stdin (the
// result then goes to -out): "POLL start" / "POLL stop" frame the connect storm and the
// restart's reconnect storm, during which the driver polls GET /api/v1/node from its own process
// (a poller in here would wait behind thousands of busy goroutines and time the loadgen, not
// the server); the windows to cut its samples to are in the result. For the restart it prints
// "RESTART" and waits for "UP <pid> <sigterm ns> <exit ns> <health ns>" (unix ns, the new
// server's PID) or "FAIL <reason>". For the policy change it prints "POLICY" and waits for
// "SET <t0 ns> <answered ns> <http status>" (T0: just before the driver's PUT) or "FAIL <reason>".
// For the replica kill (kill.go) it prints "KILL <replica> <node id> <new name>" and waits for
// "KILLED <kill ns> <renamed ns>" or "FAIL <reason>".
//
// With -authkeys-file, node i logs in with line i of the file (the driver gives the policy
// scenario's users and tags one key each), else every node with -authkey.
//
// Server figures come from /proc/<-server-pid>; the loadgen's own CPU from getrusage and its
// RSS from /proc/self/status. Per-recipient bytes: the map frames a node received during an
// event's window (4-byte length + zstd body, keep-alives excluded) and the TCP bytes its
// socket read (Noise records + HTTP/2 frames included). The result is one JSON document.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"tailscale.com/control/controlclient"
	"tailscale.com/control/ts2021"
	"tailscale.com/net/netmon"
	"tailscale.com/net/tsdial"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
	"tailscale.com/types/persist"
	"tailscale.com/util/backoff"
	"tailscale.com/util/eventbus"
	"tailscale.com/util/zstdframe"
)

var (
	flagURL         = flag.String("url", "", "control server URL, e.g. http://127.0.0.1:8080; a comma-separated list spreads the nodes (node i uses URL i modulo the count)")
	flagAuthKey     = flag.String("authkey", "", "reusable pre-auth key")
	flagNodes       = flag.Int("nodes", 10, "number of nodes in the connect storm")
	flagConc        = flag.Int("concurrency", 100, "logins in flight at once during the storm (a slot is held until the node's first map)")
	flagServerPID   = flag.Int("server-pid", 0, "PID of the server process (for /proc figures)")
	flagSteady      = flag.Float64("steady", 60, "seconds of idle steady state")
	flagEpChanges   = flag.Int("ep-changes", 3, "number of endpoint-change events")
	flagJoin        = flag.Bool("join", true, "run the join event")
	flagDeleteCmd   = flag.String("delete-cmd", "", "shell command deleting a node; {id} is replaced by its node ID (empty: skip the delete event)")
	flagDeleteEvent = flag.Bool("delete-event", true, "run the delete event (needs -delete-cmd)")
	flagConnectTO   = flag.Duration("connect-timeout", 10*time.Minute, "give up on the storm after this long")
	flagEventTO     = flag.Duration("event-timeout", 60*time.Second, "give up waiting for an event's observers after this long")
	flagSettle      = flag.Duration("settle", 2*time.Second, "quiet time after each event before the next (and before its byte/CPU window closes)")
	flagOut         = flag.String("out", "", "write the JSON result here (default stdout)")
	flagLogFile     = flag.String("log", "", "write the loadgen's log here (default stderr)")
	flagVerbose     = flag.Bool("v", false, "log the control client's own messages")
	flagGCPercent   = flag.Int("gc-percent", 200, "GOGC for this process")
	flagDecodeSlots = flag.Int("decode-slots", 0, "map messages decoded at once (0: 2×GOMAXPROCS); bounds memory during the storm")
	flagLabel       = flag.String("label", "", "free text copied into the result")
	flagDriver      = flag.Bool("driver", false, "talk to the driver on stdout/stdin: storm windows for its API polling, restart requests")
	flagRestart     = flag.Bool("restart", false, "run the restart scenario (needs -driver, which restarts the server)")
	flagAuthKeys    = flag.String("authkeys-file", "", "pre-auth keys, one a line: node i (the joiner is node -nodes) logs in with line i (modulo the count); overrides -authkey")
	flagPolicy      = flag.Bool("policy", false, "run the policy scenario (needs -driver, which sets the new policy): track every node's PacketFilter")
	flagPolicyTO    = flag.Duration("policy-timeout", 120*time.Second, "give up waiting for the nodes' new PacketFilter after this long")
	flagFailover    = flag.Bool("failover", false, "run the HA failover scenario (needs -driver, which approves the routes): the first -routers nodes announce routes in pairs")
	flagRouters     = flag.Int("routers", 50, "nodes announcing subnet routes in the failover scenario (two per route)")
	flagKill        = flag.Bool("kill", false, "run the replica-kill scenario (needs -driver, which kills the replica behind the last -url, and at least two URLs)")
)

// ---------------------------------------------------------------------------------------------
// observation events

type eventKind int

const (
	evEndpoint eventKind = iota
	evJoin
	evDelete
)

func (k eventKind) String() string {
	return [...]string{"endpoint", "join", "delete"}[k]
}

// event is what the stream readers look for; the active one is published through curEvent.
type event struct {
	idx       int // index into the per-node observation arrays
	kind      eventKind
	targetID  int64  // endpoint, delete
	keyJSON   []byte // join: `"nodekey:<hex>"` with the quotes, as it appears in JSON
	epMarker  []byte // endpoint: `"198.18.x.y:port"` with the quotes
	targetIdx int    // node index of the target (it does not observe itself)
}

var curEvent atomic.Pointer[event]

const maxEvents = 16

// keyMatch / epMatch decode a JSON value into "is it the active event's target?" without
// allocating a string per peer.
type keyMatch bool

func (k *keyMatch) UnmarshalJSON(b []byte) error {
	ev := curEvent.Load()
	*k = keyMatch(ev != nil && ev.kind == evJoin && bytes.Equal(b, ev.keyJSON))
	return nil
}

type epMatch bool

func (e *epMatch) UnmarshalJSON(b []byte) error {
	ev := curEvent.Load()
	*e = epMatch(ev != nil && ev.kind == evEndpoint && bytes.Contains(b, ev.epMarker))
	return nil
}

type peerLite struct {
	ID        int64
	Key       keyMatch
	Endpoints epMatch
}

type patchLite struct {
	NodeID    int64
	Endpoints epMatch
}

type mapLite struct {
	KeepAlive         bool
	PingRequest       *struct{ URL string }
	Node              *struct{ ID int64 }
	Peers             []peerLite
	PeersChanged      []peerLite
	PeersRemoved      []int64
	PeersChangedPatch []patchLite
}

// ---------------------------------------------------------------------------------------------
// nodes

type node struct {
	idx      int
	hostname string
	mkey     key.MachinePrivate
	nkey     key.NodePrivate
	disco    key.DiscoPublic
	hi       *tailcfg.Hostinfo
	ep       netip.AddrPort // its endpoint; after a soak endpoint change, under epMu
	epMu     sync.Mutex
	authKey  string
	url      string // its server (or balancer front): one of -url
	d        *controlclient.Direct

	id atomic.Int64 // from its first map's Node.ID

	foPrimary, foAfter atomic.Int64 // failover scenario: heard of a primary; of the new one

	tStart, tLogin, tFirstMap atomic.Int64 // unix ns

	wireRx, wireTx  atomic.Int64 // TCP bytes of its connections
	mapBytes        atomic.Int64 // frames (len prefix + body) of non-keep-alive messages
	mapMsgs         atomic.Int64 // ... and their count
	msgs, keepalive atomic.Int64
	peersSeen       atomic.Int64 // size of the last full Peers list
	lastMsgAt       atomic.Int64 // unix ns of its last non-keep-alive message

	obs [maxEvents]atomic.Int64 // unix ns when it saw event i

	// restart scenario: unix ns when its stream broke after the restart began, when its
	// first full map from the new server arrived, and the map requests it made in between
	rsBreak, rsBack, rsAttempts atomic.Int64
	rsTry                       atomic.Int64 // unix ns: start of its latest attempt
	rsErr                       atomic.Value // string: its last failed attempt after the break
	killSeen                    atomic.Int64 // replica-kill scenario: unix ns it first saw the change made after the kill

	// policy scenario (-policy): the PacketFilter this node holds (see filterTrack), and what
	// happened to it after the scenario armed
	pf                                    filterTrack
	pfBefore                              atomic.Uint64 // pf.hash when the scenario armed
	pfFirst, pfLast                       atomic.Int64  // unix ns: first / last message that changed it
	pfMsgs, pfRemoved, pfFull, pfFullPeer atomic.Int64  // filter messages, PeersRemoved entries, full maps, peers in the last one
	pfSize, pfMsgSize                     atomic.Int64  // JSON bytes of the new filter / of the message that brought it

	// soak scenario (-soak): its tailnet as its messages left it (soak.go)
	soakMu sync.Mutex
	soak   soakView

	ctx                    context.Context
	cancel                 context.CancelFunc
	deleted                atomic.Bool
	loginErr               atomic.Value // string
	streamErrs, reconnects atomic.Int64
	lastErr                atomic.Value // string
}

var (
	bus        *eventbus.Bus
	netMon     *netmon.Monitor
	keyClient  *http.Client
	decodeSem  chan struct{}
	bufPool    bufList
	clientLogf = func(string, ...any) {}
	t0Run      = time.Now()
)

// countingConn counts the TCP bytes one node reads and writes.
type countingConn struct {
	net.Conn
	n *node
}

func (c countingConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	c.n.wireRx.Add(int64(k))
	return k, err
}

func (c countingConn) Write(p []byte) (int, error) {
	k, err := c.Conn.Write(p)
	c.n.wireTx.Add(int64(k))
	return k, err
}

var sysDialer = &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}

func newNode(idx int, hostname string) *node {
	n := &node{idx: idx, hostname: hostname, authKey: *flagAuthKey, url: serverURLs[idx%len(serverURLs)]}
	if len(authKeys) > 0 {
		n.authKey = authKeys[idx%len(authKeys)]
	}
	n.mkey = key.NewMachine()
	n.nkey = key.NewNode()
	n.disco = key.NewDisco().Public()
	n.ep = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(idx >> 8), byte(idx)}), 41641)
	n.hi = &tailcfg.Hostinfo{
		IPNVersion:    "1.102.3-bench",
		BackendLogID:  fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64()),
		FrontendLogID: fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64()),
		OS:            "linux",
		OSVersion:     "6.1.0",
		Hostname:      hostname,
		GoArch:        runtime.GOARCH,
		GoVersion:     runtime.Version(),
		Userspace:     "true",
		NetInfo: &tailcfg.NetInfo{
			WorkingUDP:    "true",
			PreferredDERP: 900,
			DERPLatency:   map[string]float64{"900-v4": 0.001},
		},
	}
	if p, ok := routerPrefix(idx); ok {
		n.hi.RoutableIPs = []netip.Prefix{p}
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	return n
}

func (n *node) endpoint() netip.AddrPort {
	n.epMu.Lock()
	defer n.epMu.Unlock()
	return n.ep
}

func (n *node) setEndpoint(ep netip.AddrPort) {
	n.epMu.Lock()
	n.ep = ep
	n.epMu.Unlock()
}

func (n *node) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := sysDialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: c, n: n}, nil
}

// login: NewDirect + TryLogin with the pre-auth key (the node key is preset, so the join event
// knows the key to look for before the server has seen it).
func (n *node) login(ctx context.Context) error {
	dialer := tsdial.NewFromFuncForDebug(clientLogf, n.dial)
	dialer.SetNetMon(netMon)
	mk := n.mkey
	d, err := controlclient.NewDirect(controlclient.Options{
		Persist:              persist.Persist{PrivateNodeKey: n.nkey},
		GetMachinePrivateKey: func() (key.MachinePrivate, error) { return mk, nil },
		ServerURL:            n.url,
		AuthKey:              n.authKey,
		Hostinfo:             n.hi.Clone(),
		DiscoPublicKey:       n.disco,
		Logf:                 clientLogf,
		HTTPTestClient:       keyClient,
		Dialer:               dialer,
		Bus:                  bus,
	})
	if err != nil {
		return err
	}
	d.SetEndpoints([]tailcfg.Endpoint{{Addr: n.endpoint(), Type: tailcfg.EndpointLocal}})
	n.d = d
	url, err := d.TryLogin(ctx, controlclient.LoginDefault)
	if err != nil {
		return err
	}
	if url != "" {
		return fmt.Errorf("server wants interactive login: %s", url)
	}
	return nil
}

// restartAt is the unix ns at which the restart scenario asked for the server's restart (0:
// not armed); streams that break and come back after it are recorded on the node.
var restartAt atomic.Int64

// stream opens the streaming map poll and reads it until the node is stopped. gotFirst is
// closed at the first non-keep-alive message; *gotMap tells the caller that a map arrived.
func (n *node) stream(gotFirst chan struct{}, gotMap *bool) error {
	req := &tailcfg.MapRequest{
		Version:       tailcfg.CurrentCapabilityVersion,
		KeepAlive:     true,
		NodeKey:       n.nkey.Public(),
		DiscoKey:      n.disco,
		Endpoints:     []netip.AddrPort{n.endpoint()},
		EndpointTypes: []tailcfg.EndpointType{tailcfg.EndpointLocal},
		Stream:        true,
		Hostinfo:      n.hi,
		Compress:      "zstd",
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	u := strings.Replace(strings.TrimRight(n.url, "/")+"/machine/map", "http:", "https:", 1)
	hreq, err := http.NewRequestWithContext(n.ctx, "POST", u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	ts2021.AddLBHeader(hreq, n.nkey.Public())
	res, err := n.d.DoNoiseRequest(hreq)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fmt.Errorf("map: http %d: %s", res.StatusCode, strings.TrimSpace(string(msg)))
	}
	// Like the real client: a watchdog ends a stream silent for 120 s.
	watchdog := time.AfterFunc(120*time.Second, func() { res.Body.Close() })
	defer watchdog.Stop()
	var keepAliveZ []byte
	first := true
	for {
		var siz [4]byte
		if _, err := io.ReadFull(res.Body, siz[:]); err != nil {
			return err
		}
		size := int(binary.LittleEndian.Uint32(siz[:]))
		if size > 64<<20 {
			return fmt.Errorf("map message of %d bytes", size)
		}
		decodeSem <- struct{}{}
		bp := bufPool.Get()
		zbuf := growTo((*bp)[:0], size)
		_, err := io.ReadFull(res.Body, zbuf)
		now := time.Now().UnixNano()
		watchdog.Reset(120 * time.Second)
		if err != nil {
			*bp = zbuf
			bufPool.Put(bp)
			<-decodeSem
			return err
		}
		if keepAliveZ != nil && bytes.Equal(zbuf, keepAliveZ) {
			n.keepalive.Add(1)
			*bp = zbuf
			bufPool.Put(bp)
			<-decodeSem
			continue
		}
		jp := bufPool.Get()
		js, derr := zstdframe.AppendDecode((*jp)[:0], zbuf)
		var m mapLite
		fast, peers := -1, int64(-1)
		if derr == nil {
			fast, peers, derr = scanMsg(js, &m)
		}
		if derr == nil && m.KeepAlive && keepAliveZ == nil && len(js) < 32 {
			keepAliveZ = append([]byte(nil), zbuf...)
		}
		if derr == nil && !m.KeepAlive && *flagPolicy {
			n.trackPolicy(js, now, peers)
		}
		if derr == nil && !m.KeepAlive && *flagFailover {
			n.trackFailover(js, now)
		}
		if derr == nil && !m.KeepAlive && *flagKill {
			n.trackKill(js, now)
		}
		if derr == nil && !m.KeepAlive && *flagSoak > 0 {
			n.soakMu.Lock()
			n.soak.apply(js, &n.pf)
			n.soakMu.Unlock()
		}
		*bp = zbuf
		bufPool.Put(bp)
		*jp = js
		bufPool.Put(jp)
		<-decodeSem
		if derr != nil {
			return fmt.Errorf("decode: %w", derr)
		}
		n.msgs.Add(1)
		if m.PingRequest != nil && m.PingRequest.URL != "" {
			go answerPing(m.PingRequest.URL) // HA health probes: a real client fetches the URL
		}
		if m.KeepAlive {
			n.keepalive.Add(1)
			continue
		}
		n.mapBytes.Add(int64(4 + size))
		n.mapMsgs.Add(1)
		n.lastMsgAt.Store(now)
		if first {
			first = false
			if m.Node == nil {
				return errors.New("initial MapResponse lacked node")
			}
			*gotMap = true
			if restartAt.Load() != 0 && n.rsBreak.Load() != 0 {
				n.rsBack.CompareAndSwap(0, now)
			}
			n.id.Store(m.Node.ID)
			if n.tFirstMap.Load() == 0 {
				n.tFirstMap.Store(now)
			}
			if gotFirst != nil {
				close(gotFirst)
				gotFirst = nil
			}
		}
		if peers >= 0 {
			n.peersSeen.Store(peers)
		}
		switch fast {
		case 1:
			if ev := curEvent.Load(); ev != nil && ev.targetIdx != n.idx {
				n.obs[ev.idx].CompareAndSwap(0, now)
			}
		case -1:
			n.observe(&m, now)
		}
	}
}

// answerPing does what tailscaled does with a PingRequest that names no ping type: a HEAD of
// its URL (the server's HA health probe).
func answerPing(url string) {
	req, err := http.NewRequest("HEAD", url, nil)
	if err != nil {
		return
	}
	if resp, err := keyClient.Do(req); err == nil {
		resp.Body.Close()
	}
}

// Messages at least this big (full maps) are not JSON-decoded whole: at 5,000 nodes a full map
// is megabytes and the loadgen would spend more CPU scanning them than the server spends
// building them. Instead: Node.ID from the "Node" object alone, the peer count from the number
// of node keys, and the endpoint/join events by a byte search for the event's unique marker
// (the new endpoint string / the new node key, which can appear nowhere else). A delete event
// against a big message still decodes it whole (the target's absence has to be proven).
const fastScanMin = 32 << 10

var (
	nodeTag  = []byte(`"Node":`)
	keyTag   = []byte(`"Key":"nodekey:`)
	peersTag = []byte(`"Peers":[`)
)

// scanMsg fills m (wholly for small messages, only m.Node for big ones) and returns fast: 1 =
// the active event is seen in this message, 0 = not seen, -1 = decide with observe(m); and the
// number of peers if this was a full map (else -1).
func scanMsg(js []byte, m *mapLite) (fast int, peers int64, err error) {
	ev := curEvent.Load()
	if len(js) < fastScanMin || (ev != nil && ev.kind == evDelete) {
		if err := json.Unmarshal(js, m); err != nil {
			return -1, -1, err
		}
		if m.Peers != nil {
			return -1, int64(len(m.Peers)), nil
		}
		return -1, -1, nil
	}
	if i := nodeAt(js); i >= 0 {
		var nd struct{ ID int64 }
		if err := json.NewDecoder(bytes.NewReader(js[i+len(nodeTag):])).Decode(&nd); err != nil {
			return -1, -1, fmt.Errorf("Node: %w", err)
		}
		m.Node = &struct{ ID int64 }{nd.ID}
	}
	peers = -1
	if bytes.Contains(js, peersTag) {
		peers = int64(countKeys(js))
		if m.Node != nil {
			peers--
		}
	}
	fast = 0
	if ev != nil {
		switch ev.kind {
		case evEndpoint:
			if bytes.Contains(js, ev.epMarker) {
				fast = 1
			}
		case evJoin:
			if bytes.Contains(js, ev.keyJSON) {
				fast = 1
			}
		}
	}
	return fast, peers, nil
}

// countKeys counts keyTag in js like bytes.Count, faster: that looks for keyTag's first byte,
// a quote, dozens of times per peer; this for its 'y', a few times per peer.
func countKeys(js []byte) int {
	y := bytes.IndexByte(keyTag, 'y')
	n := 0
	for i := y; i < len(js); {
		j := bytes.IndexByte(js[i:], 'y')
		if j < 0 {
			break
		}
		at := i + j - y
		if at+len(keyTag) <= len(js) && bytes.Equal(js[at:at+len(keyTag)], keyTag) {
			n++
		}
		i += j + 1
	}
	return n
}

// nodeAt finds the "Node" key of a full map without scanning its megabytes of peers twice:
// servers put it before the peers (headscale, in Go's field order) or after them (ours), so
// it is looked for in the first 64 KiB, then from the end.
func nodeAt(js []byte) int {
	head := js
	if len(head) > 64<<10 {
		head = head[:64<<10]
	}
	if i := bytes.Index(head, nodeTag); i >= 0 {
		return i
	}
	return bytes.LastIndex(js, nodeTag)
}

// bufList keeps the decode buffers for good. A sync.Pool lets the GC drop them, and a
// megabytes-long buffer made again is fresh memory the kernel must zero page by page: at
// 5,000 peers that was a tenth of the loadgen's CPU in a reconnect storm.
type bufList chan *[]byte

func (l bufList) Get() *[]byte {
	select {
	case b := <-l:
		return b
	default:
		b := make([]byte, 0, 4096)
		return &b
	}
}

func (l bufList) Put(b *[]byte) {
	select {
	case l <- b:
	default: // more out than decode slots allow: let the GC have it
	}
}

func growTo(b []byte, n int) []byte {
	if cap(b) < n {
		b = make([]byte, n, n+n/4)
	}
	return b[:n]
}

func (n *node) observe(m *mapLite, now int64) {
	ev := curEvent.Load()
	if ev == nil || ev.targetIdx == n.idx || n.obs[ev.idx].Load() != 0 {
		return
	}
	seen := false
	switch ev.kind {
	case evEndpoint:
		for i := range m.Peers {
			seen = seen || (m.Peers[i].ID == ev.targetID && bool(m.Peers[i].Endpoints))
		}
		for i := range m.PeersChanged {
			seen = seen || (m.PeersChanged[i].ID == ev.targetID && bool(m.PeersChanged[i].Endpoints))
		}
		for i := range m.PeersChangedPatch {
			seen = seen || (m.PeersChangedPatch[i].NodeID == ev.targetID && bool(m.PeersChangedPatch[i].Endpoints))
		}
	case evJoin:
		for i := range m.Peers {
			seen = seen || bool(m.Peers[i].Key)
		}
		for i := range m.PeersChanged {
			seen = seen || bool(m.PeersChanged[i].Key)
		}
	case evDelete:
		for _, id := range m.PeersRemoved {
			seen = seen || id == ev.targetID
		}
		if len(m.Peers) > 0 {
			present := false
			for i := range m.Peers {
				present = present || m.Peers[i].ID == ev.targetID
			}
			seen = seen || !present
		}
	}
	if seen {
		n.obs[ev.idx].CompareAndSwap(0, now)
	}
}

// run logs the node in and keeps its stream up (reconnecting like a client would) until stopped.
// ready is signalled after the first map or after the node gave up.
func (n *node) run(ready func(ok bool)) {
	n.tStart.Store(time.Now().UnixNano())
	loginWait := 500 * time.Millisecond
	deadline := time.Now().Add(*flagConnectTO)
	for {
		if n.ctx.Err() != nil {
			ready(false)
			return
		}
		ctx, cancel := context.WithTimeout(n.ctx, 60*time.Second)
		err := n.login(ctx)
		cancel()
		if err == nil {
			break
		}
		n.loginErr.Store(err.Error())
		if n.d != nil {
			n.d.Close()
			n.d = nil
		}
		if time.Now().After(deadline) {
			ready(false)
			return
		}
		sleepCtx(n.ctx, jitter(loginWait))
		loginWait = min(loginWait*2, 30*time.Second)
	}
	n.tLogin.Store(time.Now().UnixNano())
	gotFirst := make(chan struct{})
	readyDone := false
	go func() {
		select {
		case <-gotFirst:
			readyDone = true
			ready(true)
		case <-n.ctx.Done():
		}
	}()
	// The map poll's retry schedule is controlclient.Auto's (mapRoutine): Tailscale's backoff
	// with a 30 s cap, reset whenever a map arrived.
	bo := backoff.NewBackoff("mapRoutine", clientLogf, 30*time.Second)
	for {
		if restartAt.Load() != 0 && n.rsBreak.Load() != 0 && n.rsBack.Load() == 0 {
			n.rsAttempts.Add(1)
			n.rsTry.Store(time.Now().UnixNano())
		}
		gotMap := false
		err := n.stream(gotFirst, &gotMap)
		if n.ctx.Err() != nil || n.deleted.Load() {
			break
		}
		if restartAt.Load() != 0 && !n.rsBreak.CompareAndSwap(0, time.Now().UnixNano()) &&
			n.rsBack.Load() == 0 && err != nil {
			n.rsErr.Store(fmt.Sprintf("attempt %d: %v", n.rsAttempts.Load(), err))
		}
		n.streamErrs.Add(1)
		if err != nil {
			n.lastErr.Store(err.Error())
		} else {
			err = errors.New("map stream ended")
		}
		if n.tFirstMap.Load() == 0 && time.Now().After(deadline) {
			break
		}
		if gotMap {
			bo.Reset()
		}
		bo.BackOff(n.ctx, err)
		n.reconnects.Add(1)
		if n.tFirstMap.Load() != 0 {
			gotFirst = nil
		}
	}
	if n.tFirstMap.Load() == 0 && !readyDone {
		ready(false)
	}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// ---------------------------------------------------------------------------------------------
// /proc figures

type procSample struct {
	T       time.Time
	CPU     float64 // utime+stime seconds
	RSSKiB  int64
	HWMKiB  int64
	WChar   int64 // /proc/<pid>/io wchar: bytes passed to write/send (sockets, files, logs)
	ReadOK  bool
	Threads int64
}

var clkTck = 100.0

func sampleProc(pid int) procSample {
	s := procSample{T: time.Now()}
	if pid <= 0 {
		return s
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s
	}
	str := string(b)
	i := strings.LastIndexByte(str, ')')
	f := strings.Fields(str[i+2:])
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	s.CPU = float64(ut+st) / clkTck
	s.ReadOK = true
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			fs := strings.Fields(line)
			if len(fs) < 2 {
				continue
			}
			v, _ := strconv.ParseInt(fs[1], 10, 64)
			switch fs[0] {
			case "VmRSS:":
				s.RSSKiB = v
			case "VmHWM:":
				s.HWMKiB = v
			case "Threads:":
				s.Threads = v
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "wchar: "); ok {
				s.WChar, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
	}
	return s
}

func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

func selfRSS() (rss, hwm int64) {
	s := sampleProc(os.Getpid())
	return s.RSSKiB, s.HWMKiB
}

// ---------------------------------------------------------------------------------------------
// result

type phase struct {
	Name          string  `json:"name"`
	WallS         float64 `json:"wall_s"`
	ServerCPUS    float64 `json:"server_cpu_s"`
	ServerCPUPct  float64 `json:"server_cpu_pct"`
	ServerRSSKiB  int64   `json:"server_rss_kib"`
	ServerHWMKiB  int64   `json:"server_hwm_kib"`
	ServerThreads int64   `json:"server_threads"`
	ServerWChar   int64   `json:"server_wchar_bytes"`
	LoadCPUS      float64 `json:"loadgen_cpu_s"`
	LoadCPUPct    float64 `json:"loadgen_cpu_pct"`
	LoadRSSKiB    int64   `json:"loadgen_rss_kib"`
	LoadHWMKiB    int64   `json:"loadgen_hwm_kib"`
	LoadHeapKiB   uint64  `json:"loadgen_heap_kib"`
	Goroutines    int     `json:"loadgen_goroutines"`
}

type eventResult struct {
	Kind            string    `json:"kind"`
	Target          int64     `json:"target_node_id"`
	Recipients      int       `json:"recipients"`
	Observed        int       `json:"observed"`
	LatMS           []float64 `json:"latency_ms"` // sorted, observed recipients only
	P50MS           float64   `json:"p50_ms"`
	P99MS           float64   `json:"p99_ms"`
	MaxMS           float64   `json:"max_ms"`
	WindowS         float64   `json:"window_s"`
	ServerCPUS      float64   `json:"server_cpu_s"`
	ServerCPUNetS   float64   `json:"server_cpu_minus_idle_s"`
	ServerWChar     int64     `json:"server_wchar_bytes"`
	MapBytesPerRcpt float64   `json:"map_bytes_per_recipient"`
	WireRxPerRcpt   float64   `json:"wire_rx_bytes_per_recipient"`
	MsgsPerRcpt     float64   `json:"messages_per_recipient"`
	LoadCPUS        float64   `json:"loadgen_cpu_s"`
	Error           string    `json:"error,omitempty"`
}

// restartResult: the server stopped (SIGTERM) and started again with every node idle. Times are
// from the SIGTERM unless named otherwise.
type restartResult struct {
	Nodes           int            `json:"nodes"` // live nodes that had to come back
	Back            int            `json:"back"`  // ... and did, within -connect-timeout
	ServerPID       int            `json:"server_pid"`
	ExitS           float64        `json:"exit_s"`              // until the old process was gone
	DownS           float64        `json:"down_s"`              // until the new one answered /health
	AllBackS        float64        `json:"all_back_s"`          // until the last node's first full map (-1: not all)
	AllBackAfterUpS float64        `json:"all_back_after_up_s"` // the same from /health answering
	ConvergedS      float64        `json:"converged_s"`         // until the last map message any node read
	DrainS          float64        `json:"drain_s"`
	BackMS          []float64      `json:"back_ms"`    // per node, sorted: its first full map
	BreakMS         []float64      `json:"break_ms"`   // per node, sorted: its stream ended
	Attempts        []float64      `json:"attempts"`   // per node, sorted: map requests until one got a map
	AttemptMS       []float64      `json:"attempt_ms"` // per node, sorted: start of the attempt that got the map → the map
	Errors          map[string]int `json:"errors"`     // per node its last failed attempt, counted
	APIWindow       window         `json:"api_window"` // the reconnect storm: /health answering → last map message
	Error           string         `json:"error,omitempty"`
}

type result struct {
	Label         string          `json:"label"`
	URL           string          `json:"url"`
	Nodes         int             `json:"nodes"`
	Concurrency   int             `json:"concurrency"`
	Connected     int             `json:"connected"`
	ConnectAllS   float64         `json:"connect_all_s"` // first login start → last first map (-1: not all)
	ConnectLastS  float64         `json:"connect_last_s"`
	ConvergedS    float64         `json:"converged_s"`  // storm start → last storm delta read by any node
	DrainS        float64         `json:"drain_s"`      // after the storm, until no map traffic for 2 s
	FirstMapMS    []float64       `json:"first_map_ms"` // per node: its login start → its first map, sorted
	LoginErrors   map[string]int  `json:"login_errors"`
	StreamErrors  map[string]int  `json:"stream_errors"`
	Reconnects    int64           `json:"reconnects"`
	PeersSeenMin  int64           `json:"peers_in_first_map_min"`
	Baseline      phase           `json:"baseline"`
	Phases        []phase         `json:"phases"`
	Events        []eventResult   `json:"events"`
	IdleCPUPctSrv float64         `json:"server_idle_cpu_pct"`
	GoMaxProcs    int             `json:"gomaxprocs"`
	Notes         []string        `json:"notes"`
	Failed        string          `json:"failed,omitempty"`
	StormWindow   window          `json:"storm_window"` // start → last map message the storm caused
	Restart       *restartResult  `json:"restart,omitempty"`
	Policy        *policyResult   `json:"policy,omitempty"`
	Failover      *failoverResult `json:"failover,omitempty"`
	Kill          *killResult     `json:"kill,omitempty"`
	Soak          *soakResult     `json:"soak,omitempty"`
}

var (
	res      result
	allNodes []*node
	nodesMu  sync.Mutex
	authKeys []string // -authkeys-file
	// -url split at commas: node i uses serverURLs[i % len]
	serverURLs []string
)

func snapshotPhase(name string, startSrv procSample, startLoad float64, start time.Time) phase {
	s := sampleProc(*flagServerPID)
	lc := selfCPU()
	rss, hwm := selfRSS()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	wall := time.Since(start).Seconds()
	p := phase{
		Name: name, WallS: wall,
		ServerCPUS: s.CPU - startSrv.CPU, ServerRSSKiB: s.RSSKiB, ServerHWMKiB: s.HWMKiB,
		ServerThreads: s.Threads, ServerWChar: s.WChar - startSrv.WChar,
		LoadCPUS: lc - startLoad, LoadRSSKiB: rss, LoadHWMKiB: hwm, LoadHeapKiB: ms.HeapInuse / 1024,
		Goroutines: runtime.NumGoroutine(),
	}
	if wall > 0 {
		p.ServerCPUPct = 100 * p.ServerCPUS / wall
		p.LoadCPUPct = 100 * p.LoadCPUS / wall
	}
	return p
}

func pct(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return -1
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func nodesSnapshot() []*node {
	nodesMu.Lock()
	defer nodesMu.Unlock()
	return append([]*node(nil), allNodes...)
}

func liveNodes() []*node {
	var out []*node
	for _, n := range nodesSnapshot() {
		if n.tFirstMap.Load() != 0 && !n.deleted.Load() {
			out = append(out, n)
		}
	}
	return out
}

// runEvent publishes ev, runs act, waits until every live node but the target observed it (or
// timeout), then settles and closes the byte/CPU window.
func runEvent(ev *event, act func() error, idleRate float64) eventResult {
	er := eventResult{Kind: ev.kind.String(), Target: ev.targetID}
	recips := []*node{}
	for _, n := range liveNodes() {
		if n.idx != ev.targetIdx {
			recips = append(recips, n)
		}
	}
	er.Recipients = len(recips)
	mb0 := make([]int64, len(recips))
	rx0 := make([]int64, len(recips))
	ms0 := make([]int64, len(recips))
	for i, n := range recips {
		mb0[i], rx0[i], ms0[i] = n.mapBytes.Load(), n.wireRx.Load(), n.msgs.Load()
	}
	curEvent.Store(ev)
	srv0 := sampleProc(*flagServerPID)
	load0 := selfCPU()
	t0 := time.Now()
	if err := act(); err != nil {
		er.Error = err.Error()
		log.Printf("event %s: %v", er.Kind, err)
	}
	deadline := t0.Add(*flagEventTO)
	for time.Now().Before(deadline) {
		all := true
		for _, n := range recips {
			if n.obs[ev.idx].Load() == 0 {
				all = false
				break
			}
		}
		if all {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(*flagSettle)
	srv1 := sampleProc(*flagServerPID)
	load1 := selfCPU()
	er.WindowS = time.Since(t0).Seconds()
	er.ServerCPUS = srv1.CPU - srv0.CPU
	er.ServerCPUNetS = max(0, er.ServerCPUS-idleRate*er.WindowS)
	er.ServerWChar = srv1.WChar - srv0.WChar
	er.LoadCPUS = load1 - load0
	var mb, rx, ms int64
	for i, n := range recips {
		if o := n.obs[ev.idx].Load(); o != 0 {
			er.LatMS = append(er.LatMS, float64(o-t0.UnixNano())/1e6)
		}
		mb += n.mapBytes.Load() - mb0[i]
		rx += n.wireRx.Load() - rx0[i]
		ms += n.msgs.Load() - ms0[i]
	}
	sort.Float64s(er.LatMS)
	er.Observed = len(er.LatMS)
	er.P50MS, er.P99MS = pct(er.LatMS, 0.5), pct(er.LatMS, 0.99)
	er.MaxMS = pct(er.LatMS, 1)
	if len(recips) > 0 {
		er.MapBytesPerRcpt = float64(mb) / float64(len(recips))
		er.WireRxPerRcpt = float64(rx) / float64(len(recips))
		er.MsgsPerRcpt = float64(ms) / float64(len(recips))
	}
	curEvent.Store(nil)
	log.Printf("event %-8s target=%d observed %d/%d p50=%.1fms p99=%.1fms max=%.1fms srv_cpu=%.3fs map_bytes/rcpt=%.0f wire/rcpt=%.0f",
		er.Kind, er.Target, er.Observed, er.Recipients, er.P50MS, er.P99MS, er.MaxMS, er.ServerCPUS, er.MapBytesPerRcpt, er.WireRxPerRcpt)
	return er
}

// ---------------------------------------------------------------------------------------------
// the driver

// window: unix ns, the span a storm's API samples are cut to.
type window struct {
	FromNS int64 `json:"from_ns"`
	ToNS   int64 `json:"to_ns"`
}

// driverSay tells the driver something (only the main goroutine writes stdout).
func driverSay(line string) {
	if *flagDriver {
		fmt.Fprintln(os.Stdout, line)
	}
}

// drain waits until no node has read a non-keep-alive message for 2 s (at most limit) and
// returns how long that took and the unix ns of the last message any node read.
func drain(limit time.Duration) (float64, int64) {
	return drainQuiet(2*time.Second, limit)
}

// drainQuiet is drain with another quiet time than 2 s.
func drainQuiet(quiet, limit time.Duration) (float64, int64) {
	start := time.Now()
	var lastTotal int64 = -1
	stableSince := time.Now()
	for time.Since(start) < limit {
		var tot int64
		for _, n := range nodesSnapshot() {
			tot += n.mapBytes.Load()
		}
		if tot != lastTotal {
			lastTotal, stableSince = tot, time.Now()
		} else if time.Since(stableSince) >= quiet {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var lastMsg int64
	for _, n := range nodesSnapshot() {
		lastMsg = max(lastMsg, n.lastMsgAt.Load())
	}
	return time.Since(start).Seconds(), lastMsg
}

// ---------------------------------------------------------------------------------------------
// restart

var stdinLines = bufio.NewReader(os.Stdin)

// askRestart has the driver restart the server: it answers once the new one serves /health.
func askRestart() (pid int, term, exit, up int64, err error) {
	driverSay("RESTART")
	line, err := stdinLines.ReadString('\n')
	if err != nil {
		return 0, 0, 0, 0, fmt.Errorf("no answer from the driver: %w", err)
	}
	f := strings.Fields(line)
	if len(f) == 5 && f[0] == "UP" {
		pid, _ = strconv.Atoi(f[1])
		term, _ = strconv.ParseInt(f[2], 10, 64)
		exit, _ = strconv.ParseInt(f[3], 10, 64)
		up, _ = strconv.ParseInt(f[4], 10, 64)
		if pid > 0 && term > 0 {
			return pid, term, exit, up, nil
		}
	}
	return 0, 0, 0, 0, fmt.Errorf("driver: %s", strings.TrimSpace(line))
}

// waitBack waits until every node in live got a full map from the new server (or deadline).
func waitBack(live []*node, term int64, deadline time.Time) int {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		back := 0
		for _, n := range live {
			if n.rsBack.Load() != 0 {
				back++
			}
		}
		if back == len(live) || time.Now().After(deadline) {
			return back
		}
		select {
		case <-tick.C:
			log.Printf("restart: %d/%d back after %.1fs", back, len(live),
				float64(time.Now().UnixNano()-term)/1e9)
		default:
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// restartFigures fills rr's per-node figures; returns when the last node was back (unix ns).
func restartFigures(rr *restartResult, live []*node, term int64) int64 {
	var lastBack int64
	for _, n := range live {
		if b := n.rsBack.Load(); b != 0 {
			rr.BackMS = append(rr.BackMS, float64(b-term)/1e6)
			rr.Attempts = append(rr.Attempts, float64(n.rsAttempts.Load()))
			rr.AttemptMS = append(rr.AttemptMS, float64(b-n.rsTry.Load())/1e6)
			lastBack = max(lastBack, b)
		}
		if b := n.rsBreak.Load(); b != 0 {
			rr.BreakMS = append(rr.BreakMS, float64(max(0, b-term))/1e6)
		}
	}
	rr.Errors = countErrs(func(n *node) string {
		if n.deleted.Load() {
			return ""
		}
		return strOf(&n.rsErr)
	})
	for _, v := range [][]float64{rr.BackMS, rr.BreakMS, rr.Attempts, rr.AttemptMS} {
		sort.Float64s(v)
	}
	return lastBack
}

func runRestart() (*restartResult, phase) {
	rr := &restartResult{AllBackS: -1, AllBackAfterUpS: -1}
	live := liveNodes()
	rr.Nodes = len(live)
	load0 := selfCPU()
	restartAt.Store(time.Now().UnixNano())
	pid, term, exit, up, err := askRestart()
	if err != nil {
		rr.Error = err.Error()
		log.Printf("restart: %v", err)
		return rr, phase{Name: "restart"}
	}
	*flagServerPID = pid
	rr.ServerPID = pid
	rr.ExitS, rr.DownS = float64(exit-term)/1e9, float64(up-term)/1e9
	log.Printf("restart: old server gone %.2fs after SIGTERM, new one (pid %d) up after %.2fs",
		rr.ExitS, pid, rr.DownS)
	driverSay("POLL start")
	rr.Back = waitBack(live, term, time.Unix(0, term).Add(*flagConnectTO))
	var lastMsg int64
	rr.DrainS, lastMsg = drain(*flagConnectTO)
	driverSay("POLL stop")
	lastBack := restartFigures(rr, live, term)
	if rr.Back == rr.Nodes && lastBack != 0 {
		rr.AllBackS = float64(lastBack-term) / 1e9
		rr.AllBackAfterUpS = float64(lastBack-up) / 1e9
	}
	if lastMsg > term {
		rr.ConvergedS = float64(lastMsg-term) / 1e9
	}
	rr.APIWindow = window{up, max(lastMsg, lastBack, up)}
	// the new process's whole life so far: start-up, reconnect storm, deltas
	ph := snapshotPhase("restart", procSample{}, load0, time.Unix(0, up))
	log.Printf("restart: %d/%d back, all in %.2fs (%.2fs after /health); server cpu %.2fs rss %d KiB",
		rr.Back, rr.Nodes, rr.AllBackS, rr.AllBackAfterUpS, ph.ServerCPUS, ph.ServerRSSKiB)
	return rr, ph
}

func countErrs(get func(n *node) string) map[string]int {
	m := map[string]int{}
	for _, n := range nodesSnapshot() {
		if s := get(n); s != "" {
			if len(s) > 160 {
				s = s[:160]
			}
			m[s]++
		}
	}
	return m
}

func strOf(v *atomic.Value) string {
	if s, ok := v.Load().(string); ok {
		return s
	}
	return ""
}

func main() {
	flag.Parse()
	if *flagURL == "" || (*flagAuthKey == "" && *flagAuthKeys == "") {
		log.Fatal("need -url and -authkey (or -authkeys-file)")
	}
	if *flagDriver && *flagOut == "" {
		log.Fatal("-driver talks to the driver on stdout: write the result with -out")
	}
	if *flagRestart && !*flagDriver {
		log.Fatal("-restart needs -driver (the driver restarts the server)")
	}
	if *flagPolicy && !*flagDriver {
		log.Fatal("-policy needs -driver (the driver sets the policy)")
	}
	if *flagFailover && (!*flagDriver || *flagRouters < 2 || *flagRouters > 2*256) {
		log.Fatal("-failover needs -driver (the driver approves the routes) and 2 <= -routers <= 512")
	}
	if *flagSoak > 0 && (!*flagDriver || *flagDeleteCmd == "") {
		log.Fatal("-soak needs -driver (the driver sets the policies) and -delete-cmd")
	}
	for _, u := range strings.Split(*flagURL, ",") {
		if u = strings.TrimSpace(u); u != "" {
			serverURLs = append(serverURLs, u)
		}
	}
	if len(serverURLs) == 0 {
		log.Fatal("-url names no server")
	}
	if *flagKill && (!*flagDriver || len(serverURLs) < 2) {
		log.Fatal("-kill needs -driver (the driver kills the replica) and at least two -url")
	}
	if *flagAuthKeys != "" {
		b, err := os.ReadFile(*flagAuthKeys)
		if err != nil {
			log.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				authKeys = append(authKeys, l)
			}
		}
		if len(authKeys) == 0 {
			log.Fatalf("%s: no keys", *flagAuthKeys)
		}
	}
	if *flagLogFile != "" {
		f, err := os.Create(*flagLogFile)
		if err != nil {
			log.Fatal(err)
		}
		log.SetOutput(f)
	}
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	if *flagVerbose {
		clientLogf = log.Printf
	}
	debug.SetGCPercent(*flagGCPercent)
	slots := *flagDecodeSlots
	if slots <= 0 {
		slots = 2 * runtime.GOMAXPROCS(0)
	}
	decodeSem = make(chan struct{}, slots)
	bufPool = make(bufList, 2*slots) // each decode holds two: the frame and its JSON

	bus = eventbus.New()
	netMon = netmon.NewStatic()
	// /key (and the HA probes' ping URLs) are fetched over plain HTTP; one shared client
	// without keep-alives so that no idle connection per node lingers (Direct closes idle
	// ones after /key anyway).
	keyClient = &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true, DialContext: sysDialer.DialContext, MaxIdleConns: 0,
	}, Timeout: 30 * time.Second}

	res = result{Label: *flagLabel, URL: *flagURL, Nodes: *flagNodes, Concurrency: *flagConc,
		GoMaxProcs: runtime.GOMAXPROCS(0), ConnectAllS: -1}
	res.Notes = append(res.Notes,
		"streams are read and JSON-scanned into a minimal struct, not fed to controlclient's mapSession (which would hold N² tailcfg.Nodes)")

	out := os.Stdout
	if *flagOut != "" {
		f, err := os.Create(*flagOut)
		if err != nil {
			log.Fatal(err)
		}
		out = f
	}
	defer func() {
		enc := json.NewEncoder(out)
		enc.SetIndent("", " ")
		enc.Encode(&res)
	}()

	runStart := time.Now()
	base := sampleProc(*flagServerPID)
	loadBase := selfCPU()
	res.Baseline = snapshotPhase("baseline", base, loadBase, runStart)
	res.Baseline.ServerCPUS = base.CPU // absolute CPU used before the run (start-up)

	// ---- 1. connect storm
	N := *flagNodes
	sem := make(chan struct{}, max(1, *flagConc))
	var wg sync.WaitGroup
	var connected atomic.Int64
	stormStart := time.Now()
	srvStorm0 := sampleProc(*flagServerPID)
	loadStorm0 := selfCPU()
	driverSay("POLL start")
	waitDone := make(chan struct{})
	wg.Add(N)
	go func() {
		for i := 0; i < N; i++ {
			n := newNode(i, fmt.Sprintf("bench-%05d", i))
			nodesMu.Lock()
			allNodes = append(allNodes, n)
			nodesMu.Unlock()
			sem <- struct{}{}
			var once sync.Once
			go n.run(func(ok bool) {
				once.Do(func() {
					if ok {
						connected.Add(1)
					}
					<-sem
					wg.Done()
				})
			})
		}
	}()
	go func() { wg.Wait(); close(waitDone) }()
	tick := time.NewTicker(5 * time.Second)
loop:
	for {
		select {
		case <-waitDone:
			break loop
		case <-tick.C:
			s := sampleProc(*flagServerPID)
			log.Printf("storm: %d/%d connected after %.1fs, server rss %d KiB cpu %.1fs, loadgen cpu %.1fs",
				connected.Load(), N, time.Since(stormStart).Seconds(), s.RSSKiB, s.CPU-srvStorm0.CPU, selfCPU()-loadStorm0)
			if !s.ReadOK && *flagServerPID > 0 {
				res.Failed = "server process gone during the connect storm"
				log.Print(res.Failed)
				break loop
			}
		}
	}
	tick.Stop()
	var last int64
	for _, n := range nodesSnapshot() {
		if f := n.tFirstMap.Load(); f != 0 {
			res.FirstMapMS = append(res.FirstMapMS, float64(f-n.tStart.Load())/1e6)
			last = max(last, f)
		}
	}
	sort.Float64s(res.FirstMapMS)
	res.Connected = int(connected.Load())
	if last != 0 {
		res.ConnectLastS = float64(last-stormStart.UnixNano()) / 1e9
	}
	if res.Connected == N {
		res.ConnectAllS = res.ConnectLastS
	}
	ph := snapshotPhase("storm", srvStorm0, loadStorm0, stormStart)
	res.Phases = append(res.Phases, ph)
	log.Printf("storm done: %d/%d connected, all in %.2fs; server cpu %.1fs rss %d KiB; loadgen cpu %.1fs rss %d KiB",
		res.Connected, N, res.ConnectLastS, ph.ServerCPUS, ph.ServerRSSKiB, ph.LoadCPUS, ph.LoadRSSKiB)
	res.LoginErrors = countErrs(func(n *node) string { return strOf(&n.loginErr) })
	if res.Failed != "" || res.Connected == 0 {
		if res.Failed == "" {
			res.Failed = "no node connected"
		}
		driverSay("POLL stop")
		shutdown()
		return
	}
	// Let the deltas of the storm drain before measuring steady state: wait until no node has
	// read a non-keep-alive message for 2 s (bounded by -connect-timeout). At large N the
	// deltas queued for each stream (one per later join) keep arriving well after the last
	// node's first map; converged_s is when the last one was read.
	var lastMsg int64
	res.DrainS, lastMsg = drain(*flagConnectTO)
	if lastMsg > 0 {
		res.ConvergedS = float64(lastMsg-stormStart.UnixNano()) / 1e9
	}
	driverSay("POLL stop")
	res.StormWindow = window{stormStart.UnixNano(), max(lastMsg, last)}
	res.Phases = append(res.Phases, snapshotPhase("drain", srvStorm0, loadStorm0, stormStart))
	log.Printf("drained after %.1fs more; storm converged at %.2fs", res.DrainS, res.ConvergedS)
	time.Sleep(*flagSettle)
	res.PeersSeenMin = -1
	for _, n := range liveNodes() {
		if p := n.peersSeen.Load(); res.PeersSeenMin < 0 || p < res.PeersSeenMin {
			res.PeersSeenMin = p
		}
	}

	// ---- 2. steady state
	srvSt0 := sampleProc(*flagServerPID)
	loadSt0 := selfCPU()
	stStart := time.Now()
	sleepCtx(context.Background(), time.Duration(*flagSteady*float64(time.Second)))
	ph = snapshotPhase("steady", srvSt0, loadSt0, stStart)
	res.Phases = append(res.Phases, ph)
	idleRate := 0.0
	if ph.WallS > 0 {
		idleRate = ph.ServerCPUS / ph.WallS
	}
	res.IdleCPUPctSrv = 100 * idleRate
	log.Printf("steady: %.1fs server cpu %.2f%% rss %d KiB; loadgen cpu %.2f%% rss %d KiB",
		ph.WallS, ph.ServerCPUPct, ph.ServerRSSKiB, ph.LoadCPUPct, ph.LoadRSSKiB)

	// ---- 3. propagation
	srvPr0 := sampleProc(*flagServerPID)
	loadPr0 := selfCPU()
	prStart := time.Now()
	evIdx := 0
	live := liveNodes()
	for k := 0; k < *flagEpChanges && k < len(live) && evIdx < maxEvents; k++ {
		mover := live[k%len(live)]
		newEP := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 19, byte(mover.idx >> 8), byte(mover.idx)}), uint16(40000+k))
		ev := &event{idx: evIdx, kind: evEndpoint, targetID: mover.id.Load(), targetIdx: mover.idx,
			epMarker: []byte(`"` + newEP.String() + `"`)}
		evIdx++
		res.Events = append(res.Events, runEvent(ev, func() error {
			mover.d.SetEndpoints([]tailcfg.Endpoint{{Addr: newEP, Type: tailcfg.EndpointSTUN}})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return mover.d.SendUpdate(ctx)
		}, idleRate))
	}
	if *flagJoin && evIdx < maxEvents {
		j := newNode(N, fmt.Sprintf("bench-join-%05d", N))
		nodesMu.Lock()
		allNodes = append(allNodes, j)
		nodesMu.Unlock()
		kj, _ := j.nkey.Public().MarshalText()
		ev := &event{idx: evIdx, kind: evJoin, targetIdx: j.idx, keyJSON: []byte(`"` + string(kj) + `"`)}
		evIdx++
		res.Events = append(res.Events, runEvent(ev, func() error {
			done := make(chan bool, 1)
			go j.run(func(ok bool) { done <- ok })
			return nil // observers are what we wait for; the joiner's own map is not required
		}, idleRate))
	}
	if *flagDeleteEvent && *flagDeleteCmd != "" && evIdx < maxEvents {
		live = liveNodes()
		victim := live[len(live)-1]
		if victim.idx >= N && len(live) > 1 { // prefer an original node over the joiner
			victim = live[len(live)-2]
		}
		ev := &event{idx: evIdx, kind: evDelete, targetID: victim.id.Load(), targetIdx: victim.idx}
		evIdx++
		res.Events = append(res.Events, runEvent(ev, func() error {
			victim.deleted.Store(true)
			cmd := strings.ReplaceAll(*flagDeleteCmd, "{id}", strconv.FormatInt(victim.id.Load(), 10))
			out, err := exec.Command("/bin/sh", "-c", cmd).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s: %v: %s", cmd, err, strings.TrimSpace(string(out)))
			}
			return nil
		}, idleRate))
		victim.cancel()
	}
	res.Phases = append(res.Phases, snapshotPhase("propagation", srvPr0, loadPr0, prStart))

	// ---- 4. policy change
	if *flagPolicy {
		time.Sleep(*flagSettle)
		pr, ph := runPolicy(idleRate)
		res.Policy = pr
		if pr.Error == "" {
			res.Phases = append(res.Phases, ph)
		}
	}
	// ---- 4b. HA failover of a subnet router
	if *flagFailover {
		time.Sleep(*flagSettle)
		res.Failover = runFailover()
	}
	// ---- 4c. soak
	if *flagSoak > 0 {
		time.Sleep(*flagSettle)
		res.Soak = runSoak()
	}
	res.StreamErrors = countErrs(func(n *node) string { return strOf(&n.lastErr) })
	for _, n := range nodesSnapshot() {
		res.Reconnects += n.reconnects.Load()
	}
	// "total" is the first server process's run; the restart and the kill are measured on
	// their own
	res.Phases = append(res.Phases, snapshotPhase("total", base, loadBase, runStart))

	// ---- 4d. one replica killed
	if *flagKill {
		time.Sleep(*flagSettle)
		res.Kill = runKill()
	}

	// ---- 5. restart
	if *flagRestart {
		time.Sleep(*flagSettle)
		rr, ph := runRestart()
		res.Restart = rr
		if rr.Error == "" {
			res.Phases = append(res.Phases, ph)
		}
	}
	shutdown()
}

func shutdown() {
	for _, n := range nodesSnapshot() {
		n.cancel()
	}
	done := make(chan struct{})
	go func() {
		for _, n := range nodesSnapshot() {
			if n.d != nil {
				n.d.Close()
			}
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}
