package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRelayAndSummarize(t *testing.T) {
	const input = `# building
{"Action":"start","Package":"p"}
{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"run","Package":"p","Test":"TestB"}
{"Action":"output","Package":"p","Test":"TestB","Output":"=== RUN   TestB\n"}
{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:1: all is well\n"}
{"Action":"output","Package":"p","Test":"TestB/sub","Output":"    b_test.go:9: 2 requests failed\n"}
{"Action":"output","Package":"p","Test":"TestB/sub","Output":"--- FAIL: TestB/sub (1.00s)\n"}
{"Action":"fail","Package":"p","Test":"TestB/sub"}
{"Action":"output","Package":"p","Test":"TestA","Output":"--- PASS: TestA (2.00s)\n"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestB","Output":"--- FAIL: TestB (3.00s)\n"}
{"Action":"fail","Package":"p","Test":"TestB"}
{"Action":"output","Package":"p","Output":"FAIL\n"}
{"Action":"fail","Package":"p"}
`
	var out bytes.Buffer
	failed, err := relay(strings.NewReader(input), &out)
	if err != nil {
		t.Fatal(err)
	}
	summarize(&out, failed)
	relayed, summary, ok := strings.Cut(out.String(), "\n=== 3 failed")
	if !ok {
		t.Fatalf("no summary of 3 failures in:\n%s", out.String())
	}
	for _, want := range []string{"# building\n", "=== RUN   TestA\n", "    a_test.go:1: all is well\n", "--- FAIL: TestB (3.00s)\n", "FAIL\n"} {
		if !strings.Contains(relayed, want) {
			t.Errorf("the relayed output lacks %q:\n%s", want, relayed)
		}
	}
	wantSummary := " (tests and subtests); their output again:\n" +
		"--- TestB/sub\n    b_test.go:9: 2 requests failed\n" +
		"--- TestB\n" +
		"--- package p\nFAIL\n"
	if summary != wantSummary {
		t.Errorf("summary:\n%s\nwant:\n%s", summary, wantSummary)
	}
}

func TestSummarizeKeepsTheLastLines(t *testing.T) {
	var lines []string
	for i := range maxLinesPerTest + 5 {
		lines = append(lines, strings.Repeat("x", i))
	}
	var out bytes.Buffer
	summarize(&out, []failure{{name: "TestLong", lines: lines}})
	got := out.String()
	if !strings.Contains(got, "[5 earlier lines left out]") || !strings.Contains(got, lines[len(lines)-1]+"\n") || strings.Contains(got, "\n"+lines[4]+"\n") {
		t.Errorf("summary of a long output:\n%s", got)
	}
}
