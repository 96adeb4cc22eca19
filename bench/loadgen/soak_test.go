package main

import (
	"testing"
)

const (
	peer2 = `{"ID":2,"Key":"nodekey:02","DiscoKey":"discokey:02","Endpoints":["198.18.0.2:41641"],"HomeDERP":900,"Addresses":["100.64.0.2/32"],"Online":true,"LastSeen":"2026-12-04T02:00:00Z","Hostinfo":{"Hostname":"b"}}`
	peer3 = `{"ID":3,"Key":"nodekey:03","Endpoints":["198.18.0.3:41641"],"HomeDERP":900,"Addresses":["100.64.0.3/32"],"Online":true}`
	self1 = `{"ID":1,"Key":"nodekey:01","Addresses":["100.64.0.1/32"]}`
)

func follow(msgs ...string) (*soakView, uint64) {
	var v soakView
	var pf filterTrack
	for _, m := range msgs {
		v.apply([]byte(m), &pf)
	}
	return &v, pf.hash.Load()
}

func mustEqual(t *testing.T, held, fresh *soakView, hpf, fpf uint64) {
	t.Helper()
	if d := compareViews(held, fresh, hpf, fpf); !d.equal() || d.Online != 0 {
		t.Fatalf("views differ: %+v", d)
	}
}

func TestSoakViewFollowsDeltasLikeTheClient(t *testing.T) {
	held, hpf := follow(
		`{"Node":`+self1+`,"Peers":[`+peer2+`],"PacketFilter":[],"DNSConfig":{"Domains":["a"]}}`,
		`{"PeersChanged":[`+peer3+`]}`,
		`{"PeersChangedPatch":[{"NodeID":3,"Endpoints":["198.19.0.3:20000"],"DERPRegion":0,"LastSeen":"2026-12-04T02:10:00Z"}]}`,
		`{"OnlineChange":{"2":false}}`,
		`{"PeersRemoved":[2]}`,
		`{"PeersChanged":[`+peer2+`],"OnlineChange":{"2":false}}`,
		`{"PeersChangedPatch":[{"NodeID":2,"Online":true}]}`,
	)
	// the same state sent whole, in another layout and with other LastSeen times
	fresh, fpf := follow(`{"Peers":[
		{"ID":3,"Key":"nodekey:03","Endpoints":["198.19.0.3:20000"],"HomeDERP":900,"Addresses":["100.64.0.3/32"],"Online":true},
		{"ID":2,"Key":"nodekey:02","DiscoKey":"discokey:02","Endpoints":["198.18.0.2:41641"],"HomeDERP":900,"Addresses":["100.64.0.2/32"],"Online":true,"LastSeen":"2026-12-04T03:00:00Z","Hostinfo":{"Hostname":"b"}}],
		"Node":` + self1 + `,"PacketFilter":[],"DNSConfig":{"Domains":["a"]}}`)
	mustEqual(t, held, fresh, hpf, fpf)
	if held.fullMaps != 1 || held.deltas != 6 || len(held.odd) != 0 {
		t.Fatalf("full %d deltas %d oddities %v", held.fullMaps, held.deltas, held.odd)
	}
}

func TestSoakViewSeesWhatWasLost(t *testing.T) {
	full := `{"Node":` + self1 + `,"Peers":[` + peer2 + `,` + peer3 + `],"DNSConfig":{"Domains":["a"]}}`
	held, hpf := follow(full)
	// a lost endpoint patch, a lost removal, a lost DNS change
	fresh, fpf := follow(`{"Node":` + self1 + `,"Peers":[` + peer2 + `],"DNSConfig":{"Domains":["b"]}}`)
	d := compareViews(held, fresh, hpf, fpf)
	if len(d.Stale) != 1 || d.Stale[0] != 3 || len(d.Missing) != 0 {
		t.Fatalf("stale %v missing %v", d.Stale, d.Missing)
	}
	if len(d.Top) != 1 || d.Top[0] != "DNSConfig" {
		t.Fatalf("top %v", d.Top)
	}
	moved, _ := follow(full, `{"PeersChangedPatch":[{"NodeID":2,"Endpoints":["198.19.0.2:1"]}]}`)
	d = compareViews(held, moved, hpf, hpf)
	if d.Fields["Endpoints"] != 1 || len(d.Fields) != 1 {
		t.Fatalf("fields %v", d.Fields)
	}
	// Online is counted apart
	off, _ := follow(full, `{"PeersChangedPatch":[{"NodeID":2,"Online":false}]}`)
	if d = compareViews(held, off, hpf, hpf); !d.equal() || d.Online != 1 {
		t.Fatalf("online: %+v", d)
	}
}

func TestSoakViewEmptyPeersIsNotAFullMap(t *testing.T) {
	// the client treats "Peers":[] as no peer list at all: the deltas in it still apply
	held, _ := follow(`{"Node":`+self1+`,"Peers":[`+peer2+`]}`, `{"Peers":[],"PeersRemoved":[2]}`)
	if len(held.peers) != 0 || held.fullMaps != 1 {
		t.Fatalf("peers %v full maps %d", held.peers, held.fullMaps)
	}
	v, _ := follow(`{"PeersChangedPatch":[{"NodeID":9,"Endpoints":[]}]}`)
	if v.odd["PeersChangedPatch for a peer it does not have"] != 1 {
		t.Fatalf("oddities %v", v.odd)
	}
}
