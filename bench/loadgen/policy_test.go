package main

import (
	"strings"
	"testing"
)

const ruleA = `[{"SrcIPs":["100.64.0.1/32"],"DstPorts":[{"IP":"100.64.0.2/32","Ports":{"First":22,"Last":22}}]}]`
const ruleB = `[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}]`

func TestHashJSONIgnoresLayoutNotStrings(t *testing.T) {
	if hashJSON([]byte(`[ {"a" : "x y"} ]`)) != hashJSON([]byte(`[{"a":"x y"}]`)) {
		t.Fatal("whitespace outside strings changed the hash")
	}
	if hashJSON([]byte(`["x y"]`)) == hashJSON([]byte(`["xy"]`)) {
		t.Fatal("whitespace inside a string was ignored")
	}
	if hashJSON([]byte(`["a\" b"]`)) == hashJSON([]byte(`["a\"b"]`)) {
		t.Fatal("an escaped quote ended the string")
	}
}

func TestFilterTrackFollowsTheClient(t *testing.T) {
	var f filterTrack
	if c, _ := f.update([]byte(`{"Node":{"ID":1},"Peers":[]}`)); c || f.hash.Load() != 0 {
		t.Fatal("a message without a filter set one")
	}
	// PacketFilter is the chunk "base": the same rules as PacketFilters {"base": ...}
	f.update([]byte(`{"Peers":[{"ID":2}],"PacketFilter":` + ruleA + `,"DNSConfig":{}}`))
	a := f.hash.Load()
	var g filterTrack
	g.update([]byte(`{"PacketFilters": {"base": ` + ruleA + `}}`))
	if a == 0 || g.hash.Load() != a {
		t.Fatalf("PacketFilter %x vs PacketFilters base %x", a, g.hash.Load())
	}
	// null leaves it alone; a new filter changes it; the old one comes back to the old hash
	if c, _ := f.update([]byte(`{"PacketFilter":null}`)); c || f.hash.Load() != a {
		t.Fatal("null PacketFilter changed the filter")
	}
	f.update([]byte(`{"PacketFilter":` + ruleB + `}`))
	if f.hash.Load() == a {
		t.Fatal("a new filter left the hash")
	}
	f.update([]byte(`{"PacketFilter": ` + ruleA + ` }`))
	if f.hash.Load() != a {
		t.Fatal("the old filter did not hash as before")
	}
	// named chunks: added, deleted with null, all dropped with "*": null
	f.update([]byte(`{"PacketFilters":{"extra":` + ruleB + `}}`))
	withExtra := f.hash.Load()
	if withExtra == a {
		t.Fatal("an added chunk left the hash")
	}
	f.update([]byte(`{"PacketFilters":{"extra":null}}`))
	if f.hash.Load() != a {
		t.Fatal("deleting the chunk did not bring the old filter back")
	}
	f.update([]byte(`{"PacketFilters":{"*":null,"base":` + ruleB + `}}`))
	var h filterTrack
	h.update([]byte(`{"PacketFilter":` + ruleB + `}`))
	if f.hash.Load() != h.hash.Load() {
		t.Fatal(`"*": null did not drop the chunks before the new ones`)
	}
	// an empty filter (block everything) is a filter
	var e filterTrack
	if c, size := e.update([]byte(`{"PacketFilter":[]}`)); !c || size != 2 || e.hash.Load() == 0 {
		t.Fatal("an empty PacketFilter was not taken")
	}
}

func TestFieldValueAndCount(t *testing.T) {
	js := []byte(`{"PeersChanged":[{"Name":"a,b]"}],"PeersRemoved": [4, 5,6],"PacketFilters":{"base":[]}}`)
	v, ok := fieldValue(js, tagPeersRemoved)
	if !ok || string(v) != "[4, 5,6]" || countArray(v) != 3 {
		t.Fatalf("PeersRemoved %q %v", v, ok)
	}
	if v, ok := fieldValue([]byte(`{"PeersRemoved":[ ]}`), tagPeersRemoved); !ok || countArray(v) != 0 {
		t.Fatal("empty PeersRemoved")
	}
	if _, ok := fieldValue(js, tagPacketFilter); ok {
		t.Fatal(`"PacketFilter" matched "PacketFilters"`)
	}
	if v, ok := fieldValue(js, tagPacketFilters); !ok || string(v) != `{"base":[]}` {
		t.Fatalf("PacketFilters %q", v)
	}
	if _, ok := fieldValue([]byte(`{"PacketFilter":[{"SrcIPs":["1`), tagPacketFilter); ok {
		t.Fatal("a value cut short was taken")
	}
	// big messages: found in the tail, and before it
	pad := `"Peers":[` + strings.Repeat(`{"ID":1,"Name":"x"},`, 3*tailScan/20) + `{"ID":2}]`
	for _, msg := range []string{
		`{` + pad + `,"PacketFilter":` + ruleA + `}`,
		`{"PacketFilter":` + ruleA + `,` + pad + `}`,
	} {
		if v, ok := fieldValue([]byte(msg), tagPacketFilter); !ok || string(v) != ruleA {
			t.Fatalf("big message (%d bytes): %v %.40q", len(msg), ok, v)
		}
	}
}
