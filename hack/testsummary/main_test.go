package main

import (
	"bytes"
	"fmt"
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
	relayed, summary := run(t, input)
	if !strings.HasPrefix(summary, "=== 3 failed") {
		t.Fatalf("no summary of 3 failures in:\n%s", summary)
	}
	for _, want := range []string{"# building\n", "=== RUN   TestA\n", "    a_test.go:1: all is well\n", "--- FAIL: TestB (3.00s)\n", "FAIL\n"} {
		if !strings.Contains(relayed, want) {
			t.Errorf("the relayed output lacks %q:\n%s", want, relayed)
		}
	}
	wantSummary := "=== 3 failed (tests and subtests); their output again:\n" +
		"--- TestB/sub\n    b_test.go:9: 2 requests failed\n" +
		"--- TestB\n" +
		"--- package p\nFAIL\n"
	if summary != wantSummary {
		t.Errorf("summary:\n%s\nwant:\n%s", summary, wantSummary)
	}
}

func TestSummarizeKeepsTheFirstAndLastLines(t *testing.T) {
	var lines []string
	for i := range headLines + tailLines + 5 {
		lines = append(lines, fmt.Sprintf("line %d", i))
	}
	var out bytes.Buffer
	summarize(&out, []failure{{name: "TestLong", lines: lines}})
	got := out.String()
	for _, want := range []string{"\nline 0\n", fmt.Sprintf("\nline %d\n", headLines-1), "[5 lines left out]", fmt.Sprintf("\nline %d\n", headLines+5), fmt.Sprintf("\nline %d\n", len(lines)-1)} {
		if !strings.Contains(got, want) {
			t.Errorf("the summary of a long output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, fmt.Sprintf("\nline %d\n", headLines)) {
		t.Errorf("the summary keeps line %d:\n%s", headLines, got)
	}
}

func TestUnfinishedTestsAreSummarized(t *testing.T) {
	// go test's timeout: a panic while TestSlow runs, and no event ends it.
	const input = `{"Action":"run","Package":"p","Test":"TestSlow"}
{"Action":"output","Package":"p","Test":"TestSlow","Output":"=== RUN   TestSlow\n"}
{"Action":"output","Package":"p","Test":"TestSlow","Output":"    slow_test.go:3: waiting for the cluster\n"}
{"Action":"output","Package":"p","Test":"TestSlow","Output":"panic: test timed out after 78m0s\n"}
{"Action":"output","Package":"p","Output":"FAIL\tp\t4680.001s\n"}
{"Action":"fail","Package":"p"}
`
	_, summary := run(t, input)
	want := "=== 2 failed (tests and subtests); their output again:\n--- package p\nFAIL\tp\t4680.001s\n--- TestSlow (did not finish)\n    slow_test.go:3: waiting for the cluster\npanic: test timed out after 78m0s\n"
	if summary != want {
		t.Errorf("summary:\n%s\nwant:\n%s", summary, want)
	}
}

// run relays input and summarizes it, and returns the two parts.
func run(t *testing.T, input string) (relayed, summary string) {
	t.Helper()
	var out bytes.Buffer
	failed, err := relay(strings.NewReader(input), &out)
	if err != nil {
		t.Fatal(err)
	}
	relayed = out.String()
	out.Reset()
	summarize(&out, failed)
	return relayed, strings.TrimPrefix(out.String(), "\n")
}
