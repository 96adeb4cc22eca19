package main

// The replica-kill scenario (-kill): with the nodes spread over several replicas (-url lists
// one balancer front per replica, each failing over to the others), the driver kills the
// replica behind the last URL with SIGKILL and at once renames a node homed elsewhere through a
// surviving replica. A node of the dead replica is back with a current map when a message on
// its new stream carries the new name: it then holds a map that includes a change made after
// the kill. The nodes of the surviving replicas are timed to the same change.

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

// killMarker is the new name given after the kill (nil: not armed). It is set before the
// driver is asked, so no message carrying it can arrive unrecognised.
var killMarker atomic.Pointer[[]byte]

// killResult: times from the SIGKILL, per node.
type killResult struct {
	Replica       int            `json:"replica"`         // index in -url of the replica killed
	Nodes         int            `json:"nodes"`           // its live nodes
	Back          int            `json:"back"`            // ... that read a full map again
	Current       int            `json:"current"`         // ... that saw the change made after the kill
	AllCurrentS   float64        `json:"all_current_s"`   // until the last of them (-1: not all)
	RenameMS      float64        `json:"rename_ms"`       // until the rename command had returned
	BackMS        []float64      `json:"back_ms"`         // per node, sorted: first full map on its new stream
	CurrentMS     []float64      `json:"current_ms"`      // per node, sorted: the change seen
	BreakMS       []float64      `json:"break_ms"`        // per node, sorted: its stream ended
	Others        int            `json:"others"`          // live nodes of the surviving replicas
	OthersCurrent int            `json:"others_current"`  // ... that saw the change
	OthersMS      []float64      `json:"others_ms"`       // per node, sorted
	DeadBytes     int64          `json:"dead_bytes"`      // map bytes the dead replica's nodes read until the last was current
	DeadMsgs      int64          `json:"dead_msgs"`       // ... messages (keep-alives excluded)
	OthersBytes   int64          `json:"others_bytes"`    // the same for the surviving replicas' nodes
	OthersMsgs    int64          `json:"others_msgs"`     //
	Errors        map[string]int `json:"errors"`          // the dead replica's nodes: last failed attempt
	Error         string         `json:"error,omitempty"` //
}

func (n *node) trackKill(js []byte, now int64) {
	if m := killMarker.Load(); m != nil && n.killSeen.Load() == 0 && bytes.Contains(js, *m) {
		n.killSeen.Store(now)
	}
}

// askKill asks the driver to kill replica r and rename node id to marker; returns the kill's
// and the rename's unix ns.
func askKill(r int, id int64, marker string) (kill, renamed int64, err error) {
	driverSay(fmt.Sprintf("KILL %d %d %s", r, id, marker))
	line, err := stdinLines.ReadString('\n')
	if err != nil {
		return 0, 0, fmt.Errorf("no answer from the driver: %w", err)
	}
	f := strings.Fields(line)
	if len(f) == 3 && f[0] == "KILLED" {
		kill, _ = strconv.ParseInt(f[1], 10, 64)
		renamed, _ = strconv.ParseInt(f[2], 10, 64)
		if kill > 0 && renamed > 0 {
			return kill, renamed, nil
		}
	}
	return 0, 0, fmt.Errorf("driver: %s", strings.TrimSpace(line))
}

func runKill() *killResult {
	kr := &killResult{Replica: len(serverURLs) - 1, AllCurrentS: -1}
	var dead, others []*node
	var renamed *node
	for _, n := range liveNodes() {
		if n.idx%len(serverURLs) == kr.Replica {
			dead = append(dead, n)
			continue
		}
		if renamed == nil {
			renamed = n // its own map names it in Node, not Peers: not timed
			continue
		}
		others = append(others, n)
	}
	kr.Nodes, kr.Others = len(dead), len(others)
	if renamed == nil || len(dead) == 0 {
		kr.Error = "no live node on the killed replica or on the others"
		return kr
	}
	db0, dm0 := sumTraffic(dead)
	ob0, om0 := sumTraffic(others)
	// 'q' is in no field name or key of a map, so the search for it skips megabytes at a time
	marker := fmt.Sprintf("qkilled-%d", time.Now().UnixNano())
	mb := []byte(marker)
	killMarker.Store(&mb)
	restartAt.Store(time.Now().UnixNano()) // streams that break from now on are recorded
	kill, renamedAt, err := askKill(kr.Replica, renamed.id.Load(), marker)
	if err != nil {
		kr.Error = err.Error()
		log.Printf("kill: %v", err)
		return kr
	}
	kr.RenameMS = float64(renamedAt-kill) / 1e6
	deadline := time.Unix(0, kill).Add(*flagEventTO)
	for time.Now().Before(deadline) {
		if countKillSeen(dead) == len(dead) && countKillSeen(others) == len(others) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	db, dm := sumTraffic(dead)
	ob, om := sumTraffic(others)
	kr.DeadBytes, kr.DeadMsgs, kr.OthersBytes, kr.OthersMsgs = db-db0, dm-dm0, ob-ob0, om-om0
	var last int64
	for _, n := range dead {
		if b := n.rsBack.Load(); b != 0 {
			kr.Back++
			kr.BackMS = append(kr.BackMS, float64(b-kill)/1e6)
		}
		if b := n.rsBreak.Load(); b != 0 {
			kr.BreakMS = append(kr.BreakMS, float64(max(0, b-kill))/1e6)
		}
		if s := n.killSeen.Load(); s != 0 {
			kr.Current++
			kr.CurrentMS = append(kr.CurrentMS, float64(s-kill)/1e6)
			last = max(last, s)
		}
	}
	for _, n := range others {
		if s := n.killSeen.Load(); s != 0 {
			kr.OthersCurrent++
			kr.OthersMS = append(kr.OthersMS, float64(s-kill)/1e6)
		}
	}
	if kr.Current == kr.Nodes {
		kr.AllCurrentS = float64(last-kill) / 1e9
	}
	inDead := map[*node]bool{}
	for _, n := range dead {
		inDead[n] = true
	}
	kr.Errors = countErrs(func(n *node) string {
		if !inDead[n] {
			return ""
		}
		return strOf(&n.rsErr)
	})
	for _, v := range [][]float64{kr.BackMS, kr.CurrentMS, kr.BreakMS, kr.OthersMS} {
		sort.Float64s(v)
	}
	log.Printf("kill: replica %d: %d/%d nodes back, %d/%d current (all in %.2fs); others %d/%d current",
		kr.Replica, kr.Back, kr.Nodes, kr.Current, kr.Nodes, kr.AllCurrentS, kr.OthersCurrent, kr.Others)
	return kr
}

// sumTraffic: the map bytes and messages ns have read so far.
func sumTraffic(ns []*node) (bytes, msgs int64) {
	for _, n := range ns {
		bytes += n.mapBytes.Load()
		msgs += n.mapMsgs.Load()
	}
	return bytes, msgs
}

func countKillSeen(ns []*node) int {
	c := 0
	for _, n := range ns {
		if n.killSeen.Load() != 0 {
			c++
		}
	}
	return c
}
