// derpload: a DERP load generator. N sender/receiver pairs, each a real Tailscale DERP client
// (tailscale.com/derp/derphttp, the code tailscaled uses), send packets of one size as fast as
// they can for a fixed duration; the receivers count what arrives. Prints one JSON object.
//
// CPU: its own (getrusage) and, with -server-pid, the server's (/proc/<pid>/stat utime+stime),
// both over the measurement window only (after -warmup).
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/net/netmon"
	"tailscale.com/types/key"
)

type result struct {
	URL            string  `json:"url"`
	Client         string  `json:"client"`
	Pairs          int     `json:"pairs"`
	Size           int     `json:"size"`
	Seconds        float64 `json:"seconds"`
	SentPackets    uint64  `json:"sent_packets"`
	RecvPackets    uint64  `json:"recv_packets"`
	RecvBytes      uint64  `json:"recv_bytes"`
	SentPPS        float64 `json:"sent_pps"`
	RecvPPS        float64 `json:"recv_pps"`
	RecvMBps       float64 `json:"recv_MBps"`
	LossPct        float64 `json:"loss_pct"`
	ServerCPUPct   float64 `json:"server_cpu_pct"`
	LoadgenCPUPct  float64 `json:"loadgen_cpu_pct"`
	SendErrors     uint64  `json:"send_errors"`
	RecvErrors     uint64  `json:"recv_errors"`
	PeerGone       uint64  `json:"peer_gone"`
	Window         int     `json:"window"`
	WindowStalls   uint64  `json:"window_stalls"`
	ServerCPUTicks uint64  `json:"-"`
}

// procCPU → utime+stime of pid in seconds.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+2:])
	// fields after ')': state(0) ppid(1) ... utime is field 14 overall → index 11 here
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return float64(ut+st) / 100.0, nil // USER_HZ = 100 on Linux
}

func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func main() {
	url := flag.String("url", "http://127.0.0.1:3340/derp", "DERP server URL")
	pairs := flag.Int("pairs", 1, "sender/receiver pairs")
	size := flag.Int("size", 1200, "packet size in bytes")
	dur := flag.Duration("duration", 10*time.Second, "measurement window")
	warmup := flag.Duration("warmup", time.Second, "sending before the window starts")
	serverPID := flag.Int("server-pid", 0, "PID whose CPU to measure over the window")
	verbose := flag.Bool("v", false, "log DERP client messages")
	window := flag.Int("window", 0, "0: open loop (send as fast as possible, the server drops "+
		"what a receiver cannot take); W>0: closed loop, at most W packets in flight per pair "+
		"(a lost packet is written off after 100 ms without progress)")
	mode := flag.String("client", "direct", "derphttp: derphttp.Client as tailscaled uses it "+
		"(4 KiB read buffer); direct: derp.NewClient over a conn dialed here, 1 MiB read buffer "+
		"(cheaper receivers, so the load generator is less of a bottleneck)")
	flag.Parse()

	logf := func(format string, args ...any) {
		if *verbose {
			log.Printf(format, args...)
		}
	}
	netMon := netmon.NewStatic()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	connect := func() derpClient {
		priv := key.NewNode()
		if *mode == "direct" {
			c, err := dialDirect(ctx, *url, priv, logf)
			if err != nil {
				log.Fatalf("connect %s: %v", *url, err)
			}
			return c
		}
		c, err := derphttp.NewClient(priv, *url, logf, netMon)
		if err != nil {
			log.Fatalf("NewClient: %v", err)
		}
		if err := c.Connect(ctx); err != nil {
			log.Fatalf("connect %s: %v", *url, err)
		}
		return &httpClient{c}
	}

	var recvPkts, recvBytes, sentPkts, sendErrs, recvErrs, peerGone atomic.Uint64
	var counting atomic.Bool
	var stop atomic.Bool
	var wg sync.WaitGroup

	senders := make([]derpClient, *pairs)
	receivers := make([]derpClient, *pairs)
	for i := 0; i < *pairs; i++ {
		receivers[i] = connect()
		senders[i] = connect()
	}
	// Per pair: packets received (for the window) and a wake-up for a waiting sender.
	pairRecv := make([]atomic.Int64, *pairs)
	pairWake := make([]chan struct{}, *pairs)
	for i := range pairWake {
		pairWake[i] = make(chan struct{}, 1)
	}
	var stalls atomic.Uint64
	// Receivers first: a packet to a key not yet connected is dropped with PeerGone.
	ready := make(chan struct{}, *pairs)
	for i := 0; i < *pairs; i++ {
		r, got, wake := receivers[i], &pairRecv[i], pairWake[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			for !stop.Load() {
				m, err := r.Recv()
				if err != nil {
					if !stop.Load() {
						recvErrs.Add(1)
						logf("recv: %v", err)
					}
					return
				}
				switch m := m.(type) {
				case derp.ReceivedPacket:
					if first {
						first = false
						ready <- struct{}{}
					}
					if counting.Load() {
						recvPkts.Add(1)
						recvBytes.Add(uint64(len(m.Data)))
					}
					if *window > 0 {
						got.Add(1)
						select {
						case wake <- struct{}{}:
						default:
						}
					}
				}
			}
		}()
	}
	// Senders also drain what the server sends them (PeerGone, pongs, keepalives).
	for i := 0; i < *pairs; i++ {
		s := senders[i]
		go func() {
			for {
				m, err := s.Recv()
				if err != nil {
					return
				}
				if _, ok := m.(derp.PeerGoneMessage); ok {
					peerGone.Add(1)
				}
			}
		}()
	}
	// Prime each pair until its receiver has seen a packet (the server knows both keys).
	for i := 0; i < *pairs; i++ {
		deadline := time.Now().Add(10 * time.Second)
		dst := receivers[i].Key()
		got := false
		for !got && time.Now().Before(deadline) {
			senders[i].Send(dst, make([]byte, *size))
			select {
			case <-ready:
				got = true
			case <-time.After(50 * time.Millisecond):
			}
		}
		if !got {
			log.Fatalf("pair %d: no packet arrived within 10s", i)
		}
	}

	pkt := make([]byte, *size)
	for i := range pkt {
		pkt[i] = byte(i)
	}
	for i := 0; i < *pairs; i++ {
		s, dst := senders[i], receivers[i].Key()
		got, wake := &pairRecv[i], pairWake[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sent, lost int64 = got.Load(), 0 // the priming packets all arrived or not: start even
			lost = sent - got.Load()
			for !stop.Load() {
				if *window > 0 && sent-lost-got.Load() >= int64(*window) {
					before := got.Load()
					select {
					case <-wake:
					case <-time.After(100 * time.Millisecond):
						if got.Load() == before { // no progress: the rest was dropped
							lost = sent - got.Load()
							stalls.Add(1)
						}
					}
					continue
				}
				sent++
				if err := s.Send(dst, pkt); err != nil {
					if !stop.Load() {
						sendErrs.Add(1)
						logf("send: %v", err)
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				if counting.Load() {
					sentPkts.Add(1)
				}
			}
		}()
	}

	time.Sleep(*warmup)
	var srv0 float64
	if *serverPID > 0 {
		var err error
		if srv0, err = procCPU(*serverPID); err != nil {
			log.Fatalf("server pid: %v", err)
		}
	}
	self0 := selfCPU()
	t0 := time.Now()
	counting.Store(true)
	time.Sleep(*dur)
	counting.Store(false)
	elapsed := time.Since(t0).Seconds()
	self1 := selfCPU()
	var srv1 float64
	if *serverPID > 0 {
		srv1, _ = procCPU(*serverPID)
	}
	stop.Store(true)
	for i := 0; i < *pairs; i++ {
		senders[i].Close()
		receivers[i].Close()
	}
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
	}

	r := result{URL: *url, Client: *mode, Pairs: *pairs, Size: *size, Seconds: elapsed,
		SentPackets: sentPkts.Load(), RecvPackets: recvPkts.Load(), RecvBytes: recvBytes.Load(),
		SendErrors: sendErrs.Load(), RecvErrors: recvErrs.Load(), PeerGone: peerGone.Load(),
		Window: *window, WindowStalls: stalls.Load()}
	r.SentPPS = float64(r.SentPackets) / elapsed
	r.RecvPPS = float64(r.RecvPackets) / elapsed
	r.RecvMBps = float64(r.RecvBytes) / elapsed / 1e6
	if r.SentPackets > 0 {
		r.LossPct = 100 * (1 - float64(r.RecvPackets)/float64(r.SentPackets))
		if r.LossPct < 0 {
			r.LossPct = 0
		}
	}
	r.LoadgenCPUPct = 100 * (self1 - self0) / elapsed
	if *serverPID > 0 {
		r.ServerCPUPct = 100 * (srv1 - srv0) / elapsed
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
}

// derpClient is what the load needs from either client flavour.
type derpClient interface {
	Send(dst key.NodePublic, b []byte) error
	Recv() (derp.ReceivedMessage, error)
	Key() key.NodePublic
	Close() error
}

type httpClient struct{ *derphttp.Client }

func (c *httpClient) Key() key.NodePublic { return c.SelfPublicKey() }

type directClient struct {
	*derp.Client
	nc  net.Conn
	pub key.NodePublic
}

func (c *directClient) Key() key.NodePublic { return c.pub }
func (c *directClient) Close() error        { return c.nc.Close() }

// dialDirect does what derphttp does (GET /derp, Upgrade: DERP, 101; for https:// over TLS
// verified against the system roots, i.e. $SSL_CERT_FILE, no ALPN like derphttp), then hands
// the conn to derp.NewClient with large buffers.
func dialDirect(ctx context.Context, rawURL string, priv key.NodePrivate,
	logf func(string, ...any)) (*directClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "https" {
		tc := tls.Client(nc, &tls.Config{ServerName: u.Hostname()})
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		nc = tc
	}
	brw := bufio.NewReadWriter(bufio.NewReaderSize(nc, 1<<20), bufio.NewWriterSize(nc, 1<<17))
	req, _ := http.NewRequest("GET", rawURL, nil)
	req.Header.Set("Upgrade", "DERP")
	req.Header.Set("Connection", "Upgrade")
	if err := req.Write(brw); err != nil {
		nc.Close()
		return nil, err
	}
	if err := brw.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(brw.Reader, req)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, fmt.Errorf("GET /derp: %s", resp.Status)
	}
	c, err := derp.NewClient(priv, nc, brw, logf, derp.CanAckPings(true))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &directClient{Client: c, nc: nc, pub: priv.Public()}, nil
}
