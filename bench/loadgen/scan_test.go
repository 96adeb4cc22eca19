package main

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// countKeys agrees with bytes.Count on maps and on text made to trip it: tags at both ends,
// back to back, cut short, and 'y's everywhere else.
func TestCountKeysIsCount(t *testing.T) {
	cases := []string{
		"", "y", `"Key":"nodekey`, `"Key":"nodekey:`, `"Key":"nodekey:"Key":"nodekey:`,
		`{"Peers":[` + peer2 + "," + peer3 + `],"Node":` + self1 + "}",
		`yyy"Key":"nodekey:yy"Key":"nodekey:y`, `"DiscoKey":"discokey:01","Key":"mkey:1"`,
	}
	parts := []string{`"Key":"nodekey:`, "y", "yy", `"`, "Key", "nodekey:", "abc", `":"`}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		var b bytes.Buffer
		for j := r.IntN(12); j > 0; j-- {
			b.WriteString(parts[r.IntN(len(parts))])
		}
		cases = append(cases, b.String())
	}
	for _, c := range cases {
		if got, want := countKeys([]byte(c)), bytes.Count([]byte(c), keyTag); got != want {
			t.Fatalf("countKeys(%q) = %d, bytes.Count says %d", c, got, want)
		}
	}
}
